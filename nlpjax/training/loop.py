"""``train_and_evaluate(config, workdir)``: the one training loop, for every task.

The loop knows a model family only through the Task interface. It resumes from the
latest checkpoint in ``workdir`` (state, RNG and data position), runs
``train.steps_per_dispatch`` steps per jitted call, reads metrics one dispatch late so
the host never stalls the device, evaluates and checkpoints on schedule, saves and
exits cleanly on SIGTERM/SIGINT, and stops with an error on a non-finite loss without
overwriting the last good checkpoint. Process 0 holds the workdir's lock for the whole run
(``workdir_lock``); a resume checks the config against the saved one (``resume``).
"""

import json
import logging
import math
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from nlpjax.config import Config
from nlpjax.data.pipeline import stack_batches
from nlpjax.errors import TrainingDiverged
from nlpjax.training import init_from, parallel, resume
from nlpjax.training import metrics as metrics_lib
from nlpjax.training.ahead import AheadCompiled
from nlpjax.training.checkpoint import Checkpointer, check_signature, comparable_signature
from nlpjax.training.evaluation import Evaluation
from nlpjax.training.run import CHECKPOINT_DIR, Run, build_run
from nlpjax.training.step import (
    check_microbatches,
    make_train_step,
    scan_masked_steps,
    scan_steps,
)
from nlpjax.training.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)
CONFIG_FILE = resume.CONFIG_FILE


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between dispatches.

    A second signal of the same kind gets the default behaviour (hard stop).
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, _frame):
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _check_workdir(workdir: epath.Path, run: Run, ckpt: Checkpointer) -> None:
    """Refuses a workdir whose config or checkpoint belongs to another model."""
    signature = run.task.model_signature()
    model_cls = run.task.model_config_cls
    config_path = workdir / CONFIG_FILE
    if config_path.is_file():
        saved = json.loads(config_path.read_text())
        saved = comparable_signature({"task": saved["task"], "model": saved["model"]}, model_cls)
        check_signature(saved, signature, str(workdir))
    for step in ckpt.all_steps()[::-1]:  # the newest step whose signature is readable
        try:
            saved_signature = ckpt.read_signature(step)
        except Exception:  # a damaged step: restore() reports it and moves it aside
            continue
        saved_signature = comparable_signature(saved_signature, model_cls)
        check_signature(saved_signature, signature, f"checkpoint {step} in {workdir}")
        break


class _TrainLog:
    """Reads dispatched metrics (one dispatch late), checks them, logs window means.

    ``train/*`` values logged at a step are means over the steps since the previous
    log (after a resume, since the resume); ``train/lr`` is the value at the step.
    """

    def __init__(self, writer, cfg: Config, bar):
        self.writer, self.cfg, self.bar = writer, cfg, bar
        self.sums: dict[str, float] = {}
        self.count = 0
        self.last_loss = float("nan")

    def flush(self, pending, last_good: int | None) -> None:
        metrics, first_step, rates = pending
        host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items() if k != "weight"}
        for i, loss in enumerate(host["loss"]):
            step = first_step + i + 1
            if not math.isfinite(float(loss)):
                kept = (
                    f"The last good checkpoint (step {last_good}) is kept"
                    if last_good is not None
                    else "No checkpoint was saved yet (the first comes at step "
                    f"{self.cfg.checkpoint.every})"
                )
                raise TrainingDiverged(
                    f"training loss is {float(loss)} at step {step}; stopped. {kept}. Lower "
                    "optim.lr, raise optim.warmup_steps or set optim.clip_norm, then "
                    + ("resume." if last_good is not None else "start again.")
                )
            for k, v in host.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v[i])
            self.count += 1
            if step % self.cfg.train.log_every == 0 or step == self.cfg.train.steps:
                row = {f"train/{k}": v / self.count for k, v in self.sums.items()}
                row["train/lr"] = float(host["lr"][i])
                row.update(rates or {})
                self.writer.write(step, row)
                self.sums, self.count = {}, 0
        self.last_loss = float(host["loss"][-1])
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)


def _shape_of(batch: dict) -> tuple:
    return tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))


