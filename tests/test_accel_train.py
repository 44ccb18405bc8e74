"""Training-side accelerator features on CPU: gradient accumulation, bfloat16 runs resume."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.api import build_run, load_config
from nlpjax.api import train as train_and_evaluate
from nlpjax.cli import main
from nlpjax.data.pipeline import stack_batches
from nlpjax.training.checkpoint import Checkpointer
from nlpjax.training.metrics import read_metrics
from nlpjax.training.step import make_multi_step, make_train_step
from tests.conftest import TINY


@pytest.fixture(scope="module")
def run_and_batches():
    run = build_run(load_config(TINY, {}), None)
    it = run.task.train_iterator()
    return run, stack_batches([next(it) for _ in range(3)])


def _steps(run, batches, microbatches):
    step = make_train_step(run.task, run.tx, run.schedule, microbatches=microbatches)
    state = jax.tree_util.tree_map(jnp.copy, run.state)  # the jitted steps donate it
    return make_multi_step(step)(state, batches)


# Both k run with make test-all (the 10-minute budget of make test, which keeps the
# microbatch equality in test_fsdp_tensor_mesh_has_no_full_rematerialization_and_microbatches_match:
# two microbatches on data:2,fsdp:2,tensor:2 against the whole batch on one device).
@pytest.mark.parametrize(
    "k", [pytest.param(2, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)]
)
def test_microbatches_equal_the_whole_batch(run_and_batches, k):
    run, batches = run_and_batches
    whole_state, whole = _steps(run, batches, 1)
    split_state, split = _steps(run, batches, k)
    np.testing.assert_allclose(split["loss"], whole["loss"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split["grad_norm"], whole["grad_norm"], rtol=1e-5)
    np.testing.assert_array_equal(split["weight"], whole["weight"])
    for a, b in zip(
        jax.tree_util.tree_leaves(split_state.params),
        jax.tree_util.tree_leaves(whole_state.params),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(whole_state.params["embedding"], run.state.params["embedding"])


def _files(path):
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def five_steps(tmp_path_factory):
    """A workdir with a finished 5-step tiny run (checkpoint at step 5)."""
    workdir = tmp_path_factory.mktemp("five")
    args = ["train", f"--config={TINY}", f"--workdir={workdir}", "--config.train.progress=false"]
    assert main([*args, "--config.train.steps=5", "--config.checkpoint.every=5"]) == 0
    return workdir


@pytest.mark.parametrize(
    "value,message",
    [
        ("3", "data.batch_size=4 cannot be split into train.microbatches=3"),
        ("0", "train.microbatches must be > 0"),
    ],
)
def test_bad_microbatches_exit_2_and_keep_the_run(five_steps, tmp_path, capsys, value, message):
    workdir = tmp_path / "w"
    shutil.copytree(five_steps, workdir)
    before = _files(workdir)
    capsys.readouterr()
    args = ["train", f"--config={TINY}", f"--workdir={workdir}", "--config.train.steps=10"]
    assert main([*args, f"--config.train.microbatches={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert _files(workdir) == before


@pytest.mark.slow
def test_bfloat16_run_keeps_float32_checkpoints_and_resumes_exactly(tmp_path):
    def config(steps):
        return load_config(
            TINY,
            {
                "model.dtype": "bfloat16",
                "train.steps": str(steps),
                "checkpoint.every": "5",
                "train.progress": "false",
            },
        )

    train_and_evaluate(config(10), tmp_path / "straight")
    train_and_evaluate(config(5), tmp_path / "resumed")
    ckpt = Checkpointer(tmp_path / "resumed" / "checkpoints", config(5).checkpoint)
    _, state, _ = ckpt.restore(build_run(config(5), tmp_path / "resumed").abstract_state)
    ckpt.close()
    dtypes = {x.dtype for x in jax.tree_util.tree_leaves((state.params, state.opt_state))}
    assert dtypes <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}
    assert jnp.dtype(jnp.float32) in dtypes
    assert train_and_evaluate(config(10), tmp_path / "resumed")["start_step"] == 5
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    losses = [[r["train/loss"] for r in rows if "train/loss" in r] for rows in (straight, resumed)]
    assert len(losses[0]) == 2 and losses[0] == losses[1]


def _mesh_losses(tiny_config, mesh, devices, microbatches):
    from nlpjax.training import parallel
    from nlpjax.training.step import scan_steps

    config = tiny_config(data__batch_size=8, parallel__mesh=mesh, parallel__devices=devices)
    placement = parallel.build_placement(config.parallel)
    run = build_run(config, None, placement)
    it = run.task.train_iterator()
    host = stack_batches([next(it) for _ in range(3)])
    step = make_train_step(run.task, run.tx, run.schedule, microbatches=microbatches)
    compiled = parallel.compile_steps(placement, scan_steps(step), run.state_shardings)
    state = parallel.place_state(placement, run.state, run.state_shardings)
    with placement.context():
        _, metrics = compiled(state, parallel.put_batches(placement, host))
    return np.asarray(parallel.metrics_of(placement, metrics)["loss"])


def test_fsdp_tensor_mesh_has_no_full_rematerialization_and_microbatches_match(tiny_config, capfd):
    single = _mesh_losses(tiny_config, "data:1", 1, 1)
    capfd.readouterr()
    sharded = _mesh_losses(tiny_config, "data:2,fsdp:2,tensor:2", 8, 2)
    err = capfd.readouterr().err
    assert "Involuntary full rematerialization" not in err
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)
