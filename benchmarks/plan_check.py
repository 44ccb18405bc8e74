"""``nlpjax plan``'s memory estimate against the peak a real training step reaches.

For each ``model.remat`` policy: the plan's per-device total (params + optimizer state +
gradients + activations, from ``nlpjax.training.plan``), then a few real training steps
of the same config on this machine's first device and the device's
``peak_bytes_in_use`` (GPU/TPU; CPU devices report no memory statistics), and the
tokens/s of those steps (what the remat costs in speed).

    python benchmarks/plan_check.py --config=experiments/gpt2_small_char.py:bench \
        --remat=none,full --steps=10

Each policy runs in its own process (a fresh peak counter). Prints one JSON line per
policy and a table.
"""

import argparse
import json
import subprocess
import sys
import time


def measure(config_spec: str, remat: str, steps: int) -> dict:
    import jax

    from nlpjax import api
    from nlpjax.training import parallel
    from nlpjax.training import plan as plan_lib
    from nlpjax.training.step import make_train_step

    config = api.load_config(
        config_spec,
        {"model.remat": remat, "parallel.devices": "1", "parallel.mesh": "data:1"},
    )
    report = plan_lib.plan(config, api.task_class(config), compile=False)
    run = api.build_run(config, None, parallel.build_placement(config.parallel))
    step = jax.jit(make_train_step(run.task, run.tx, run.schedule), donate_argnums=0)
    it = run.task.train_iterator()
    state = run.state
    state, metrics = step(state, next(it))  # compile
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, next(it))
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "remat": remat,
        "device": jax.devices()[0].device_kind,
        "plan_total_bytes": report["total_bytes"][remat],
        "plan_activation_bytes": report["activation_bytes"][remat],
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
        "tokens_per_sec": steps * run.task.tokens_per_batch() / seconds,
        "loss": float(metrics["loss"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--remat", default="none,full")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one policy
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.config, args.one, args.steps)))
        return 0
    rows = []
    for remat in args.remat.split(","):
        cmd = [sys.executable, __file__, f"--config={args.config}", f"--steps={args.steps}"]
        proc = subprocess.run([*cmd, f"--one={remat}"], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            print(f"remat={remat}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}")
            continue
        rows.append(json.loads(lines[-1]))
        print(lines[-1], flush=True)
    gib = 1024**3
    print("\n| remat | plan total GiB | plan activations GiB | measured peak GiB | tokens/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        peak = r["peak_bytes_in_use"]
        peak = f"{peak / gib:.2f}" if peak else "n/a (no device statistics)"
        print(
            f"| {r['remat']} | {r['plan_total_bytes'] / gib:.2f} | "
            f"{r['plan_activation_bytes'] / gib:.2f} | {peak} | {r['tokens_per_sec']:,.0f} |"
        )
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