def equal_shape_runs(batches: list[dict]) -> list[list[dict]]:
    """Consecutive batches grouped into maximal runs of equal shapes, in order."""
    runs: list[list[dict]] = []
    for batch in batches:
        if runs and _shape_of(runs[-1][-1]) == _shape_of(batch):
            runs[-1].append(batch)
        else:
            runs.append([batch])
    return runs


class _Programs:
    """The jitted training programs of a run: ``multi_step(state, batches)`` (scanned
    steps) and ``masked_step(state, batches, active)`` (for batches of varying shapes).

    Built before the state is initialised (``build_run``'s ``before_init``): when the task
    announces its batch shape (the optional ``batch_spec`` hook) and the mode is jit,
    ``multi_step`` for a full dispatch (``train.steps_per_dispatch`` steps, or
    ``train.steps`` when fewer) compiles in a background thread
    (``ahead.AheadCompiled``) while the host initialises, reads the data and opens the
    writers.
    """

    def __init__(self, run: Run):
        cfg, task, placement = run.config, run.task, run.placement
        axis = "batch" if placement.mode == "pmap" else None
        train_step = make_train_step(
            task, run.tx, run.schedule, axis_name=axis, microbatches=cfg.train.microbatches
        )
        options = parallel.compiler_options(cfg.train.xla_options)
        self.multi_step = parallel.compile_steps(
            placement,
            scan_steps(train_step),
            run.state_shardings,
            "batch",
            compiler_options=options,
        )
        # Batches of varying shapes (length buckets): once a second shape is seen, every
        # dispatch scans train.steps_per_dispatch steps, padded with inactive ones, so
        # each shape compiles once.
        self.masked_step = parallel.compile_steps(
            placement,
            scan_masked_steps(train_step),
            run.state_shardings,
            "batch",
            masked=True,
            compiler_options=options,
        )
        self.ahead = None  # the AheadCompiled multi_step, when one was started
        spec = getattr(task, "batch_spec", None)
        if spec is not None and placement.mode == "jit":
            k = min(cfg.train.steps_per_dispatch, cfg.train.steps)  # the first dispatch
            batches = {
                name: jax.ShapeDtypeStruct(
                    (k, *s.shape), s.dtype, sharding=parallel.batch_sharding(placement, s.ndim + 1)
                )
                for name, s in spec().items()
            }

            self.multi_step = self.ahead = AheadCompiled(
                self.multi_step,
                (run.abstract_state, batches),
                context=placement.context,  # the mesh and axis rules are per thread
            )

    def wait(self) -> None:
        """Waits for a background compilation, if one was started."""
        if self.ahead is not None:
            self.ahead.wait()

    def wait_lowered(self) -> None:
        """Waits for a background compilation's tracing and lowering, if one was started."""
        if self.ahead is not None:
            self.ahead.wait_lowered()


