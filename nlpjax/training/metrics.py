"""Metric writers (metrics.jsonl and TensorBoard) and the progress bar."""

import json
import math
import time

import jax
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
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

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


def _to_py(v):
    v = v.item() if hasattr(v, "item") else v
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


# Dense peak TFLOP/s per chip (bf16 on accelerators), by a lowercase substring of
# jax's device_kind. Override with train.peak_tflops for other chips or dtypes.
PEAK_TFLOPS = {
    "tpu v4": 275.0,
    "tpu v5 lite": 197.0,
    "tpu v5e": 197.0,
    "tpu v5p": 459.0,
    "tpu v5": 459.0,
    "tpu v6 lite": 918.0,
    "tpu v6e": 918.0,
    "h200": 989.0,
    "h100": 989.0,
    "a100": 312.0,
    "l4": 121.0,
}


def peak_flops(device_kind: str, override_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device: the override, else the table, else None (unknown)."""
    if override_tflops > 0:
        return override_tflops * 1e12
    kind = device_kind.lower()
    for name, tflops in PEAK_TFLOPS.items():
        if name in kind:
            return tflops * 1e12
    return None


class Throughput:
    """Tokens/s, tokens/s/device and MFU between log points (compilation excluded)."""

    def __init__(self, tokens_per_step, flops_per_token, devices, peak_tflops: float = 0.0):
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.num_devices = len(devices)
        self.peak = peak_flops(devices[0].device_kind, peak_tflops)
        self._mark, self._tokens = None, 0

    def tick(self, metrics, steps: int, report: bool) -> dict | None:
        """Called after each dispatch; returns rates when ``report`` (blocks then)."""
        if self._mark is None:  # the first dispatch includes compilation
            jax.block_until_ready(metrics)
            self._mark = time.perf_counter()
            return None
        self._tokens += steps * self.tokens_per_step
        if not report:
            return None
        jax.block_until_ready(metrics)
        now = time.perf_counter()
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
