"""Mesh sharding, pmap and topology changes give the single-device losses."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from nlpjax.api import build_run
from nlpjax.config import ConfigError, ParallelConfig
from nlpjax.data.pipeline import stack_batches
from nlpjax.training import parallel
from nlpjax.training.step import make_train_step, scan_steps

STEPS = 5


def _losses(tiny_config, mode="jit", mesh="data:1", devices=1):
    config = tiny_config(
        data__batch_size=8, parallel__mode=mode, parallel__mesh=mesh, parallel__devices=devices
    )
    placement = parallel.build_placement(config.parallel)
    run = build_run(config, None, placement)
    it = run.task.train_iterator()
    host = stack_batches([next(it) for _ in range(STEPS)])
    axis = "batch" if mode == "pmap" else None
    step = make_train_step(run.task, run.tx, run.schedule, axis_name=axis)
    compiled = parallel.compile_steps(placement, scan_steps(step), run.state_shardings)
    state = parallel.place_state(placement, run.state, run.state_shardings)
    with placement.context():
        state, metrics = compiled(state, parallel.put_batches(placement, host))
    return np.asarray(parallel.metrics_of(placement, metrics)["loss"]), state, run


@pytest.fixture(scope="module")
def single(request):
    from nlpjax.api import load_config
    from tests.conftest import TINY

    def cfg(**kw):
        return load_config(TINY, {k.replace("__", "."): str(v) for k, v in kw.items()})

    return _losses(cfg)[0]


@pytest.mark.parametrize(
    "mode,mesh,devices",
    [
        # make test keeps the mixed mesh (tests/test_task_v2.py proves the layouts, pmap
        # included, for a task with a carry and sparse rows); the rest run with test-all.
        pytest.param("jit", "data:8", 8, marks=pytest.mark.slow),
        ("jit", "data:2,fsdp:2,tensor:2", 8),
        pytest.param("jit", "fsdp:8", 8, marks=pytest.mark.slow),
        pytest.param("jit", "data:-1,tensor:2", 4, marks=pytest.mark.slow),
        pytest.param("pmap", "data:-1", 8, marks=pytest.mark.slow),
    ],
)
def test_layouts_match_a_single_device(single, tiny_config, mode, mesh, devices):
    losses, _, _ = _losses(tiny_config, mode, mesh, devices)
    np.testing.assert_allclose(losses, single, rtol=1e-5)


def test_parameter_shardings_follow_the_rules(tiny_config):
    _, state, run = _losses(tiny_config, "jit", "data:2,fsdp:2,tensor:2", 8)
    params = state.params
    block = params["block_0"]
    assert block["attn"]["qkv_kernel"].sharding.spec == P("fsdp", None, "tensor", None)
    assert block["attn"]["out_kernel"].sharding.spec == P("tensor", None, "fsdp")
    assert block["mlp"]["wi"]["kernel"].sharding.spec == P("fsdp", "tensor")
    # vocab (65) does not divide by tensor=2: that axis falls back to replication
    assert params["embedding"].sharding.spec == P(None, "fsdp")
    # optimizer state is sharded like the parameters (fsdp shards it too)
    mu = state.opt_state[1][0].mu["block_0"]["mlp"]["wi"]["kernel"]
    assert mu.sharding.spec == P("fsdp", "tensor")
    shard_shape = block["mlp"]["wi"]["kernel"].sharding.shard_shape((32, 64))
    assert shard_shape == (16, 32)


@pytest.mark.parametrize(
    "mesh,devices,message",
    [
        ("data:3", 8, "has 3 devices but 8 are in use"),
        ("data:2,model:4", 8, "unknown mesh axis 'model'"),
        ("data:-1,fsdp:3", 8, "cannot be split"),
        ("data:-1", 9, "parallel.devices=9 but 8 devices"),
    ],
)
def test_impossible_meshes_are_clear_errors(mesh, devices, message):
    with pytest.raises(ConfigError, match=message):
        parallel.make_mesh(ParallelConfig(mesh=mesh, devices=devices))


def test_heads_not_divisible_by_tensor_is_an_error(tiny_config):
    config = tiny_config(
        model__num_heads=1, data__batch_size=8, parallel__mesh="tensor:2", parallel__devices=2
    )
    with pytest.raises(ConfigError, match="model.num_heads = 1 is not divisible by the mesh axis"):
        build_run(config, None, parallel.build_placement(config.parallel))


def test_batch_not_divisible_by_data_parallel_size():
    with pytest.raises(ConfigError, match="data.batch_size=12 is not divisible by the data-par"):
        parallel.check_batch(12, 8)


def test_rule_overrides():
    rules = dict(parallel.parse_rules("embed=,vocab=fsdp+tensor"))
    assert rules["embed"] is None and rules["vocab"] == ("fsdp", "tensor")
    with pytest.raises(ConfigError, match="unknown mesh axis 'model'"):
        parallel.parse_rules("embed=model")


def test_mesh_parsing_fills_minus_one():
    assert parallel.parse_mesh("data:2,fsdp:-1", 8) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert jax.device_count() == 8


def _per_step_losses(workdir):
    from nlpjax.training.metrics import read_metrics

    return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


@pytest.mark.slow  # make test: tests/test_task_v2.py resumes onto other layouts
def test_resume_onto_other_topologies(tiny_config, tmp_path):
    import shutil

    from nlpjax.api import train as train_and_evaluate

    def cfg(steps, mesh, devices, mode="jit"):
        return tiny_config(
            parallel__mode=mode,
            data__batch_size=8, train__steps=steps, optim__decay_steps=20,
            train__steps_per_dispatch=1, train__log_every=1, checkpoint__every=10,
            eval__every=10, train__progress="false", parallel__mesh=mesh,
            parallel__devices=devices,
        )  # fmt: skip

    train_and_evaluate(cfg(20, "data:8", 8), tmp_path / "ref")
    want = _per_step_losses(tmp_path / "ref")
    train_and_evaluate(cfg(10, "data:8", 8), tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    train_and_evaluate(cfg(20, "fsdp:4,tensor:2", 8), tmp_path / "a")
    train_and_evaluate(cfg(20, "data:1", 1), tmp_path / "b")
    train_and_evaluate(cfg(20, "data:-1", 8, mode="pmap"), tmp_path / "c")
    for workdir in ("a", "b", "c"):
        got = _per_step_losses(tmp_path / workdir)
        assert sorted(got) == list(range(1, 21))
        np.testing.assert_allclose(
            [got[s] for s in range(11, 21)], [want[s] for s in range(11, 21)], rtol=1e-4
        )


def test_plan_reports_per_device_memory(tiny_config):
    from nlpjax.tasks.lm import LMTask
    from nlpjax.training.plan import format_plan, plan

    one = plan(
        tiny_config(data__batch_size=8, parallel__devices=1, parallel__mesh="data:1"), LMTask
    )
    fsdp = plan(
        tiny_config(data__batch_size=8, parallel__devices=8, parallel__mesh="fsdp:8"), LMTask
    )
    assert one["num_params"] == fsdp["num_params"] == 19744
    assert one["params_bytes"] == 19744 * 4
    assert one["opt_state_bytes"] >= 2 * 19744 * 4  # adam mu and nu
    # fsdp shards the matrices 8 ways (the 65-row embedding's width 32 splits too)
    assert fsdp["params_bytes"] < one["params_bytes"] / 4
    assert one["temp_bytes"] > 0 and fsdp["temp_bytes"] > 0
    text = format_plan(fsdp)
    assert "fsdp:8" in text and "params / device" in text and "step temps / device" in text


def test_plan_refuses_impossible_layouts(tiny_config):
    from nlpjax.tasks.lm import LMTask
    from nlpjax.training.plan import plan

    with pytest.raises(ConfigError, match="data.batch_size=4 is not divisible"):
        plan(tiny_config(parallel__devices=8, parallel__mesh="data:8"), LMTask)
    with pytest.raises(ConfigError, match="has 4 devices but 8 are in use"):
        plan(tiny_config(parallel__devices=8, parallel__mesh="data:4"), LMTask)


def test_multihost_flags_must_come_together(capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    code = cli.main(["train", f"--config={TINY}", "--workdir=/tmp/x", "--num_processes=2"])
    assert code == 2
    assert "need all of --coordinator_address" in capsys.readouterr().err


def test_state_shardings_are_returned_not_stored(tiny_config):
    """The placement keeps no state shardings for compile_steps to find later."""
    config = tiny_config(parallel__mesh="data:2,fsdp:2,tensor:2", parallel__devices=8)
    run = build_run(config, None, parallel.build_placement(config.parallel))
    assert not hasattr(run.placement, "state_shardings")
    kernel = run.state_shardings.params["block_0"]["mlp"]["wi"]["kernel"]
    assert kernel.spec == P("fsdp", "tensor")
    assert run.state.params["block_0"]["mlp"]["wi"]["kernel"].sharding == kernel
