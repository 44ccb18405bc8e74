"""Metric writers (metrics.jsonl and TensorBoard) and the progress bar."""

import json
import math
import re
import sys
import time

import jax
import jax.numpy as jnp
import tqdm
from etils import epath

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: epath.PathLike) -> list[dict]:
    path = epath.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl``, mirrors to TensorBoard.

    On resume from step ``resume_step``, lines for later steps (written after the last
    checkpoint by the interrupted run) are dropped, so the file reads as one clean run.
    Only process 0 writes. On object stores (``gs://``), which cannot append, the file
    is rewritten whole at each write.
    """

    def __init__(self, workdir: epath.PathLike, resume_step: int = 0, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = epath.Path(workdir) / METRICS_FILE
        self._remote = "://" in str(self.path)
        self._rows: list[dict] = []
        self._tb = None
        if not self.active:
            return
        if self.path.exists():
            self._rows = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
            self._rewrite()
        if not self._remote:
            self._file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            self._tb = summary_writer_class()(str(epath.Path(workdir) / "tensorboard"))

    def _rewrite(self) -> None:
        tmp = self.path.parent / (self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self._rows))
        tmp.replace(self.path)

    def write(self, step: int, scalars: dict) -> None:
        if not self.active:
            return
        row = {"step": int(step), **{k: _to_py(v) for k, v in scalars.items()}}
        if self._remote:
            self._rows.append(row)
            self._rewrite()
        else:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float | int) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if not self.active:
            return
        if not self._remote:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without importing torch.

    tensorboardX imports torch at import time when it is installed (the ``bench`` extra
    installs it), only to accept torch tensors, which nlpjax never passes; that import
    takes seconds of every run's start. Unless torch is already loaded, it is hidden
    for the import (``sys.modules[name] = None`` makes ``import torch`` raise
    ImportError, which tensorboardX handles) and unhidden after, so a later
    ``import torch`` works as usual.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


def _to_py(v):
    v = v.item() if hasattr(v, "item") else v
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


# Dense (no sparsity) peak TFLOP/s of one chip, per compute dtype. "float32" is what XLA
# runs a float32 matmul at under jax's default matmul precision: TF32 tensor cores on
# NVIDIA Ampere and Hopper, one bfloat16 pass on TPU (https://docs.jax.dev/en/latest/201/
# precision.html); with jax_default_matmul_precision="highest" set train.peak_tflops.
# NVIDIA datasheets quote tensor-core numbers "with sparsity": the dense peak is half.
#   H100 SXM (and H200 SXM, GH200): BF16/FP16 1,979 -> 989.4, TF32 989 -> 494.7
#   H100 PCIe: BF16/FP16 1,513 -> 756.5, TF32 756 -> 378;  H100 NVL and H200 NVL:
#   BF16/FP16 1,671 -> 835.5, TF32 835 -> 417.5;  A100 (SXM and PCIe): BF16/FP16 312,
#   TF32 156 (dense);  L4: BF16/FP16 242 -> 121, TF32 120 -> 60.
# TPU (Cloud TPU system architecture pages, bf16): v4 275, v5e 197, v5p 459, v6e 918;
# float16 has no TPU entry (MFU is then omitted). Checked on an NVIDIA H200 (jax 0.11.2,
# device_kind "NVIDIA H200"; benchmarks/matmul_peak.py): an 8192^3 float32 matmul ran at
# 384 TFLOP/s at default precision and 50 at "highest", i.e. TF32, not FP32 (67 peak).


def _nvidia(chip: str, half: float, tf32: float) -> dict[tuple[str, str], float]:
    return {(chip, "bfloat16"): half, (chip, "float16"): half, (chip, "float32"): tf32}


def _tpu(chip: str, bf16: float) -> dict[tuple[str, str], float]:
    return {(chip, "bfloat16"): bf16, (chip, "float32"): bf16}


PEAK_TFLOPS: dict[tuple[str, str], float] = {
    **_nvidia("h100-sxm", 989.4, 494.7),
    **_nvidia("h100-pcie", 756.5, 378.0),
    **_nvidia("h100-nvl", 835.5, 417.5),
    **_nvidia("h200-sxm", 989.4, 494.7),
    **_nvidia("h200-nvl", 835.5, 417.5),
    **_nvidia("a100", 312.0, 156.0),
    **_nvidia("l4", 121.0, 60.0),
    **_tpu("tpu-v4", 275.0),
    **_tpu("tpu-v5e", 197.0),
    **_tpu("tpu-v5p", 459.0),
    **_tpu("tpu-v6e", 918.0),
}

# jax device_kind -> chip: the first rule whose words all appear in the device kind
# (lowercased, split on non-alphanumerics, so "L4" does not match "L40S"). Examples:
# "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
# "NVIDIA A100-SXM4-80GB", "TPU v5 lite" (v5e), "TPU v5" (v5p), "TPU v6 lite" (v6e).
CHIP_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("h100", "nvl"), "h100-nvl"),
    (("h100", "pcie"), "h100-pcie"),
    (("h100",), "h100-sxm"),
    (("h200", "nvl"), "h200-nvl"),
    (("h200",), "h200-sxm"),
    (("gh200",), "h100-sxm"),
    (("a100",), "a100"),
    (("l4",), "l4"),
    (("tpu", "v4"), "tpu-v4"),
    (("tpu", "v5", "lite"), "tpu-v5e"),
    (("tpu", "v5e"), "tpu-v5e"),
    (("tpu", "v5p"), "tpu-v5p"),
    (("tpu", "v5"), "tpu-v5p"),
    (("tpu", "v6", "lite"), "tpu-v6e"),
    (("tpu", "v6e"), "tpu-v6e"),
)


def chip_of(device_kind: str) -> str | None:
    """The chip name of a jax ``device_kind`` string (see ``CHIP_RULES``), or None."""
    words = set(re.findall(r"[a-z0-9]+", device_kind.lower()))
    for required, chip in CHIP_RULES:
        if words.issuperset(required):
            return chip
    return None


def peak_flops(device_kind: str, dtype="float32", override_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device computing in ``dtype``: the override, else the table.

    Returns None for an unknown chip or dtype (MFU is then not reported).
    """
    if override_tflops > 0:
        return override_tflops * 1e12
    tflops = PEAK_TFLOPS.get((chip_of(device_kind), jnp.dtype(dtype).name))
    return None if tflops is None else tflops * 1e12


class Throughput:
    """Tokens/s, tokens/s/device and MFU between log points (compilation excluded).

    Args:
      tokens_per_step: global tokens in one training step.
      flops_per_token: training FLOPs per token (forward + backward).
      devices: the devices the step runs on (their ``device_kind`` picks the peak).
      peak_tflops: per-device peak override (``train.peak_tflops``); 0 = from the table.
      dtype: the model's compute dtype, which picks the peak (float32 by default).
      clock: seconds as a float (tests pass a fake one).
    """

    def __init__(
        self,
        tokens_per_step,
        flops_per_token,
        devices,
        peak_tflops: float = 0.0,
        *,
        dtype="float32",
        clock=time.perf_counter,
    ):
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.num_devices = len(devices)
        self.peak = peak_flops(devices[0].device_kind, dtype, peak_tflops)
        self._clock = clock
        self._mark, self._tokens = None, 0

    def tick(self, metrics, steps: int, report: bool) -> dict | None:
        """Called after each dispatch; returns rates when ``report`` (blocks then)."""
        if self._mark is None:  # the first dispatch includes compilation
            jax.block_until_ready(metrics)
            self._mark = self._clock()
            return None
        self._tokens += steps * self.tokens_per_step
        if not report:
            return None
        jax.block_until_ready(metrics)
        now = self._clock()
        tps = self._tokens / (now - self._mark)
        self._mark, self._tokens = now, 0
        rates = {"tokens_per_sec": tps, "tokens_per_sec_per_device": tps / self.num_devices}
        if self.peak:
            rates["mfu"] = tps * self.flops_per_token / (self.peak * self.num_devices)
        return rates


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm.tqdm:
    """Steps progress with rate and ETA (tqdm), on process 0 only."""
    return tqdm.tqdm(
        total=total,
        initial=initial,
        unit="step",
        dynamic_ncols=True,
        disable=not enabled or jax.process_index() != 0,
        smoothing=0.1,
    )
