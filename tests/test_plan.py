"""``nlpjax plan``: per-device bytes for data vs fsdp layouts, the CLI and --simulate_devices."""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from nlpjax.api import load_config
from nlpjax.cli import main
from nlpjax.errors import ConfigError
from nlpjax.tasks.lm import LMTask
from nlpjax.training.plan import (
    GIB,
    check_fits,
    format_plan,
    format_size,
    plan,
    saved_residuals,
)
from tests.conftest import REPO, TINY

# The tiny decoder (vocab 65, d_model 32, d_ff 64, 2 layers of 2 heads, context 16) has
# 19,744 float32 parameters: 78,976 bytes. The rules shard every "embed" axis over fsdp;
# with fsdp:8 each device keeps 1/8 of every leaf that has one (32 / 8 = 4 rows of it)
# and all of the two that do not, the QKV biases (3, 2, 16) and MLP biases (64,):
# 19,744 - 2 * (96 + 64) = 19,424 elements / 8 = 2,428, plus 2 * (96 + 64) = 320,
# i.e. 2,748 elements = 10,992 bytes per device.
ALL_PARAM_BYTES = 19_744 * 4
FSDP8_PARAM_BYTES = 2_748 * 4


def _overrides(mesh):
    return {"parallel.devices": "0", "parallel.mesh": mesh, "data.batch_size": "8"}


@pytest.fixture(scope="module")
def reports():
    return {
        mesh: plan(load_config(TINY, _overrides(mesh)), LMTask) for mesh in ("data:8", "fsdp:8")
    }


