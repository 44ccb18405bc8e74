"""Orbax checkpoints of the train state together with the data iterator position.

Each checkpoint step holds three items: ``state`` (TrainState arrays), ``data`` (the
grain iterator state, captured when the save is requested) and ``meta`` (the model
signature, used to refuse restoring into a different model). Saves are asynchronous;
a damaged latest checkpoint is reported and the previous good one is used.
"""

import logging
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

from nlpjax.config import CheckpointConfig

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The checkpoint in a workdir belongs to a different model or task."""


def describe_mismatch(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested signature dicts."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(describe_mismatch(a, b, f"{prefix}{key}."))
        elif a != b and not (isinstance(a, list | tuple) and list(a) == list(b)):
            diffs.append(f"{prefix}{key}: checkpoint has {a!r}, config has {b!r}")
    return diffs


def check_signature(saved: dict, current: dict, where: str) -> None:
    diffs = describe_mismatch(saved, current)
    if diffs:
        raise CheckpointMismatchError(
            f"{where} belongs to a different model:\n  "
            + "\n  ".join(diffs)
            + "\nUse a new --workdir, or run with the config that wrote this checkpoint."
        )


class Checkpointer:
    """CheckpointManager wrapper: save/restore (state, data position, signature)."""

    def __init__(self, directory: epath.PathLike, cfg: CheckpointConfig):
        path = epath.Path(directory)
        self.directory = path if "://" in str(path) else path.absolute()  # local or gs://
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.max_to_keep,
            enable_async_checkpointing=cfg.async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict, signature: dict) -> None:
        """Starts an (async) save; ``data_state`` is a snapshot taken now."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(signature),
        )
        self._manager.save(step, args=args, force=True)

    def read_signature(self, step: int) -> dict:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restores (step, state, data_state) from ``step`` or the newest readable one."""
        steps = [step] if step is not None else self.all_steps()[::-1]
        errors = []
        for s in steps:
            try:
                restored = self._manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                    ),
                )
                if errors:
                    log.warning("restored the previous good checkpoint, step %d", s)
                return s, restored["state"], restored["data"]
            except Exception as e:  # a damaged or partial checkpoint: try the previous one
                log.warning("checkpoint at step %d is unreadable: %s", s, e)
                errors.append(f"step {s}: {e}")
        raise FileNotFoundError(
            f"no readable checkpoint in {self.directory}" + ("".join(f"\n  {e}" for e in errors))
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
