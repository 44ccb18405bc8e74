"""``nlpjax plan``: per-device bytes for data vs fsdp layouts, the CLI and --simulate_devices."""

import os
import subprocess
import sys

import pytest

from nlpjax.api import load_config
from nlpjax.cli import main
from nlpjax.tasks.lm import LMTask
from nlpjax.training.plan import format_plan, plan
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