class _Loop:
    """The body of one training run: dispatch, log, evaluate, checkpoint."""

    def __init__(self, run: Run, programs: _Programs, ckpt: Checkpointer, data_it, writer, bar):
        self.run, self.ckpt, self.data_it, self.writer, self.bar = run, ckpt, data_it, writer, bar
        cfg, task, placement = run.config, run.task, run.placement
        self.cfg, self.task, self.placement = cfg, task, placement
        self.state_shardings = run.state_shardings
        self.multi_step, self.masked_step = programs.multi_step, programs.masked_step
        self.first_shape, self.varying = None, False
        self.evaluation = Evaluation(task, placement, cfg.eval.seed)
        self.train_log = _TrainLog(writer, cfg, bar)
        self.signature = task.model_signature()
        self.throughput = metrics_lib.Throughput(
            task.tokens_per_batch(),
            task.flops_per_token(),
            placement.devices,
            cfg.train.peak_tflops,
            dtype=task.compute_dtype(),
        )

    def evaluate(self, state, step: int) -> dict:
        logical = parallel.logical_state(self.placement, state)
        ev = self.evaluation(logical.params, {"carry": logical.carry, "step": step})
        self.writer.write(step, {f"eval/{k}": v for k, v in ev.items()})
        self.bar.write(f"step {step}: " + ", ".join(f"eval/{k} {v:.4f}" for k, v in ev.items()))
        return {f"eval/{k}": v for k, v in ev.items()}

    def save(self, state, step: int, data_state: dict, last: bool) -> None:
        """Saves ``state`` at ``step`` with the data position ``data_state``. A copy is
        saved unless ``last`` (no dispatch follows): the next dispatch donates (reuses)
        the state's buffers while the asynchronous save may still be reading them."""
        logical = parallel.logical_state(self.placement, state)
        snapshot = logical if last else jax.tree_util.tree_map(jnp.copy, logical)
        self.ckpt.save(step, snapshot, data_state, self.signature)

    def dispatch(self, state, host: list[dict]):
        """Trains on the host batches in order; returns (state, metrics of each step)."""
        shapes = {_shape_of(b) for b in host}
        self.first_shape = self.first_shape or _shape_of(host[0])
        self.varying = self.varying or shapes != {self.first_shape}
        if not self.varying:
            with self.placement.context():
                state, metrics = self.multi_step(
                    state, parallel.put_batches(self.placement, stack_batches(host))
                )
            return state, parallel.metrics_of(self.placement, metrics)
        k, parts = self.cfg.train.steps_per_dispatch, []
        for run in equal_shape_runs(host):
            for i in range(0, len(run), k):
                chunk = run[i : i + k]
                active = np.arange(k) < len(chunk)
                padded = stack_batches(chunk + [chunk[0]] * (k - len(chunk)))
                with self.placement.context():
                    state, metrics = self.masked_step(
                        state, parallel.put_batches(self.placement, padded), active
                    )
                metrics = parallel.metrics_of(self.placement, metrics)
                m = len(chunk)
                parts.append(jax.tree_util.tree_map(lambda x, m=m: x[:m], metrics))
        metrics = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *parts)
        return state, metrics

    def read(self, step: int) -> list[dict]:
        """The host batches of the dispatch that starts at ``step`` (none at the end)."""
        k, total = self.cfg.train.steps_per_dispatch, self.cfg.train.steps
        return [next(self.data_it) for _ in range(min(k - step % k, total - step))]

    def train(self, state, start: int) -> tuple[Any, int, dict]:
        """Dispatches from ``start`` to ``train.steps``. Between checkpoints the next
        dispatch's batches are read while the device runs the current one; at a
        checkpoint step the save (with the data position of that step) comes first, so a
        failed read or a stop signal loses no trained step."""
        cfg, total = self.cfg, self.cfg.train.steps
        step, pending, last_good, summary = start, None, self.ckpt.latest_step(), {}
        state = parallel.place_state(self.placement, state, self.state_shardings)
        with StopRequest() as stop:
            host = self.read(step)
            while step < total:
                n = len(host)
                state, metrics = self.dispatch(state, host)
                if pending is not None:
                    self.train_log.flush(pending, last_good)
                step += n
                # Read once: a signal that arrives after this point (during the read-ahead
                # below, say) is acted on after the next dispatch, never half-way.
                stopping = bool(stop.signum)
                at_eval = step % cfg.eval.every == 0 or step == total
                at_ckpt = step % cfg.checkpoint.every == 0 or step == total or stopping
                if not at_ckpt:  # the host reads on while the device trains
                    host = self.read(step)
                self.bar.update(n)
                rates = self.throughput.tick(metrics, n, step % cfg.train.log_every == 0)
                pending = (metrics, step - n, rates)
                if at_eval or at_ckpt:
                    self.train_log.flush(pending, last_good)
                    pending = None
                if at_ckpt:  # before reading on (a failed read loses no step) and before
                    # the evaluation (the asynchronous save writes while it runs)
                    last = step == total or stopping
                    self.save(state, step, self.data_it.get_state(), last=last)
                    last_good = step
                if at_eval:
                    summary.update(self.evaluate(state, step))
                if at_ckpt and not stopping:  # read after the save
                    host = self.read(step)
                if stopping:
                    self.bar.write(f"Signal {stop.signum} received: saved step {step}, exiting.")
                    summary["stopped_by_signal"] = int(stop.signum)
                    break
            if pending is not None:
                self.train_log.flush(pending, last_good)
        summary["train_loss"] = self.train_log.last_loss
        return state, step, summary


