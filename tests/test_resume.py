"""Resuming a workdir: damaged checkpoints, config changes, the workdir lock, exact RNG."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from nlpjax import cli
from nlpjax.api import build_run, load_config
from nlpjax.api import restore_run as restore_trained
from nlpjax.api import train as train_and_evaluate
from nlpjax.training.metrics import read_metrics
from nlpjax.training.resume import describe_effects, diff_configs, is_allowed, read_history
from nlpjax.training.workdir_lock import LOCK_FILE, WorkdirLock
from tests.conftest import REPO, TINY

# A 40-step tiny run whose cosine decay depends on train.steps (warmup 10 < 40).
BASE = {
    "train.progress": "false",
    "optim.warmup_steps": "10",
    "checkpoint.every": "20",
}


def _flags(overrides: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in overrides.items()]


def _train_cmd(workdir, overrides: dict) -> list[str]:
    return [
        sys.executable, "-m", "nlpjax.cli", "train", f"--config={TINY}",
        f"--workdir={workdir}", *_flags(overrides),
    ]  # fmt: skip


def _cli(capsys, workdir, overrides: dict) -> tuple[int, str, str]:
    code = cli.main(["train", f"--config={TINY}", f"--workdir={workdir}", *_flags(overrides)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _snapshot(workdir: Path) -> dict:
    """Every saved file with its mtime and bytes (the lock file is not saved work)."""
    files = [p for p in sorted(workdir.rglob("*")) if p.is_file() and p.name != LOCK_FILE]
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    train_and_evaluate(load_config(TINY, BASE), workdir)
    return workdir


@pytest.fixture
def workdir(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "w")
    return tmp_path / "w"


# --- Item 4: a damaged newest checkpoint ----------------------------------------------


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_finishes(workdir):
    state_dir = workdir / "checkpoints" / "40" / "state"
    files = sorted(p for p in state_dir.rglob("*") if p.is_file())
    for i, f in enumerate(files):  # half the array files missing, the others truncated
        f.unlink() if i % 2 else f.write_bytes(f.read_bytes()[:7])
    done = subprocess.run(
        _train_cmd(workdir, BASE), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Resumed from step 20" in done.stdout
    assert "final eval/loss" in done.stdout and "at step 40" in done.stdout
    damaged = [line for line in output.splitlines() if "is damaged" in line]
    assert len(damaged) == 1, output
    assert "checkpoint step 40 is damaged" in damaged[0] and "40.damaged" in damaged[0]
    assert "TensorStore" not in output and "Traceback" not in output
    assert len(output.splitlines()) <= 8, output
    assert (workdir / "checkpoints" / "40.damaged" / "state").is_dir()  # kept, not deleted
    run, step = restore_trained(workdir)
    assert step == 40 and int(run.state.step) == 40
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20, 25, 30, 35, 40]


# --- Item 5: config changes on resume -------------------------------------------------


def test_a_refused_config_change_names_the_keys_and_writes_nothing(workdir, capsys):
    before = _snapshot(workdir)
    refused = {"seed": "1", "data.batch_size": "8", "optim.b1": "0.8", "train.steps": "60"}
    code, out, err = _cli(capsys, workdir, BASE | refused)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for key in ("seed (0 -> 1)", "data.batch_size (4 -> 8)", "optim.b1 (0.9 -> 0.8)"):
        assert key in lines[0]
    assert "train.steps" not in lines[0] and "config.json" in lines[0]
    # clip_norm is an allowed key, but 1.0 -> 0 drops a part of the optimizer state.
    code, _, err = _cli(capsys, workdir, BASE | {"optim.clip_norm": "0"})
    assert code == 2 and "optim.clip_norm (1.0 -> 0.0)" in err
    assert _snapshot(workdir) == before


def test_an_allowed_change_warns_with_its_effect_and_keeps_the_history(workdir, capsys):
    saved = json.loads((workdir / "config.json").read_text())
    code, out, err = _cli(capsys, workdir, BASE | {"train.steps": "60"})
    assert code == 0, out + err
    assert "  train.steps: 40 -> 60" in out
    assert "warning: lr at step 40 changes from 1.0e-4 to 4.1e-4" in out
    current = json.loads((workdir / "config.json").read_text())
    assert current["train"]["steps"] == 60
    history = read_history(workdir)
    assert [h["step"] for h in history] == [0, 40]
    assert history[0]["config"] == saved and history[1]["config"] == current
    rows = read_metrics(workdir)
    assert rows[-1]["step"] == 60
    # A later resume with the same config adds nothing; a new change adds a row.
    code, out, _ = _cli(capsys, workdir, BASE | {"train.steps": "60", "eval.every": "10"})
    assert code == 0 and "  eval.every: 20 -> 10" in out
    assert [h["step"] for h in read_history(workdir)] == [0, 40, 60]


def test_a_config_saved_in_an_older_layout_is_no_change(workdir, capsys):
    """A config.json from before the tokenizer section (``"tokenizer": "char"``) and
    without keys added since still resumes: it is compared in today's resolved form."""
    path = workdir / "config.json"
    saved = json.loads(path.read_text())
    saved["data"]["tokenizer"] = "char"
    saved["model"].pop("dtype", None)
    path.write_text(json.dumps(saved))
    code, out, err = _cli(capsys, workdir, BASE | {"train.steps": "45"})
    assert code == 0, out + err
    assert "data.tokenizer" not in out + err and "train.steps: 40 -> 45" in out


