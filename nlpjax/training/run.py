"""Assembling a run: a task, its optimizer and its initial (or restored) state.

``build_run`` is shared by training (``loop``), memory planning (``plan``) and the
faces that evaluate or sample a trained workdir (``nlpjax.api``, the CLI). It receives
the task class; it never looks a task up by name (the faces do, in ``nlpjax.TASKS``).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from nlpjax.config import Config, ParallelConfig, from_json
from nlpjax.tasks.base import check_carry
from nlpjax.training import parallel
from nlpjax.training.checkpoint import Checkpointer
from nlpjax.training.optim import make_tx
from nlpjax.training.resume import CONFIG_FILE
from nlpjax.training.state import TrainState, count_params, seed_key

CHECKPOINT_DIR = "checkpoints"


@dataclass
class Run:
    """A task with its optimizer and initial state, ready to train, evaluate or sample.

    ``state`` is laid out for ``placement`` (sharded over the mesh in jit mode; a single
    logical copy in pmap mode, replicated by the loop). ``abstract_state`` carries the
    target shardings for restoring a checkpoint onto this layout. ``schedule`` is the
    learning-rate schedule the optimizer ``tx`` follows (built once, logged as ``lr``).
    """

    config: Config
    task: Any
    tx: Any
    schedule: Any
    state: TrainState
    abstract_state: Any
    placement: parallel.Placement
    num_params: int

    @property
    def state_shardings(self) -> Any:
        """The shardings of the logical state on ``placement`` (passed to compile)."""
        return parallel.shardings_of(self.abstract_state)


def build_run(
    config: Config,
    workdir: str | epath.PathLike | None,
    placement: parallel.Placement | None = None,
    *,
    task_cls: type,
    before_init: Callable[[Run], None] | None = None,
) -> Run:
    """Task (tokenizer from the workdir if present), optimizer and initial state.

    ``task_cls`` is the class registered under ``config.task``. ``placement`` defaults to
    a single device (what eval and generate use). ``before_init(run)``, when given, is
    called with the run before its state exists (``run.state`` is None; the abstract
    state is set): the training loop starts compiling its step there, while the state is
    initialised.
    """
    task = task_cls(config, workdir)
    config = task.config
    tx, schedule = task_optimizer(task)
    if placement is None:
        placement = parallel.build_placement(ParallelConfig(devices=1, mesh="data:1"))

    init_fn, abstract_state = abstract_train_state(task, tx, config.seed, placement)
    num_params = count_params(abstract_state.params)
    run = Run(config, task, tx, schedule, None, abstract_state, placement, num_params)
    if before_init is not None:
        before_init(run)
    with placement.context():
        if getattr(task, "host_init", None) is None:
            out = parallel.shardings_of(abstract_state)
            run.state = jax.jit(init_fn, out_shardings=out)()
        else:  # made on the host and placed: no program to compile before the first step
            run.state = place_host_state(task, host_state(task, tx, config.seed), abstract_state)
    return run


def _train_state(task, tx, params, rng, zeros) -> TrainState:
    """The initial state around ``params`` (boxed as the task makes them): step 0 (from
    ``zeros``: jnp's in the jitted init, numpy's on the host), ``tx.init`` of the params,
    ``rng`` and the task's carry. The one assembly of both initialisations."""
    return TrainState(
        step=zeros((), np.int32),
        params=params,
        opt_state=tx.init(params),
        rng=rng,
        carry=task.init_carry(),
    )


def host_state(task, tx, seed: int) -> TrainState:
    """The initial state of a task with ``host_init``, made on the host (unboxed): its
    params, ``tx.init`` of them, step 0, the key ``fold_in(PRNGKey(seed), 1)`` and the
    carry; bitwise what the jitted init makes (test: tests/test_sgns_task.py). The task's
    ``tx.init`` and ``init_carry`` should make numpy arrays too: an eager jax op compiles
    a program."""
    state = _train_state(task, tx, task.host_init(seed), seed_key(seed, 1), np.zeros)
    return nn.meta.unbox(state)


def place_host_state(task, state: TrainState, abstract_state) -> TrainState:
    """``state`` (host arrays) placed with ``abstract_state``'s shardings; a leaf of
    another shape or dtype than ``init``'s is a ``ValueError`` naming its path."""

    def place(path, value, target):
        value = np.asarray(value)
        if value.shape != target.shape or value.dtype != target.dtype:
            name = jax.tree_util.keystr(path).lstrip(".")
            raise ValueError(
                f"{type(task).__name__}'s state made on the host (host_init, the "
                f"optimizer's init, init_carry) has {name} as {value.dtype}"
                f"{list(value.shape)}; its init gives {target.dtype}{list(target.shape)}"
            )
        return jax.make_array_from_callback(value.shape, target.sharding, lambda i: value[i])

    return jax.tree_util.tree_map_with_path(place, state, abstract_state)


def task_optimizer(task) -> tuple[Any, Any]:
    """(tx, schedule): the task's ``make_optimizer`` hook, else ``optim.make_tx``."""
    hook = getattr(task, "make_optimizer", None)
    if hook is not None:
        return hook(task.config)
    config = task.config
    return make_tx(config.optim, config.train.steps, task.compute_dtype())


def abstract_train_state(task, tx, seed: int, placement: parallel.Placement):
    """(init function, abstract TrainState with target shardings) without allocating.

    ``init()`` gives the initial state (to jit): the task's ``init`` from ``seed``. The
    key is made inside it (an eager ``PRNGKey`` would compile a program of its own). The
    carry is checked against the carry contract (``tasks.base.check_carry``): its leaves
    are laid out like the batch.
    """

    def init_boxed():  # task.init's params keep their logical-axis boxes (tx.init's mirror them)
        rng = jax.random.PRNGKey(seed)
        params = task.init(rng)["params"]
        return _train_state(task, tx, params, jax.random.fold_in(rng, 1), jnp.zeros)

    abstract_boxed = jax.eval_shape(init_boxed)
    check_carry(abstract_boxed.carry, task.global_batch_size())
    abstract = nn.meta.unbox(abstract_boxed)
    shardings = parallel.state_shardings(placement, nn.get_partition_spec(abstract_boxed), abstract)
    abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return (lambda: nn.meta.unbox(init_boxed())), abstract_state


def load_workdir_config(workdir: str | epath.PathLike, tasks: Mapping[str, type]) -> Config:
    """The config a workdir trained with (``config.json``), resolved with ``tasks``."""
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training workdir (run `nlpjax train` first)"
        )
    return from_json(path.read_text(), tasks)


def restore_trained(
    workdir: str | epath.PathLike, tasks: Mapping[str, type], step: int | None = None
) -> tuple[Run, int]:
    """Rebuilds the run saved in ``workdir`` on one device and restores checkpoint
    ``step`` (None: the latest readable one). Returns (run, restored step)."""
    config = load_workdir_config(workdir, tasks)
    directory = epath.Path(workdir) / CHECKPOINT_DIR
    ckpt = Checkpointer(directory, config.checkpoint)
    try:
        kept = ckpt.all_steps()
        if step is None and not kept:
            raise FileNotFoundError(
                f"no checkpoint in {directory}: train first "
                f"(nlpjax train --config=... --workdir={workdir})"
            )
        if step is not None and step not in kept:
            listed = ", ".join(map(str, kept)) or "none"
            raise FileNotFoundError(
                f"--step={step}: no checkpoint for step {step} in {directory}; kept steps: {listed}"
            )
        run = build_run(config, workdir, task_cls=tasks[config.task])
        restored, run.state, _ = ckpt.restore(run.abstract_state, step)
    finally:
        ckpt.close()
    return run, restored
