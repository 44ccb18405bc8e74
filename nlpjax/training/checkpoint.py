"""Orbax checkpoints of the train state together with the data iterator position.

Each checkpoint step holds three items: ``state`` (TrainState arrays), ``data`` (the
grain iterator state, captured when the save is requested) and ``meta`` (the model
signature, used to refuse restoring into a different model). Saves are asynchronous.

A damaged newest checkpoint (files missing or truncated) is reported in one line and the
previous good one is used; a training run also moves the damaged step aside to
``<step>.damaged`` so that it can save that step again. The orbax/TensorStore error text
(a spec dump per unreadable array) is kept from the user.
"""

import asyncio
import logging
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from nlpjax.config import CheckpointConfig, build_section
from nlpjax.errors import CheckpointMismatchError, ConfigError

log = logging.getLogger(__name__)


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


def comparable_signature(saved: dict, model_cls: type) -> dict:
    """A saved signature in today's form: the model section rebuilt through its config
    class (fields added since take their defaults; runtime fields such as the compute
    dtype drop out), or as saved when it no longer builds (the diff then names why)."""
    try:
        model = build_section(model_cls, saved["model"], "model")
    except (ConfigError, KeyError, TypeError):
        return saved
    return {"task": saved["task"], "model": model.signature()}


DAMAGED_SUFFIX = ".damaged"


def short_error(e: BaseException, limit: int = 160) -> str:
    """First line of an exception, without TensorStore's spec dump, at most ``limit`` chars."""
    text = str(e).split("See full TensorStore details")[0].strip().splitlines()
    text = text[0].rstrip(" .") if text else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_closed_loop_error(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)


def _is_read_failure_echo(exc: BaseException | None) -> bool:
    """An exception from the reads of a failed restore, raised after orbax gave up on it."""
    return _is_closed_loop_error(exc) or "TensorStore" in str(exc) or "OCDBT" in str(exc)


class _DropReadFailureEchoes(logging.Filter):
    """Drops asyncio's reports about the abandoned reads of a failed restore."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "never retrieved" not in message and "destroyed but it is pending" not in message:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (_is_read_failure_echo(exc) or "orbax" in message)


_echoes_silenced = False


def _silence_read_failure_echoes() -> None:
    """Keeps the leftovers of a failed restore off the terminal, process-wide, once.

    When orbax gives up on a damaged checkpoint, the other array reads of that restore
    are still in flight; they finish later on TensorStore threads and report through
    ``sys.excepthook`` ("Event loop is closed"), ``sys.unraisablehook`` (coroutines never
    awaited) and the ``asyncio`` logger (exceptions never retrieved), each with a
    TensorStore spec dump of ~60 lines. Those reports, and only those, are dropped.
    """
    global _echoes_silenced
    if _echoes_silenced:
        return
    _echoes_silenced = True
    previous_excepthook, previous_unraisablehook = sys.excepthook, sys.unraisablehook

    def excepthook(kind, value, tb):  # only the closed-loop callbacks, never a real crash
        if not _is_closed_loop_error(value):
            previous_excepthook(kind, value, tb)

    def unraisablehook(unraisable):  # abandoned read coroutines and their callbacks
        abandoned = asyncio.iscoroutine(unraisable.object) or unraisable.object is None
        if not (abandoned and _is_read_failure_echo(unraisable.exc_value)):
            previous_unraisablehook(unraisable)

    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
    logging.getLogger(asyncio.log.logger.name).addFilter(_DropReadFailureEchoes())


class Checkpointer:
    """CheckpointManager wrapper: save/restore (state, data position, signature)."""

    def __init__(self, directory: epath.PathLike, cfg: CheckpointConfig):
        path = epath.Path(directory)
        self.directory = path if "://" in str(path) else path.absolute()  # local or gs://
        self._created = not self.directory.exists()  # the manager below creates it
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

    def restore(
        self, abstract_state: Any, step: int | None = None, move_damaged: bool = False
    ) -> tuple[int, Any, dict]:
        """Restores (step, state, data_state) from ``step`` or the newest readable one.

        Unreadable steps newer than the restored one are reported in one line each; with
        ``move_damaged`` (training runs) they are renamed to ``<step>.damaged`` (process 0
        renames, every process then rereads the step list), so the run can save those
        steps again. Nothing is moved when no step is readable.
        """
        steps = [step] if step is not None else self.all_steps()[::-1]
        damaged = []
        for s in steps:
            try:
                restored = self._manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as e:  # a damaged or partial checkpoint: try the previous one
                _silence_read_failure_echoes()
                damaged.append((s, short_error(e)))
                continue
            self._report_damaged(damaged, s, move_damaged)
            return s, restored["state"], restored["data"]
        raise FileNotFoundError(
            f"no readable checkpoint in {self.directory} ("
            + "; ".join(f"step {s}: {why}" for s, why in damaged)
            + "); nothing was moved or deleted: fix or remove the damaged steps, or use a "
            "new --workdir"
        )

    def _report_damaged(self, damaged: list[tuple[int, str]], good: int, move: bool) -> None:
        if not damaged:
            return
        if move and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("nlpjax_checkpoint_restored")
        for s, why in damaged:
            if not move:
                log.warning("checkpoint step %d is damaged (%s); using step %d", s, why, good)
                continue
            target = self.directory / f"{s}{DAMAGED_SUFFIX}"
            if jax.process_index() == 0:
                n = 1
                while target.exists():
                    n += 1
                    target = self.directory / f"{s}{DAMAGED_SUFFIX}-{n}"
                (self.directory / str(s)).rename(target)
            log.warning(
                "checkpoint step %d is damaged (%s); moved it to %s and resumed from step %d",
                s,
                why,
                target,
                good,
            )
        if move:
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("nlpjax_damaged_moved")
            self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def close_unused(self) -> None:
        """``close``, then removes the directory if this checkpointer created it and
        nothing was saved in it (process 0): a refused run leaves no trace."""
        self.close()
        if self._created and jax.process_index() == 0 and not any(self.directory.iterdir()):
            self.directory.rmdir()
