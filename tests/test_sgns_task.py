"""The word2vec task on the shared trainer (tasks/sgns.py, experiments/sgns_shakespeare.py).

The tests that train are marked slow (the model functions are covered fast in
tests/test_sgns.py); run them with ``pytest tests/test_sgns_task.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax import api, cli
from nlpjax.tasks.base import Rows
from nlpjax.training.metrics import read_metrics
from tests.conftest import REPO

TINY = str(REPO / "experiments" / "sgns_shakespeare.py") + ":tiny"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sgns")
    summary = api.train(api.load_config(TINY), workdir)
    return workdir, summary


@pytest.mark.slow  # trains the tiny variant
def test_tiny_run_logs_the_word_evaluation(trained):
    workdir, _ = trained
    rows = read_metrics(workdir)
    evals = [r for r in rows if "eval/analogy" in r]
    assert [r["step"] for r in evals] == [10, 20]
    for row in evals:
        assert 0.0 <= row["eval/analogy"] <= 1.0
        assert -1.0 <= row["eval/wordsim353"] <= 1.0 and -1.0 <= row["eval/simlex999"] <= 1.0
        assert 0.0 < row["eval/wordsim353_coverage"] <= 1.0
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 4 and np.isfinite(losses).all()


@pytest.mark.slow  # trains the tiny variant
def test_update_touches_only_the_batch_rows(trained):
    workdir, _ = trained
    run = api.load(workdir).run
    task, state = run.task, run.state
    batch = jax.tree.map(jnp.asarray, next(iter(task.train_iterator())))
    index = task.sparse_rows(batch, jax.random.PRNGKey(3))
    grads = {
        name: Rows(ids, jnp.ones(ids.shape + (task.config.model.embed_dim,)))
        for name, ids in index.items()
    }
    params, _ = task.apply_update(state.params, grads, state.opt_state, batch)
    for name, ids in index.items():
        changed = np.flatnonzero(np.any(params[name] != state.params[name], axis=1))
        assert set(changed.tolist()) <= set(np.asarray(ids).ravel().tolist())
        assert len(changed) > 0


def test_corpus_without_a_frequent_word_is_a_clear_error(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            f"--config={TINY}",
            "--config.data.tokenizer.min_count=1000000000",
            f"--workdir={tmp_path / 'w'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "min_count" in err and "Traceback" not in err


@pytest.mark.slow  # trains the tiny variant
def test_resume_from_a_checkpoint_is_exact(trained, tmp_path):
    import shutil

    workdir, _ = trained
    copy = tmp_path / "resumed"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "checkpoints" / "20")
    summary = api.train(api.load_config(TINY), copy)
    assert summary["start_step"] == 10 and summary["final_step"] == 20
    want, got = api.load(workdir).params, api.load(copy).params
    for name in ("center", "context"):
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]))


@pytest.mark.slow  # trains the tiny variant
def test_a_sharded_run_equals_the_single_device_run(tmp_path):
    layouts = {
        "one": {"parallel.devices": 1, "parallel.mesh": "data:1"},
        "sharded": {"parallel.devices": 4, "parallel.mesh": "data:2,tensor:2"},
    }
    params = {}
    for name, layout in layouts.items():
        overrides = {"data.batch_size": 2, "train.steps": 10, **layout}
        api.train(api.load_config(TINY, overrides), tmp_path / name)
        params[name] = api.load(tmp_path / name).params
    # The same draws and updates; only the order in which a frequent word's hundreds of
    # duplicate row updates are summed differs between the layouts (float32 rounding, grown
    # over 10 steps at the tiny variant's lr 0.5: a few 1e-6 on a few dozen entries).
    for table in ("center", "context"):
        np.testing.assert_allclose(
            np.asarray(params["sharded"][table]), np.asarray(params["one"][table]), atol=1e-5
        )


@pytest.mark.slow  # trains the tiny variant
def test_resume_with_another_vocabulary_is_refused_naming_the_file(trained, capsys):
    workdir, _ = trained
    saved = (workdir / "tokenizer.json").read_text()
    steps = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    code = cli.main(
        ["train", f"--config={TINY}", "--config.data.tokenizer.min_count=3", f"--workdir={workdir}"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "tokenizer.json" in err and "min_count" in err
    assert (workdir / "tokenizer.json").read_text() == saved
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == steps


def test_full_softmax_objective_is_refused_by_the_task(tmp_path, capsys):
    workdir = tmp_path / "w"
    code = cli.main(
        ["train", f"--config={TINY}", "--config.model.objective=softmax", f"--workdir={workdir}"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "model.objective" in err and "Traceback" not in err
    assert not (workdir / "checkpoints").exists()


def test_data_inspect_describes_the_word_stream(capsys):
    code = cli.main(["data", "inspect", f"--config={TINY}", "--num_examples=2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "words trained on" in out and "count >= 5" in out
    assert "chunk 0: First Citizen:" in out and "chunk 1:" in out and "chunk 2:" not in out


@pytest.mark.slow  # trains the tiny variant
def test_generate_is_refused_with_a_clear_error(trained, capsys):
    workdir, _ = trained
    code = cli.main(["generate", f"--workdir={workdir}", "--prompt=king"])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "nlpjax eval" in err and "Traceback" not in err


def test_the_tables_are_filled_on_the_host_like_the_jitted_init_and_sharded():
    from nlpjax.config import ParallelConfig
    from nlpjax.training import parallel

    layout = ParallelConfig(devices=4, mesh="data:2,tensor:2")
    placement = parallel.build_placement(layout)
    config = api.load_config(TINY)
    run = api.build_run(config, placement=placement)
    state, abstract = run.state, run.abstract_state
    for table in ("center", "context"):  # placed as the abstract state (rows over the mesh)
        assert state.params[table].sharding == abstract.params[table].sharding
        assert state.params[table].shape == abstract.params[table].shape
    center = np.asarray(state.params["center"])
    dim = config.model.embed_dim
    assert np.abs(center).max() <= 0.5 / dim and not np.asarray(state.params["context"]).any()
    jitted = np.asarray(run.task.init(jax.random.PRNGKey(0))["params"]["center"].unbox())
    # the same distribution as the flax init (uniform in +-0.5/E: std 1 / (E sqrt 12))
    np.testing.assert_allclose(center.std(), jitted.std(), rtol=0.05)
    np.testing.assert_allclose(center.std(), 1 / (dim * np.sqrt(12)), rtol=0.05)
    assert int(state.opt_state["count"]) == 0 and int(state.step) == 0
    # the rest of the state is made on the host too: the jitted init's key, every leaf
    # placed as the abstract state says
    want_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    np.testing.assert_array_equal(np.asarray(state.rng), np.asarray(want_key))
    leaves = jax.tree_util.tree_leaves_with_path(state)
    for (path, leaf), target in zip(leaves, jax.tree_util.tree_leaves(abstract), strict=True):
        assert (leaf.shape, leaf.dtype, leaf.sharding) == (
            target.shape,
            target.dtype,
            target.sharding,
        ), jax.tree_util.keystr(path)
    again = api.build_run(config, placement=placement).state.params["center"]
    np.testing.assert_array_equal(np.asarray(again), center)  # from the seed
    other = api.build_run(api.load_config(TINY, {"seed": 1}))
    assert not np.array_equal(np.asarray(other.state.params["center"]), center)


def test_a_host_made_state_unboxes_and_places_the_carry(monkeypatch):
    """A task with host_init and a carry (carry_leaf-boxed, as the carry contract wants):
    the state made on the host holds it unboxed, placed like the jitted init's."""
    from nlpjax.config import ParallelConfig
    from nlpjax.tasks.base import carry_leaf
    from nlpjax.tasks.sgns import SGNSTask
    from nlpjax.training import parallel

    def init_carry(self):
        return {"h": carry_leaf(np.full((self.config.data.batch_size, 4), 0.5, np.float32))}

    monkeypatch.setattr(SGNSTask, "init_carry", init_carry)
    placement = parallel.build_placement(ParallelConfig(devices=2, mesh="data:2"))
    config = api.load_config(TINY, {"data.batch_size": 2})
    run = api.build_run(config, placement=placement)
    carry, target = run.state.carry["h"], run.abstract_state.carry["h"]
    assert (carry.shape, carry.dtype, carry.sharding) == (
        target.shape,
        target.dtype,
        target.sharding,
    )
    np.testing.assert_array_equal(np.asarray(carry), np.full((2, 4), 0.5, np.float32))


def test_host_tables_of_the_wrong_shape_are_refused_naming_the_table(monkeypatch):
    from nlpjax.tasks.sgns import SGNSTask

    right = SGNSTask.host_init

    def wrong(self, seed):
        tables = right(self, seed)
        return tables | {"context": tables["context"][:, :3]}

    monkeypatch.setattr(SGNSTask, "host_init", wrong)
    wanted = r"host \(host_init.* has params\['context'\] as float32\[\d+, 3\]"
    with pytest.raises(ValueError, match=wanted):
        api.build_run(api.load_config(TINY))
