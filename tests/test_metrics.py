"""Throughput and MFU: the chip/dtype peak table, Throughput on a fake clock, FLOPs/token."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.models.decoder import DecoderConfig, flops_per_token
from nlpjax.training.metrics import Throughput, chip_of, peak_flops


@pytest.mark.parametrize(
    "kind, chip",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA H200 NVL", "h200-nvl"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100 80GB PCIe", "a100"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", None),  # not an L4
        ("TPU v4", "tpu-v4"),
        ("TPU v5 lite", "tpu-v5e"),
        ("TPU v5", "tpu-v5p"),
        ("TPU v6 lite", "tpu-v6e"),
        ("cpu", None),
    ],
)
def test_device_kind_to_chip(kind, chip):
    assert chip_of(kind) == chip


def test_peak_depends_on_chip_and_compute_dtype():
    sxm, pcie = "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"
    assert peak_flops(sxm, "bfloat16") == pytest.approx(989.4e12)
    assert peak_flops(sxm, jnp.float16) == pytest.approx(989.4e12)
    assert peak_flops(sxm, jnp.float32) == pytest.approx(494.7e12)  # TF32, XLA's default
    assert peak_flops(pcie, jnp.bfloat16) == pytest.approx(756.5e12)
    assert peak_flops(pcie, "float32") == pytest.approx(378e12)
    assert peak_flops("TPU v5 lite", "float32") == peak_flops("TPU v5 lite", "bfloat16") == 197e12
    assert peak_flops("TPU v4", "float16") is None
    assert peak_flops("cpu", "float32") is None
    assert peak_flops("cpu", "float32", override_tflops=0.2) == pytest.approx(0.2e12)
    assert peak_flops(sxm, "bfloat16", override_tflops=500) == pytest.approx(500e12)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _devices(kind, n):
    return [types.SimpleNamespace(device_kind=kind) for _ in range(n)]


def test_throughput_excludes_the_first_dispatch_and_reports_mfu():
    clock = FakeClock()
    tp = Throughput(1000, 6e6, _devices("NVIDIA H100 PCIe", 2), dtype="bfloat16", clock=clock)
    metrics = {"loss": np.zeros(5)}
    assert tp.tick(metrics, 5, report=True) is None  # compilation: starts the clock only
    clock.now += 2.0
    assert tp.tick(metrics, 5, report=False) is None
    clock.now += 3.0
    rates = tp.tick(metrics, 5, report=True)
    tps = 10 * 1000 / 5.0
    assert rates["tokens_per_sec"] == pytest.approx(tps)
    assert rates["tokens_per_sec_per_device"] == pytest.approx(tps / 2)
    assert rates["mfu"] == pytest.approx(tps * 6e6 / (756.5e12 * 2))
    clock.now += 1.0  # the window restarts after each report
    assert tp.tick(metrics, 5, report=True)["tokens_per_sec"] == pytest.approx(5000.0)


def test_float32_mfu_uses_the_tf32_peak_and_cpu_reports_no_mfu():
    clock = FakeClock()
    f32 = Throughput(100, 1e9, _devices("NVIDIA H100 80GB HBM3", 1), clock=clock)
    bf16 = Throughput(100, 1e9, _devices("NVIDIA H100 80GB HBM3", 1), dtype=jnp.bfloat16)
    assert f32.peak == pytest.approx(494.7e12) and bf16.peak == pytest.approx(989.4e12)
    cpu = Throughput(100, 1e9, _devices("cpu", 1), clock=clock)
    cpu.tick({}, 1, True)
    clock.now += 1.0
    assert set(cpu.tick({}, 1, True)) == {"tokens_per_sec", "tokens_per_sec_per_device"}
    overridden = Throughput(100, 1e9, _devices("cpu", 1), peak_tflops=0.5)
    assert overridden.peak == pytest.approx(0.5e12)


def test_flops_per_token_matches_a_hand_count():
    cfg = DecoderConfig(vocab_size=11, num_layers=2, num_heads=2, d_model=16, d_ff=24)
    # Per layer: QKV 16x48 + out 16x16 + MLP 16x24 + 24x16 = 768 + 256 + 384 + 384 = 1792
    # weights; 2 layers = 3584, plus the (tied) output projection 16x11 = 176: 3760. Each
    # weight costs 2 FLOPs forward and 4 backward per token: 6 * 3760 = 22,560. Attention
    # scores and values, context 8: per layer 2 * 8 * 16 (QK^T) + 2 * 8 * 16 (AV) = 512
    # forward FLOPs per token, x3 for training, x2 layers = 3,072. Total 25,632.
    assert flops_per_token(cfg, context=8) == 25_632


def test_metric_writer_does_not_import_torch(tmp_path, monkeypatch):
    """tensorboardX imports torch when it is installed (seconds at every run's start);
    MetricWriter hides it for that import and unhides it after (no ``None`` left in
    ``sys.modules``, so a later ``import torch`` works). Run in a fresh import state:
    tensorboardX and torch are taken out of ``sys.modules`` for the test (monkeypatch
    puts them back)."""
    import importlib.util
    import sys

    from nlpjax.training.metrics import MetricWriter

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (the bench extra installs it)")
    for name in [n for n in sys.modules if n.split(".")[0] in ("torch", "tensorboardX")]:
        monkeypatch.delitem(sys.modules, name)
    writer = MetricWriter(tmp_path)
    writer.write(1, {"train/loss": 2.5})
    writer.close()
    assert "tensorboardX" in sys.modules and "torch" not in sys.modules
    assert list((tmp_path / "tensorboard").iterdir())  # the event file was written
