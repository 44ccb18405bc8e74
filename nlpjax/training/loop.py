"""``train_and_evaluate(config, workdir)``: the one training loop, for every task.

The loop knows a model family only through the Task interface. It resumes from the
latest checkpoint in ``workdir`` (state, RNG and data position), runs
``train.steps_per_dispatch`` steps per jitted call, reads metrics one dispatch late so
the host never stalls the device, evaluates and checkpoints on schedule, saves and
exits cleanly on SIGTERM/SIGINT, and stops with an error on a non-finite loss without
overwriting the last good checkpoint.
"""

import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nlpjax.config import Config, from_json
from nlpjax.tasks import TASKS
from nlpjax.tasks.base import stack_batches
from nlpjax.training import metrics as metrics_lib
from nlpjax.training.checkpoint import Checkpointer, abstract_like, check_signature
from nlpjax.training.optim import make_optimizer, make_schedule
from nlpjax.training.state import TrainState
from nlpjax.training.step import make_eval_fn, make_multi_step, make_train_step

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


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


@dataclass
class Run:
    """A task with its optimizer and initial state, ready to train, evaluate or sample."""

    config: Config
    task: Any
    tx: Any
    schedule: Any
    state: TrainState
    num_params: int


def build_run(config: Config, workdir: str | Path | None) -> Run:
    """Task (tokenizer from the workdir if present), optimizer and initial state."""
    task = TASKS[config.task](config, workdir)
    config = task.config
    schedule = make_schedule(config.optim, config.train.steps)
    tx = make_optimizer(config.optim, config.train.steps)

    def init(rng):
        variables = task.init(rng)
        params = nn.meta.unbox(variables["params"])
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.fold_in(rng, 1),
            carry=task.init_carry(),
        )

    state = jax.jit(init)(jax.random.PRNGKey(config.seed))
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    return Run(config, task, tx, schedule, state, num_params)


def load_workdir_config(workdir: str | Path) -> Config:
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training workdir (run `nlpjax train` first)"
        )
    return from_json(path.read_text())


def restore_trained(workdir: str | Path) -> tuple[Run, int]:
    """Rebuilds the run saved in ``workdir`` and restores its latest checkpoint."""
    config = load_workdir_config(workdir)
    run = build_run(config, workdir)
    ckpt = Checkpointer(Path(workdir) / "checkpoints", config.checkpoint)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(
            f"no checkpoint in {Path(workdir) / 'checkpoints'}: train first "
            f"(nlpjax train --config=... --workdir={workdir})"
        )
    step, state, _ = ckpt.restore(abstract_like(run.state))
    ckpt.close()
    run.state = state
    return run, step


def _check_workdir(workdir: Path, run: Run, ckpt: Checkpointer) -> None:
    """Refuses a workdir whose config or checkpoint belongs to another model."""
    signature = run.task.model_signature()
    config_path = workdir / CONFIG_FILE
    if config_path.is_file():
        saved = json.loads(config_path.read_text())
        check_signature({"task": saved["task"], "model": saved["model"]}, signature, str(workdir))
    latest = ckpt.latest_step()
    if latest is not None:
        check_signature(ckpt.read_signature(latest), signature, f"checkpoint {latest} in {workdir}")


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
        metrics, first_step, tokens_per_sec = pending
        host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items() if k != "weight"}
        for i, loss in enumerate(host["loss"]):
            step = first_step + i + 1
            if not math.isfinite(float(loss)):
                raise TrainingDiverged(
                    f"training loss is {float(loss)} at step {step}; stopped. The last good "
                    f"checkpoint (step {last_good}) is kept. Lower optim.lr, raise "
                    "optim.warmup_steps or set optim.clip_norm, then resume."
                )
            for k, v in host.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v[i])
            self.count += 1
            if step % self.cfg.train.log_every == 0 or step == self.cfg.train.steps:
                row = {f"train/{k}": v / self.count for k, v in self.sums.items()}
                row["train/lr"] = float(host["lr"][i])
                if tokens_per_sec is not None:
                    row["tokens_per_sec"] = tokens_per_sec
                self.writer.write(step, row)
                self.sums, self.count = {}, 0
        self.last_loss = float(host["loss"][-1])
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)