def train_and_evaluate(config: Config, workdir: str | epath.PathLike, *, task_cls: type) -> dict:
    """Trains (or resumes) ``config`` in ``workdir`` with the task class ``task_cls``
    (registered under ``config.task``; the faces look it up); returns a summary dict.

    Raises ``WorkdirBusyError`` while another run holds ``workdir``, and
    ``CheckpointMismatchError`` (``ConfigChangeError``) before writing anything when the
    config cannot resume the workdir's checkpoint.
    """
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir, enabled=jax.process_index() == 0):
        return _train_locked(config, workdir, task_cls)


def _train_locked(config: Config, workdir: epath.Path, task_cls: type) -> dict:
    placement = parallel.build_placement(config.parallel)
    programs = []  # compiling while the state is initialised and the data read
    run = build_run(
        config,
        workdir,
        placement,
        task_cls=task_cls,
        before_init=lambda r: programs.append(_Programs(r)),
    )
    try:
        return _train_built(config, workdir, task_cls, placement, run, programs[0])
    finally:
        programs[0].wait()  # an early exit does not leave XLA compiling in a thread


def _train_built(config, workdir, task_cls, placement, run: Run, programs: "_Programs") -> dict:
    config, task = run.config, run.task
    parallel.check_batch(task.global_batch_size(), placement.data_parallel)
    check_microbatches(task.global_batch_size(), placement.data_parallel, config.train.microbatches)
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, config.checkpoint)
    try:
        _check_workdir(workdir, run, ckpt)
        resumed = ckpt.latest_step() is not None
        saved = resume.read_saved(workdir, {config.task: task_cls}) if resumed else None
        changes = {}
        if saved is not None:
            changes = resume.check_changes(saved, config, run.abstract_state.params, workdir)
        # The host's data set-up (Python-heavy: the vocabulary stream, say) waits for the
        # step's tracing, which holds the GIL on the way to the first dispatch, and then
        # overlaps XLA's compilation, which does not.
        programs.wait_lowered()
        data_it = task.train_iterator()
        state = run.state
        if not resumed and config.train.init_from:
            state, source_step = init_from.initialise(run, config.train.init_from)
            print(f"Parameters from step {source_step} of {config.train.init_from}")
        if resumed:
            step0, state, data_state = ckpt.restore(run.abstract_state, move_damaged=True)
            data_it.set_state(data_state)
            print(f"Resumed from step {step0} in {workdir}")
            _report_changes(saved, config, changes, step0, workdir)
    except BaseException:  # refused before anything was saved
        ckpt.close_unused()  # the workdir is left as it was found
        raise
    if not resumed and jax.process_index() == 0:
        task.save_assets(workdir)
    start = int(state.step)
    if jax.process_index() == 0 and (saved is None or changes):
        resume.record(workdir, config, start, saved)
    print(f"Model: {config.task}, {run.num_params:,} parameters; {_describe(placement)}")
    summary = {"start_step": start, "num_params": run.num_params}
    if start >= config.train.steps:
        print(f"Nothing to do: step {start} >= train.steps={config.train.steps}")
        ckpt.close()
        return summary | {"final_step": start}

    writer = metrics_lib.MetricWriter(workdir, resume_step=start)
    bar = metrics_lib.progress_bar(config.train.steps, start, config.train.progress)
    try:
        loop = _Loop(run, programs, ckpt, data_it, writer, bar)
        run.state, final_step, results = loop.train(state, start)
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    return summary | results | {"final_step": final_step}


def _report_changes(saved, config: Config, changes: dict, step: int, workdir) -> None:
    """Prints the config difference from the saved config and the warnings it implies."""
    if not changes:
        return
    print(f"Config changes from {workdir / CONFIG_FILE}, in effect from step {step}:")
    for key, (old, new) in changes.items():
        print(f"  {key}: {old!r} -> {new!r}")
    for warning in resume.describe_effects(saved, config, changes, step):
        print(f"warning: {warning}")


def _describe(placement: parallel.Placement) -> str:
    if placement.mode == "pmap":
        return f"pmap over {len(placement.devices)} devices"
    shape = ", ".join(f"{k}:{v}" for k, v in placement.mesh.shape.items())
    return f"mesh {shape} over {len(placement.devices)} devices"