def test_fsdp_shards_params_and_optimizer_state_data_replicates_them(reports):
    data, fsdp = reports["data:8"], reports["fsdp:8"]
    assert data["num_params"] == fsdp["num_params"] == 19_744
    assert data["devices"] == fsdp["devices"] == 8
    assert data["layout"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert data["params_bytes"] == ALL_PARAM_BYTES
    assert fsdp["params_bytes"] == FSDP8_PARAM_BYTES
    # AdamW keeps two moments shaped like the params, plus a few scalar counters.
    for report in (data, fsdp):
        extra = report["opt_state_bytes"] - 2 * report["params_bytes"]
        assert 0 <= extra <= 16
    assert fsdp["temp_bytes"] > 0 and fsdp["flops_per_dispatch"] > 0
    text = format_plan(fsdp)
    assert "data:1, fsdp:8, tensor:1 (8 devices)" in text
    assert "params / device       10.7 KiB" in text


def test_plan_cli_refuses_an_impossible_mesh(capsys):
    code = main(
        ["plan", f"--config={TINY}", "--config.parallel.devices=0", "--config.parallel.mesh=data:3"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: parallel.mesh='data:3' has 3 devices but 8 are in use")
    assert len(err.splitlines()) == 1


def test_plan_cli_simulates_devices_in_a_fresh_process():
    """Without the test suite's 8 fake devices, --simulate_devices=8 must provide them."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    args = [f"--config={TINY}", "--simulate_devices=8", "--config.data.batch_size=8"]
    args += ["--config.parallel.devices=0", "--config.parallel.mesh=fsdp:8"]
    out = subprocess.run(
        [sys.executable, "-m", "nlpjax.cli", "plan", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "layout                data:1, fsdp:8, tensor:1 (8 devices)" in out.stdout
    assert "params / device       10.7 KiB" in out.stdout
    assert "parameters            19,744" in out.stdout


# -- activations and remat ------------------------------------------------------------------


def test_saved_residuals_tells_weight_copies_from_activations():
    def loss(p, x):
        h = jnp.tanh(x @ p["w"])  # its backward keeps (5, 3) arrays: activations
        scale = jnp.cos(p["v"])[None, :]  # from the parameters alone: a weight copy
        positions = jnp.broadcast_to(jnp.arange(3.0), (7, 3))  # a constant array
        return jnp.sum(h * scale) + jnp.sum(jnp.sin(p["v"][None, :] * positions)), {}

    params = {
        "w": jax.ShapeDtypeStruct((4, 3), jnp.float32),
        "v": jax.ShapeDtypeStruct((3,), jnp.float32),
    }
    x = jax.ShapeDtypeStruct((5, 4), jnp.float32)
    residuals = saved_residuals(loss, params, x)
    shapes = [r.shape for r, _ in residuals]
    assert (5, 4) not in shapes  # the input itself is not counted again
    assert (5, 3) in shapes and (7, 3) in shapes
    for r, weight_copy in residuals:
        # From the input, or from a constant array mixed with a parameter: activations.
        assert weight_copy == (math.prod(r.shape) <= 3), (r.shape, weight_copy)
    assert any(weight_copy for _, weight_copy in residuals)


@pytest.fixture(scope="module")
def remat_reports():
    """Traced (not compiled) plans of the tiny config on fsdp:8, one per remat policy."""
    return {
        remat: plan(
            load_config(TINY, {**_overrides("fsdp:8"), "model.remat": remat}),
            LMTask,
            compile=False,
        )
        for remat in ("none", "dots_saveable", "full")
    }


def test_remat_shrinks_the_activations_the_backward_pass_keeps(remat_reports):
    none = remat_reports["none"]["activation_bytes"]
    dots = remat_reports["dots_saveable"]["activation_bytes"]
    full = remat_reports["full"]["activation_bytes"]
    assert list(none) == ["none"]
    assert list(dots) == ["none", "dots_saveable"] and list(full) == ["none", "full"]
    # Each plan measures no remat beside its own policy, from the same parameters.
    assert dots["none"] == full["none"] == none["none"]
    assert 0 < full["full"] < dots["dots_saveable"] < none["none"]
    # Full remat keeps at least each block's float32 input: 1 row x 16 positions x 32.
    assert full["full"] >= 2 * 16 * 32 * 4
    for report in remat_reports.values():
        assert report["rows_per_device"] == 1  # 8 rows over data x fsdp = 8 devices
        fixed = report["params_bytes"] + report["opt_state_bytes"] + report["grads_bytes"]
        assert report["grads_bytes"] == report["params_bytes"] == FSDP8_PARAM_BYTES
        for policy, activations in report["activation_bytes"].items():
            assert report["total_bytes"][policy] == fixed + activations
        assert "temp_bytes" not in report  # compile=False


def test_plan_text_shows_both_remat_policies_side_by_side(remat_reports):
    text = format_plan(remat_reports["full"])
    lines = text.splitlines()
    header = next(line for line in lines if "model.remat=none" in line)
    assert "model.remat=full" in header and header.index("none") < header.index("full")
    acts = next(line for line in lines if line.startswith("activations / device"))
    total = next(line for line in lines if line.startswith("total / device"))
    assert len(acts.split("B")) == len(total.split("B")) == 3  # two sizes on each line
    assert "gradients / device    10.7 KiB" in text
    assert "one microbatch of 1 row per device" in text


def test_microbatches_divide_the_activations_and_add_a_gradient_sum(remat_reports):
    split = plan(
        load_config(
            TINY, {**_overrides("fsdp:8"), "data.batch_size": "16", "train.microbatches": "2"}
        ),
        LMTask,
        compile=False,
    )
    whole = remat_reports["none"]
    assert split["rows_per_device"] == 1  # 16 rows / 8 devices / 2 microbatches
    assert split["activation_bytes"]["none"] == whole["activation_bytes"]["none"]
    assert split["grads_bytes"] == 2 * split["params_bytes"]
    assert "train.microbatches=2" in format_plan(split)


# The 1B variant: 20 blocks of 12 d^2 + 13 d parameters (fused QKV kernel and bias, output
# projection, two MLP matmuls of width 4d, their biases, two norms), 65 token and 2048
# position embeddings of width d, the final norm; d = 2048.
D = 2048
PARAMS_1B = 20 * (12 * D * D + 13 * D) + 65 * D + 2048 * D + 2 * D
# Replicated under fsdp:8 (no "embed" axis): per block the QKV bias (3 d) and the MLP
# hidden bias (4 d); everything else is split 8 ways along its width.
REPLICATED_1B = 20 * (3 * D + 4 * D)


def _plan_1b(**kwargs):
    config = load_config(str(REPO / "experiments" / "gpt2_small_char.py") + ":plan_1b")
    return plan(config, LMTask, compile=False, **kwargs)


def test_1b_config_on_fsdp8_splits_params_and_optimizer_state_eight_ways():
    report = _plan_1b(activations=False)  # the state only: a second
    assert report["num_params"] == PARAMS_1B == 1_011_496_960
    assert report["layout"] == {"data": 1, "fsdp": 8, "tensor": 1}
    per_device = (PARAMS_1B - REPLICATED_1B) // 8 + REPLICATED_1B
    assert report["params_bytes"] == 4 * per_device  # float32 master weights
    # The replicated biases are 0.03% of the parameters: within 0.2% of an even split.
    assert report["params_bytes"] == pytest.approx(4 * PARAMS_1B / 8, rel=2e-3)
    assert 0 <= report["opt_state_bytes"] - 2 * report["params_bytes"] <= 16  # AdamW moments
    assert "activation_bytes" not in report and "temp_bytes" not in report
    assert "params / device       483.3 MiB" in format_plan(report)


@pytest.mark.slow  # tracing the 20 blocks' backward pass twice takes ~10 s on 2 cores
def test_1b_config_needs_remat_to_fit_an_80_gib_device():
    report = _plan_1b()
    acts = report["activation_bytes"]
    assert list(acts) == ["none", "full"]
    # bfloat16 compute, 4 rows x 2048 positions per device: full remat keeps each block's
    # float32 input (20 x 64 MiB) and little else; without it, the (4, 16, 2048, 2048)
    # attention weights of every block dominate (the CPU's reference attention).
    assert 20 * 4 * 2048 * D * 4 <= acts["full"] < 2 * GIB
    assert acts["none"] > 40 * acts["full"]
    check_fits(report, 80)  # fits with the configured full remat
    unfit = {**report, "total_bytes": {"none": report["total_bytes"]["none"]}}
    with pytest.raises(ConfigError, match=r"needs .* GiB per device with model.remat=none"):
        check_fits(unfit, 80)


# -- --device_memory_gb ------------------------------------------------------------------


def _plan_cli(capsys, *extra):
    args = ["plan", f"--config={TINY}", "--no-compile", "--config.data.batch_size=8"]
    args += ["--config.parallel.devices=0", "--config.parallel.mesh=fsdp:8", *extra]
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err.strip()


BUDGET_GIB = 0.0001  # 104.9 KiB: the tiny config on fsdp:8 fits with full remat only


def test_the_budget_sits_between_no_remat_and_full_remat(remat_reports):
    full = remat_reports["full"]["total_bytes"]
    assert full["full"] < BUDGET_GIB * GIB < full["none"]


def test_plan_cli_refuses_a_layout_over_the_device_memory(capsys, remat_reports):
    code, out, err = _plan_cli(capsys, f"--device_memory_gb={BUDGET_GIB}")
    assert code == 2
    assert len(err.splitlines()) == 1
    total = format_size(remat_reports["none"]["total_bytes"]["none"])
    assert err.startswith(f"error: the plan needs {total} per device with model.remat=none")
    assert "--device_memory_gb=0.0001 allows 104.9 KiB" in err
    for fix in ("fsdp in parallel.mesh, now data:1,fsdp:8,tensor:1", "model.remat=full"):
        assert fix in err
    assert "train.microbatches (now 1)" in err and "data.batch_size (now 8)" in err
    assert "activations / device" in out  # the plan itself is printed first
    assert "Traceback" not in err


def test_plan_cli_accepts_the_same_budget_with_full_remat(capsys):
    code, out, err = _plan_cli(
        capsys, f"--device_memory_gb={BUDGET_GIB}", "--config.model.remat=full"
    )
    assert code == 0, err
    assert "fits in --device_memory_gb=0.0001" in out
    assert "model.remat=none        model.remat=full" in out


def test_plan_cli_refuses_a_non_positive_device_memory(capsys):
    code, out, err = _plan_cli(capsys, "--device_memory_gb=0")
    assert code == 2 and out == ""
    assert err == "error: --device_memory_gb=0 must be > 0 (GiB)"