# --- Items 6b and 17: one run per workdir; exact resume with dropout after SIGKILL ----


def _wait_for(condition, proc, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"run ended before {what}:\n{proc.stdout.read()}")
        assert time.time() < deadline, f"no {what}"
        time.sleep(0.02)


def _has_checkpoint(workdir: Path) -> bool:
    ckpts = workdir / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def _losses(workdir: Path) -> dict:
    return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


HOLDER = """
import sys, time
from nlpjax.training.workdir_lock import WorkdirLock
WorkdirLock(sys.argv[1]).__enter__()
print("held", flush=True)
time.sleep(600)
"""


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    code, out, err = _cli(capsys, tmp_path, BASE)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path} is in use"), err
    assert f"pid {holder.pid}," in lines[0] and "host " in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]  # the refused run wrote nothing
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with WorkdirLock(tmp_path):  # the kernel released the dead holder's lock
        assert f"pid {os.getpid()}," in (tmp_path / LOCK_FILE).read_text()


# Dropout 0.1 makes every step use the RNG; checkpoints every 10 of 120 steps.
DROPOUT_RUN = {
    "model.dropout": "0.1", "train.progress": "false", "train.steps": "120",
    "train.steps_per_dispatch": "1", "train.log_every": "1", "checkpoint.every": "10",
    "checkpoint.max_to_keep": "100", "eval.every": "120",
}  # fmt: skip


