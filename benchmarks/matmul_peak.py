"""Measured matmul throughput of this device next to the MFU peak table's entry.

    .venv/bin/python benchmarks/matmul_peak.py [--n=8192] [--reps=10]

Times an n x n @ n x n product in float32 at jax's default matmul precision (what an
f32 model's matmuls run at), float32 at "highest" precision, bfloat16 and float16, and
prints each next to ``nlpjax.training.metrics.peak_flops`` for the device's
``device_kind``. On NVIDIA Ampere/Hopper the default float32 rate lands well above the
chip's non-tensor FP32 peak (TF32 tensor cores), which is why the table's float32 entry
is the TF32 one. Random inputs; the best of ``--reps`` timed runs after one warm-up.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from nlpjax.training.metrics import chip_of, peak_flops  # noqa: E402


def best_seconds(fn, a, reps: int) -> float:
    fn(a, a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    kind = device.device_kind
    print(f"jax {jax.__version__}, device_kind {kind!r} -> chip {chip_of(kind)!r}")
    x = jax.random.normal(jax.random.PRNGKey(0), (args.n, args.n), jnp.float32)
    flops = 2.0 * args.n**3
    results = {}
    cases = (
        ("float32 (default precision)", jnp.float32, None, "float32"),
        ("float32 (highest precision)", jnp.float32, "highest", None),
        ("bfloat16", jnp.bfloat16, None, "bfloat16"),
        ("float16", jnp.float16, None, "float16"),
    )
    for name, dtype, precision, table_dtype in cases:
        mm = jax.jit(lambda a, b, p=precision: jnp.dot(a, b, precision=p))
        seconds = best_seconds(mm, x.astype(dtype), args.reps)
        measured = flops / seconds / 1e12
        peak = peak_flops(kind, table_dtype) if table_dtype else None
        table = f"{peak / 1e12:7.1f}" if peak else "      -"
        share = f"{measured / (peak / 1e12):6.1%}" if peak else "     -"
        print(f"{name:30s} measured {measured:8.1f} TFLOP/s   table {table}   {share}")
        results[name] = {"measured_tflops": measured, "table_tflops": peak and peak / 1e12}
    return results


if __name__ == "__main__":
    main()
