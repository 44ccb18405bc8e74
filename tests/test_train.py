"""The training loop: golden losses, resume, refusal of other models, divergence."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.api import build_run
from nlpjax.api import restore_run as restore_trained
from nlpjax.api import train as train_and_evaluate
from nlpjax.data.pipeline import stack_batches
from nlpjax.errors import TrainingDiverged
from nlpjax.tasks.lm import LMTask
from nlpjax.training.checkpoint import Checkpointer, CheckpointMismatchError
from nlpjax.training.metrics import read_metrics
from nlpjax.training.step import make_multi_step, make_train_step
from nlpjax.training.workdir_lock import LOCK_FILE as LOCK

# From a real run (jax 0.10.2, XLA:CPU, x86-64, 2026-11-26): the tiny variant of
# experiments/shakespeare_char.py (warmup 10 of its 40 steps), seed 0,
# its first training batch at initialization, then the losses of its first five AdamW
# steps (lr 0, 1e-4, ..., 4e-4).
GOLDEN_INIT_LOSS = 4.190990447998047
GOLDEN_STEP_LOSSES = [
    4.190990447998047,
    4.174939155578613,
    4.2020440101623535,
    4.175009727478027,
    4.169713497161865,
]


def _first_batches(run, n):
    it = run.task.train_iterator()
    return [next(it) for _ in range(n)]


def test_golden_losses(tiny_config):
    run = build_run(tiny_config(), None)
    batches = _first_batches(run, 5)
    loss, _ = run.task.loss(run.state.params, {}, batches[0], None, False)
    assert float(loss) == pytest.approx(GOLDEN_INIT_LOSS, rel=1e-5)
    multi = make_multi_step(make_train_step(run.task, run.tx, run.schedule))
    _, metrics = multi(run.state, stack_batches(batches))
    np.testing.assert_allclose(np.asarray(metrics["loss"]), GOLDEN_STEP_LOSSES, rtol=1e-5)


def test_fused_steps_equal_single_steps(tiny_config):
    run = build_run(tiny_config(), None)
    batches = _first_batches(run, 4)
    multi = make_multi_step(make_train_step(run.task, run.tx, run.schedule))
    fused_state, fused = multi(jax.tree_util.tree_map(jnp.copy, run.state), stack_batches(batches))
    state, singles = run.state, []
    for b in batches:
        state, m = multi(state, stack_batches([b]))
        singles.append(float(m["loss"][0]))
    np.testing.assert_allclose(np.asarray(fused["loss"]), singles, rtol=1e-6)
    assert int(fused_state.step) == int(state.step) == 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (checkpoints at steps 20 and 40) and its summary."""
    from nlpjax.api import load_config
    from tests.conftest import TINY

    workdir = tmp_path_factory.mktemp("trained")
    config = load_config(TINY, {"train.progress": "false"})
    return workdir, config, train_and_evaluate(config, workdir)


def _copy(trained, tmp_path):
    shutil.copytree(trained[0], tmp_path / "w")
    return tmp_path / "w"


def test_train_learns_then_resume_is_a_noop(trained, tmp_path):
    _, config, summary = trained
    tmp_path = _copy(trained, tmp_path)
    rows = read_metrics(tmp_path)
    evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
    assert summary["final_step"] == 40 and len(evals) == 2
    assert evals[-1] < evals[0] < 4.2  # learning from ln(65) ~ 4.17
    assert Checkpointer(tmp_path / "checkpoints", config.checkpoint).all_steps() == [20, 40]
    again = train_and_evaluate(config, tmp_path)
    assert again == {"start_step": 40, "num_params": summary["num_params"], "final_step": 40}
    assert read_metrics(tmp_path) == rows


def test_a_different_model_is_refused_and_nothing_is_lost(trained, tiny_config, tmp_path):
    tmp_path = _copy(trained, tmp_path)

    def saved():  # the lock file is taken (written) first; it is not saved work
        files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != LOCK]
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}

    before = saved()
    with pytest.raises(
        CheckpointMismatchError, match="model.d_model: checkpoint has 32, config has 64"
    ):
        train_and_evaluate(tiny_config(model__d_model=64), tmp_path)
    assert saved() == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    train_and_evaluate(tiny_config(train__steps=20, train__progress="false"), tmp_path)
    original = LMTask.loss

    def poisoned(self, params, carry, batch, rng, train):
        loss, aux = original(self, params, carry, batch, rng, train)
        return loss * jnp.nan, aux

    monkeypatch.setattr(LMTask, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 21.*step 20\) is kept"):
        train_and_evaluate(tiny_config(train__steps=40, train__progress="false"), tmp_path)
    monkeypatch.setattr(LMTask, "loss", original)
    ckpt = Checkpointer(tmp_path / "checkpoints", tiny_config().checkpoint)
    assert ckpt.all_steps() == [20]
    run = build_run(tiny_config(), tmp_path)
    step, state, _ = ckpt.restore(run.abstract_state)
    assert step == 20
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.params))


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    for f in (workdir / "checkpoints" / "40" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    run, step = restore_trained(workdir)
    assert step == 20 and int(run.state.step) == 20


def test_nan_before_the_first_checkpoint_says_none_was_saved(tmp_path, monkeypatch, capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    original = LMTask.loss

    def poisoned(self, params, carry, batch, rng, train):
        loss, aux = original(self, params, carry, batch, rng, train)
        return loss * jnp.nan, aux

    monkeypatch.setattr(LMTask, "loss", poisoned)
    code = cli.main(
        ["train", f"--config={TINY}", f"--workdir={tmp_path}", "--config.train.progress=false"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: training loss is nan at step 1;"), err
    assert "No checkpoint was saved yet (the first comes at step 20)" in err[0]
    assert "None" not in err[0] and "start again" in err[0]
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