# Slow (about 25 s): make test-all runs it. make test keeps the lock
# (test_the_lock_names_its_holder_and_dies_with_it), SIGKILL resume
# (test_task_v2.py::test_sigkill_resume_is_bitwise_and_reshards) and SIGTERM resume
# (test_cli.py).
@pytest.mark.slow
def test_a_second_run_is_refused_and_resume_after_sigkill_with_dropout_is_exact(tmp_path, capsys):
    reference = tmp_path / "reference"
    train_and_evaluate(load_config(TINY, DROPOUT_RUN), reference)
    workdir = tmp_path / "killed"
    first = subprocess.Popen(
        _train_cmd(workdir, DROPOUT_RUN),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lock = workdir / LOCK_FILE
    _wait_for(lambda: lock.is_file() and f"pid {first.pid}," in lock.read_text(), first, "lock")

    code, out, err = _cli(capsys, workdir, DROPOUT_RUN)  # a second run while the first runs
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "host " in lines[0], err
    assert "in use by another training run" in lines[0]

    _wait_for(lambda: _has_checkpoint(workdir), first, "checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert lock.is_file()  # left behind by the killed run, but no longer held
    summary = train_and_evaluate(load_config(TINY, DROPOUT_RUN), workdir)
    assert 0 < summary["start_step"] < 120 and summary["final_step"] == 120

    got, want = _losses(workdir), _losses(reference)
    assert sorted(got) == list(range(1, 121))
    assert got == want  # bitwise: JSON floats round-trip exactly
    params = [restore_trained(w)[0].state.params for w in (workdir, reference)]
    for a, b in zip(*map(jax.tree_util.tree_leaves, params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dropout_makes_the_training_loss_depend_on_the_rng():
    """Guards the test above: with dropout 0.1 the per-step RNG changes the loss."""
    run = build_run(load_config(TINY, DROPOUT_RUN), None)
    batch = next(run.task.train_iterator())
    loss = jax.jit(lambda rng: run.task.loss(run.state.params, {}, batch, rng, True)[0])
    losses = {float(loss(jax.random.PRNGKey(k))) for k in range(3)}
    assert len(losses) == 3


def test_effects_name_a_later_lr_change_and_nested_sections_diff_by_key():
    warmup = {"optim.warmup_steps": "100"}  # > 40 steps: the lr at step 40 is unchanged
    saved = load_config(TINY, warmup)
    longer = load_config(TINY, warmup | {"train.steps": "400"})
    old = json.loads(saved.to_json())
    changes = diff_configs(old, json.loads(longer.to_json()))
    assert changes == {"train.steps": (40, 400)}
    assert describe_effects(old, longer, changes, 40) == [
        "lr at step 220 changes from 1.0e-4 to 6.9e-4"
    ]
    nested = diff_configs(
        {"data": {"tokenizer": "char"}}, {"data": {"tokenizer": {"kind": "char", "size": 0}}}
    )
    assert set(nested) == {"data.tokenizer", "data.tokenizer.kind", "data.tokenizer.size"}
    assert not any(map(is_allowed, nested))
    assert is_allowed("optim.lr") and is_allowed("parallel.mesh") and not is_allowed("optim.b2")


@pytest.mark.slow  # three resumes; run by make test-all
def test_runtime_model_keys_may_change_on_resume(workdir, capsys):
    """model.dtype / attention / remat say how the model computes, not what it is: a
    checkpoint resumes under other values (with a warning); the signature ignores them."""
    overrides = {"train.steps": "45", "model.remat": "full", "model.attention": "xla"}
    code, out, err = _cli(capsys, workdir, BASE | overrides)
    assert code == 0, out + err
    assert "model.remat: 'none' -> 'full'" in out and "computes differently" in out, out
    code, _, err = _cli(capsys, workdir, BASE | {"train.steps": "45", "model.d_ff": "128"})
    assert code == 2 and "model.d_ff" in err


def test_a_dtype_change_that_adds_a_loss_scale_is_refused(workdir, capsys):
    """float16 keeps a loss scale in the optimizer state, which a float32 checkpoint
    lacks: refused cleanly (exit 2), not reported as a damaged checkpoint."""
    before = _snapshot(workdir)
    code, _, err = _cli(capsys, workdir, BASE | {"model.dtype": "float16"})
    assert code == 2 and "model.dtype ('auto' -> 'float16')" in err, err
    assert _snapshot(workdir) == before


class _SignalAt:
    """A train iterator that sends this process SIGTERM while batch number ``at`` is read
    (in the read-ahead of the next dispatch, after the loop decided not to save)."""

    def __init__(self, inner, at: int):
        self.inner, self.at, self.count = inner, at, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_a_signal_during_the_read_ahead_is_saved_after_the_next_dispatch(tmp_path, monkeypatch):
    """Batches 11-15 are read while steps 5-9 train; SIGTERM arrives during that read.
    The loop trains steps 10-14, saves step 15 (the step it reports) and stops. (It used to
    report "saved step 10" and exit without saving anything.)"""
    from nlpjax.tasks.lm import LMTask

    config = load_config(
        TINY,
        {"train.steps": 200, "train.steps_per_dispatch": 5, "checkpoint.every": 100,
         "eval.every": 100, "train.progress": False},
    )  # fmt: skip
    reader = LMTask.train_iterator
    monkeypatch.setattr(LMTask, "train_iterator", lambda self: _SignalAt(reader(self), at=12))
    summary = train_and_evaluate(config, tmp_path)
    assert summary["stopped_by_signal"] == signal.SIGTERM
    assert summary["final_step"] == 15
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [15]
    assert restore_trained(tmp_path)[1] == 15
