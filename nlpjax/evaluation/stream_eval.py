"""Perplexity of a long text read token by token through a streaming cache
(``nlpjax eval --stream``): the per-position curve and the decoding rate.

The text is one stream (a split's documents joined); every token is predicted from what
the cache mode keeps of the tokens before it. ``write`` saves the curve as
``stream_eval_<mode>.npz`` (``nll``: nats per predicted position 1..N-1) and a summary
``stream_eval_<mode>.json`` in the workdir.
"""

import dataclasses
import json
import math
import time

import numpy as np
import tqdm
from etils import epath
from jaxtyping import Float

from nlpjax.inference import stream_cache


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """One streamed evaluation.

    Attributes:
      cache: the resolved mode and sizes.
      nll: nats of each predicted token (positions 1..N-1 of the stream).
      tokens_per_second: steps per second after the first chunk (which compiles).
    """

    cache: stream_cache.StreamConfig
    nll: Float[np.ndarray, " N"]
    tokens_per_second: float

    @property
    def loss(self) -> float:
        return float(np.mean(self.nll))

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))

    def summary(self) -> dict:
        return {
            **dataclasses.asdict(self.cache),
            "tokens": int(self.nll.size),
            "loss": self.loss,
            "perplexity": self.perplexity,
            "tokens_per_second": self.tokens_per_second,
        }


def run(
    token_stepper,
    params,
    tokens_N: np.ndarray,
    cache: stream_cache.StreamConfig,
    chunk: int = 256,
    progress: bool = True,
) -> StreamResult:
    """Streams ``tokens_N`` through ``token_stepper`` with a progress bar (rate, ETA)."""
    total = max(int(np.asarray(tokens_N).size) - 1, 0)
    stream_cache.check_room(token_stepper.limit, total, "the stream (--max_tokens)")
    bar = tqdm.tqdm(
        total=total, unit="tok", desc=cache.mode, disable=not progress, dynamic_ncols=True
    )
    marks: list[tuple[float, int]] = []  # (time, positions done) after each chunk

    def on_chunk(done: int) -> None:
        bar.update(done)
        marks.append((time.perf_counter(), (marks[-1][1] if marks else 0) + done))

    with bar:
        nll = stream_cache.stream_nll(token_stepper, params, tokens_N, chunk, on_chunk)
    rate = float("nan")
    if len(marks) > 1:  # the first chunk includes compilation
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        rate = (n1 - n0) / max(t1 - t0, 1e-9)
    return StreamResult(cache, nll, rate)


def write(result: StreamResult, workdir: epath.PathLike) -> tuple[epath.Path, epath.Path]:
    """Saves the curve (``.npz``) and the summary (``.json``); returns their paths."""
    workdir = epath.Path(workdir)
    stem = f"stream_eval_{result.cache.mode}"
    curve, summary = workdir / f"{stem}.npz", workdir / f"{stem}.json"
    with curve.open("wb") as f:
        np.savez(f, nll=result.nll.astype(np.float32))
    summary.write_text(json.dumps(result.summary(), indent=1) + "\n")
    return curve, summary


def binned_perplexity(nll: Float[np.ndarray, " N"], bin_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin start positions, perplexity per bin) of a per-position curve (the last, partial
    bin dropped unless it is the only one)."""
    count = max(nll.size // bin_size, 1)
    used = nll[: count * bin_size] if nll.size >= bin_size else nll
    means = used.reshape(count, -1).mean(axis=1)
    starts = 1 + np.arange(count) * (used.size // count)  # position 1 is the first predicted
    return starts, np.exp(means)
