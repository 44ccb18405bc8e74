"""Metric writers (metrics.jsonl and TensorBoard) and the progress bar."""

import json
import math
from pathlib import Path

import jax
import tqdm

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl``, mirrors to TensorBoard.

    On resume from step ``resume_step``, lines for later steps (written after the last
    checkpoint by the interrupted run) are dropped, so the file reads as one clean run.
    Only process 0 writes.
    """

    def __init__(self, workdir: str | Path, resume_step: int = 0, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = Path(workdir) / METRICS_FILE
        self._tb = None
        if not self.active:
            return
        if self.path.exists():
            kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(self.path)
        self._file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, scalars: dict) -> None:
        if not self.active:
            return
        row = {"step": int(step), **{k: _to_py(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float | int) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if not self.active:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _to_py(v):
    v = v.item() if hasattr(v, "item") else v
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


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
