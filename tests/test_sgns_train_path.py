"""`nlpjax train` on the word2vec task through the subsampled stream: a run whose epochs
are a few steps long, so checkpoints, resume and dispatches cross epoch boundaries.

The trainer's sparse step is checked against a dense reference (autodiff of the same loss
over the whole tables, word2vec's summed SGD), a run of one step per dispatch against one
of three, and a resumed run against the uninterrupted one, bitwise.
"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax import api
from nlpjax.tasks.base import Rows
from nlpjax.tasks.sgns import SGNSTask
from nlpjax.training import loop
from nlpjax.training.step import make_train_step
from tests.conftest import REPO

CONFIG = str(REPO / "experiments" / "sgns.py") + ":tiny"
STEPS = 12


def _overrides(corpus, **changes) -> dict:
    base = {
        "data.dataset": f"files:{corpus}",
        "data.tokenizer.min_count": 2,
        "data.chunk": 32,
        "train.steps": STEPS,
        "train.steps_per_dispatch": 3,
        "train.log_every": 3,
        "train.progress": False,
        "eval.every": 6,
        "checkpoint.every": 6,
    }
    return base | changes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The first 120 lines of Tiny Shakespeare: 339 words in a 93-word vocabulary, of which an
    epoch keeps about 120, so an epoch is about 4 steps of 32 kept words."""
    text = (REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt").read_text()
    path = tmp_path_factory.mktemp("sgns_corpus") / "corpus.txt"
    path.write_text("\n".join(text.splitlines()[:120]) + "\n")
    return path


AHEAD: list = []  # the uninterrupted run's ahead-compiled step


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sgns_run")

    class Spy(loop.AheadCompiled):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            AHEAD.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "AheadCompiled", Spy)
        api.train(api.load_config(CONFIG, _overrides(corpus)), workdir)
    return workdir


def _tables(workdir, step=None) -> dict:
    params = api.load(workdir, step=step).params
    return {name: np.asarray(params[name]) for name in ("center", "context")}


def test_the_run_spans_several_epochs(uninterrupted):
    task = api.load(uninterrupted).task
    per_epoch = task.steps_per_epoch()
    assert 2 <= per_epoch <= 5  # so the checkpoint at step 6 lies past an epoch boundary
    stream = task.subsampled()
    assert stream.words(0, 10)[0].tolist() == stream.epoch(0)[0][:10].tolist()


def test_resume_across_epochs_is_exact(corpus, uninterrupted, tmp_path):
    copy = tmp_path / "resumed"
    shutil.copytree(uninterrupted, copy)
    shutil.rmtree(copy / "checkpoints" / str(STEPS))
    summary = api.train(api.load_config(CONFIG, _overrides(corpus)), copy)
    assert summary["start_step"] == 6 and summary["final_step"] == STEPS
    want, got = _tables(uninterrupted), _tables(copy)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert np.any(want["context"] != 0)  # trained (word2vec's context table starts at 0)


def test_one_step_per_dispatch_equals_three(corpus, uninterrupted, tmp_path):
    api.train(
        api.load_config(CONFIG, _overrides(corpus, **{"train.steps_per_dispatch": 1})), tmp_path
    )
    want, got = _tables(uninterrupted), _tables(tmp_path)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_the_step_compiled_ahead_equals_the_step_compiled_at_the_first_dispatch(
    corpus, uninterrupted, tmp_path, monkeypatch
):
    """The uninterrupted run compiled its step in the background (the task's
    ``batch_spec``) and ran every dispatch through it; without the hook the step
    compiles at the first dispatch, and the tables are the same, bitwise."""
    assert len(AHEAD) == 1 and AHEAD[0].compiled_calls == STEPS // 3
    monkeypatch.delattr(SGNSTask, "batch_spec")
    spy = []
    monkeypatch.setattr(loop, "AheadCompiled", lambda *a, **k: spy.append(a) or a[0])
    api.train(api.load_config(CONFIG, _overrides(corpus)), tmp_path)
    assert not spy
    want, got = _tables(uninterrupted), _tables(tmp_path)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_a_run_shorter_than_a_dispatch_runs_the_ahead_compiled_step(corpus, tmp_path, monkeypatch):
    """train.steps < train.steps_per_dispatch: the one dispatch has train.steps steps, and
    that is what was compiled ahead."""
    made = []

    class Spy(loop.AheadCompiled):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(loop, "AheadCompiled", Spy)
    changes = {"train.steps": 2, "train.steps_per_dispatch": 3, "train.log_every": 3}
    api.train(api.load_config(CONFIG, _overrides(corpus, **changes)), tmp_path)
    assert len(made) == 1 and made[0].compiled_calls == 1


def test_the_sparse_step_equals_a_dense_reference(uninterrupted):
    """Step 7 of the run by the trainer's step and by autodiff over the whole tables."""
    trained = api.load(uninterrupted, step=6)
    task, state = trained.run.task, trained.run.state
    it = task.train_iterator()
    batches = [next(it) for _ in range(7)]  # step 7 trains on batch 6
    batch = jax.tree.map(jnp.asarray, batches[6])
    tx, schedule = task.make_optimizer(task.config)
    new_state, metrics = jax.jit(make_train_step(task, tx, schedule))(state, batch)
    rng = jax.random.fold_in(state.rng, state.step)  # the trainer's key for this step

    def dense_loss(params):
        return task.loss(params, {}, batch, rng, True)[0]

    grads = jax.jit(jax.grad(dense_loss))(state.params)
    lr = schedule(state.step)
    slots = task.config.data.batch_size * task.config.data.chunk
    assert float(metrics["pairs"]) > 0 and np.isfinite(float(metrics["loss"]))
    for name in ("center", "context"):
        want = state.params[name] - lr * slots * grads[name]
        got = new_state.params[name]
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
        assert np.any(np.asarray(got) != np.asarray(state.params[name]))
    assert not isinstance(state.params["center"], Rows)
