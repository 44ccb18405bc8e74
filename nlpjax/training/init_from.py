"""``train.init_from=WORKDIR[:STEP]``: start a new run from another run's parameters.

Finetuning (e.g. pause-finetuning a pretrained decoder) starts from the parameters of a
checkpoint in another workdir; only the parameters are read (the optimizer state, step,
RNG and data position start fresh). The checkpoint must belong to the same model (its
saved signature equals this run's) and, for tasks with a tokenizer, to the same
vocabulary; anything else is refused before the new workdir is written to.
"""

import dataclasses
import logging

import jax
import orbax.checkpoint as ocp
from etils import epath

from nlpjax.data.tokenizers import fingerprint, load_tokenizer
from nlpjax.errors import CheckpointMismatchError
from nlpjax.training.checkpoint import comparable_signature, describe_mismatch
from nlpjax.training.run import CHECKPOINT_DIR, Run
from nlpjax.training.state import TrainState

TOKENIZER_FILE = "tokenizer.json"


@dataclasses.dataclass(frozen=True)
class InitSource:
    """A parsed ``train.init_from``: the workdir and the step (None: its latest)."""

    workdir: epath.Path
    step: int | None


def parse(spec: str) -> InitSource:
    """``"DIR"`` or ``"DIR:STEP"`` -> ``InitSource`` (a tail that is no number is part of
    the path, as in ``gs://bucket/run``)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and head:
        return InitSource(epath.Path(head), int(tail))
    return InitSource(epath.Path(spec), None)


def _pick_step(source: InitSource, steps: list[int], spec: str) -> int:
    directory = source.workdir / CHECKPOINT_DIR
    if not steps:
        raise FileNotFoundError(
            f"train.init_from={spec}: no checkpoint in {directory}; train that run first, "
            "or point train.init_from at a workdir with checkpoints"
        )
    if source.step is None:
        return steps[-1]
    if source.step not in steps:
        kept = ", ".join(map(str, steps))
        raise FileNotFoundError(
            f"train.init_from={spec}: no checkpoint for step {source.step} in {directory}; "
            f"kept steps: {kept}"
        )
    return source.step


def _check_vocabulary(run: Run, source: InitSource, spec: str) -> None:
    tokenizer = getattr(run.task, "tokenizer", None)
    path = source.workdir / TOKENIZER_FILE
    if tokenizer is None or not path.is_file():
        return
    saved = load_tokenizer(path)
    if fingerprint(saved) != fingerprint(tokenizer):
        raise CheckpointMismatchError(
            f"train.init_from={spec}: {path} ({saved.kind}, {saved.vocab_size} tokens) is "
            f"another vocabulary than this run's ({tokenizer.kind}, {tokenizer.vocab_size} "
            "tokens); use the same data.tokenizer (a byte tokenizer is the same for every "
            "corpus), or start from scratch without train.init_from"
        )


def _read_only_manager(directory: epath.Path) -> ocp.CheckpointManager:
    """A manager that never writes to ``directory`` (orbax's two warnings that say so,
    once per run, are not shown: reading only is the point)."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        options = ocp.CheckpointManagerOptions(create=False, read_only=True)
        return ocp.CheckpointManager(directory.absolute(), options=options)
    finally:
        absl.setLevel(level)


def read_params(run: Run, spec: str) -> tuple[object, int]:
    """(parameters laid out like ``run.state.params``, the step they were read from).

    Raises ``FileNotFoundError`` for a missing workdir or step and
    ``CheckpointMismatchError`` for another model or vocabulary, naming ``spec``.
    """
    source = parse(spec)
    directory = source.workdir / CHECKPOINT_DIR
    if not directory.is_dir():
        raise FileNotFoundError(
            f"train.init_from={spec}: {directory} does not exist; give the workdir of a "
            "trained run (WORKDIR or WORKDIR:STEP)"
        )
    manager = _read_only_manager(directory)
    try:
        step = _pick_step(source, sorted(manager.all_steps()), spec)
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        saved = comparable_signature(meta["meta"], run.task.model_config_cls)
        diffs = describe_mismatch(saved, run.task.model_signature())
        if diffs:
            raise CheckpointMismatchError(
                f"train.init_from={spec}: checkpoint {step} belongs to a different model "
                f"({'; '.join(diffs)}); use the model section of "
                f"{source.workdir / 'config.json'}"
            )
        _check_vocabulary(run, source, spec)
        abstract = {"params": run.abstract_state.params}
        restore_args = jax.tree_util.tree_map(
            lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype), abstract
        )
        state_args = ocp.args.PyTreeRestore(abstract, restore_args, partial_restore=True)
        restored = manager.restore(step, args=ocp.args.Composite(state=state_args))
    finally:
        manager.close()
    return restored["state"]["params"], step


def initialise(run: Run, spec: str) -> tuple[TrainState, int]:
    """``run.state`` with the parameters of ``spec`` and a fresh optimizer state for them."""
    params, step = read_params(run, spec)
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, run.abstract_state.opt_state)
    with run.placement.context():
        opt_state = jax.jit(run.tx.init, out_shardings=shardings)(params)
    return run.state.replace(params=params, opt_state=opt_state), step