def train_and_evaluate(config: Config, workdir: str | Path) -> dict:
    """Trains (or resumes) ``config`` in ``workdir``; returns a summary dict."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = build_run(config, workdir)
    config, task = run.config, run.task
    ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint)
    _check_workdir(workdir, run, ckpt)

    data_it = task.train_iterator()
    state = run.state
    if ckpt.latest_step() is not None:
        step0, state, data_state = ckpt.restore(abstract_like(run.state))
        data_it.set_state(data_state)
        print(f"Resumed from step {step0} in {workdir}")
    else:
        task.save_assets(workdir)
    (workdir / CONFIG_FILE).write_text(config.to_json())
    start = int(state.step)
    total = config.train.steps
    print(f"Model: {config.task}, {run.num_params:,} parameters")
    summary = {"start_step": start, "num_params": run.num_params}
    if start >= total:
        print(f"Nothing to do: step {start} >= train.steps={total}")
        ckpt.close()
        return summary | {"final_step": start}

    train_step = make_train_step(task, run.tx, run.schedule)
    multi_step = make_multi_step(train_step)
    eval_fn = make_eval_fn(task)
    eval_batches = jax.device_put(task.eval_batches())
    writer = metrics_lib.MetricWriter(workdir, resume_step=start)
    signature = task.model_signature()
    k = config.train.steps_per_dispatch
    bar = metrics_lib.progress_bar(total, start, config.train.progress)
    train_log = _TrainLog(writer, config, bar)
    step, pending, last_good = start, None, ckpt.latest_step()
    tokens_per_dispatch_step = task.tokens_per_batch()
    t_mark, tokens_since = None, 0
    try:
        with StopRequest() as stop:
            while step < total:
                n = min(k - step % k, total - step)
                batches = stack_batches([next(data_it) for _ in range(n)])
                state, metrics = multi_step(state, batches)
                if t_mark is None:  # first dispatch includes compilation: time from here
                    jax.block_until_ready(metrics)
                    t_mark, tokens_since = time.perf_counter(), 0
                else:
                    tokens_since += n * tokens_per_dispatch_step
                if pending is not None:
                    train_log.flush(pending, last_good)
                step += n
                bar.update(n)
                at_eval = step % config.eval.every == 0 or step == total
                at_ckpt = step % config.checkpoint.every == 0 or step == total or stop.signum
                tps = None
                if step % config.train.log_every == 0 and tokens_since:
                    jax.block_until_ready(metrics)
                    now = time.perf_counter()
                    tps, t_mark, tokens_since = tokens_since / (now - t_mark), now, 0
                pending = (metrics, step - n, tps)
                if at_eval or at_ckpt:
                    train_log.flush(pending, last_good)
                    pending = None
                if at_eval:
                    ev = task.eval_summary(eval_fn(state.params, eval_batches))
                    writer.write(step, {f"eval/{k_}": v for k_, v in ev.items()})
                    summary.update({f"eval/{k_}": v for k_, v in ev.items()})
                    bar.write(
                        f"step {step}: " + ", ".join(f"eval/{a} {b:.4f}" for a, b in ev.items())
                    )
                if at_ckpt:
                    # Save a copy: the next dispatch donates (reuses) the state's buffers
                    # while the asynchronous save may still be reading them.
                    snapshot = jax.tree_util.tree_map(jnp.copy, state)
                    ckpt.save(step, snapshot, data_it.get_state(), signature)
                    last_good = step
                if stop.signum:
                    bar.write(f"Signal {stop.signum} received: saved step {step}, exiting.")
                    summary["stopped_by_signal"] = int(stop.signum)
                    break
            if pending is not None:
                train_log.flush(pending, last_good)
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    summary["final_step"] = step
    summary["train_loss"] = train_log.last_loss
    return summary
