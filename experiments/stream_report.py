"""Streams held-out Tiny Shakespeare through the trained ``shakespeare_stream.py`` models
under every cache mode and writes the README's table and plots (issue 14).

For each model (without and with the learned sink token): per-position negative
log-likelihood under ``dense`` (up to ``--dense_capacity`` tokens: it cannot hold more),
``window``, ``sink_window`` and ``recompute``; perplexity against position (PNG); the
attention mass on position 0 per layer on held-out windows of the context (PNG); and
the speed of ``sink_window`` against ``recompute``, measured in this run, interleaved
(sink_window, recompute, sink_window, ... ``--speed_repeats`` times each, medians) so
that load from other processes hits both alike: as scanned chunks (how ``nlpjax eval
--stream`` runs) and at one dispatch per token (how ``nlpjax generate`` runs).
``--reuse_curves`` reads the curves of an earlier run from ``OUT/curves`` instead of
streaming again (they are deterministic), and redoes the speed, mass and plots.

  nlpjax train --config=experiments/shakespeare_stream.py --workdir=/tmp/stream/rope
  nlpjax train --config=experiments/shakespeare_stream.py:sink --workdir=/tmp/stream/sink
  python experiments/stream_report.py --rope=/tmp/stream/rope --sink=/tmp/stream/sink \\
      --out=experiments/results/stream

``--variant=tiny`` is the smoke check: the two models of ``shakespeare_stream.py:tiny``
(context 16; the second with ``--config.model.sink_token=true``), 400 tokens, window 16,
short speed runs; seconds, not the README's numbers.
"""

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import nlpjax
from nlpjax.analysis import probes
from nlpjax.evaluation import stream_eval
from nlpjax.inference import stream_cache
from nlpjax.inference.stream_cache import StreamConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODES = ("dense", "window", "sink_window", "recompute")
COLORS = {"dense": "tab:gray", "window": "tab:red", "sink_window": "tab:blue", "recompute": "k"}


def _modes(args) -> dict[str, StreamConfig]:
    return {
        "dense": StreamConfig("dense", capacity=args.dense_capacity),
        "window": StreamConfig("window", window=args.window),
        "sink_window": StreamConfig("sink_window", args.n_sink, args.window - args.n_sink),
        "recompute": StreamConfig("recompute", window=args.window),
    }


def stream_model(trained, tokens, modes, args, curves: Path) -> dict:
    """Every mode's curve (nll per position) and scanned rate on ``tokens``."""
    out = {}
    for name, cache in modes.items():
        saved = curves / f"{args.current}_{name}.npz"
        if args.reuse_curves and saved.exists():
            nll = np.load(saved)["nll"]
            out[name] = stream_eval.StreamResult(trained.stream_config(cache), nll, float("nan"))
            continue
        resolved = trained.stream_config(cache)
        limit = resolved.capacity + 1 if name == "dense" else tokens.size
        stepper = trained.task.stream_stepper(resolved)
        result = stream_eval.run(stepper, trained.params, tokens[:limit], resolved, args.chunk)
        out[name] = result
        np.savez(saved, nll=result.nll.astype(np.float32))
        print(
            f"  {name}: {result.nll.size} tokens, ppl {result.perplexity:.3f}, "
            f"{result.tokens_per_second:,.0f} tok/s",
            flush=True,
        )
    return out


def scan_rate(trained, cache: StreamConfig, tokens, count: int, chunk: int) -> float:
    """Tokens per second of the scanned scorer ``nlpjax eval --stream`` uses, over ``count``
    tokens (whole chunks) after a compiled warm-up chunk."""
    stepper = trained.task.stream_stepper(trained.stream_config(cache))
    score = stream_cache.chunk_scorer(stepper, chunk)
    params = stream_cache.on_device(trained.params)
    state = stream_cache.on_device(stepper.init(params, 1))
    nll, state = score(params, state, tokens[:chunk], tokens[1 : chunk + 1])  # compile
    jax.block_until_ready(nll)
    start = time.perf_counter()
    for begin in range(chunk, chunk + count, chunk):
        inputs, targets = tokens[begin : begin + chunk], tokens[begin + 1 : begin + 1 + chunk]
        nll, state = score(params, state, inputs, targets)
    jax.block_until_ready(nll)
    return (count // chunk * chunk) / (time.perf_counter() - start)


def interleaved_speed(trained, modes, tokens, args) -> dict:
    """Median tokens/s of sink_window and recompute, measured alternately."""
    names = ("sink_window", "recompute")
    scans = {n: [] for n in names}
    dispatches = {n: [] for n in names}
    for _ in range(args.speed_repeats):
        for name in names:
            mode = modes[name]
            scans[name].append(scan_rate(trained, mode, tokens, args.speed_tokens, args.chunk))
            dispatches[name].append(dispatch_rate(trained, mode, tokens, args.dispatch_steps))
    median = lambda xs: float(np.median(xs))  # noqa: E731
    return {
        "scan": {n: median(scans[n]) for n in names},
        "dispatch": {n: median(dispatches[n]) for n in names},
        "scan_all": scans,
        "dispatch_all": dispatches,
    }


def dispatch_rate(trained, cache: StreamConfig, tokens, steps: int) -> float:
    """Tokens per second at one jitted step per token (how ``nlpjax generate`` runs)."""
    stepper = trained.task.stream_stepper(trained.stream_config(cache))
    step = jax.jit(stepper.step)
    params = stream_cache.on_device(trained.params)
    state = stream_cache.on_device(stepper.init(params, 1))
    for token in tokens[:8]:  # compile and fill a little
        logits, state = step(params, state, jnp.asarray([token]))
    jax.block_until_ready(logits)
    start = time.perf_counter()
    for token in tokens[8 : 8 + steps]:
        logits, state = step(params, state, jnp.asarray([token]))
    jax.block_until_ready(logits)
    return steps / (time.perf_counter() - start)


def first_position_mass(trained, tokens, windows: int) -> dict[str, list[float]]:
    """Per layer (mean over heads): attention of the tokens on position 0 (the sink when
    the model has one) and on the first text token, over ``windows`` held-out windows."""
    context = trained.config.model.max_len
    starts = np.linspace(0, tokens.size - context - 1, windows).astype(int)
    batch = np.stack([tokens[s : s + context] for s in starts])
    mass = probes.attention_mass(probes.collect(trained.task.model, trained.params, batch))
    return {k: mass[k].mean(axis=1).tolist() for k in ("first", "first_token")}


def plot_curves(results: dict, path: Path, window: int, zoom: int, bins: tuple[int, int]):
    fig, axes = plt.subplots(len(results), 2, figsize=(12, 4 * len(results)), squeeze=False)
    for row, (model, modes) in enumerate(results.items()):
        for col, (limit, size) in enumerate(((zoom, bins[0]), (None, bins[1]))):
            ax = axes[row, col]
            for name, result in modes.items():
                nll = result.nll if limit is None else result.nll[:limit]
                if nll.size < size:
                    continue
                starts, ppl = stream_eval.binned_perplexity(nll, size)
                ax.plot(starts, ppl, label=name, color=COLORS[name], lw=1.2)
            if limit:
                ax.axvline(window, ls=":", color="k", lw=0.8, label="cache full (first eviction)")
                ax.set_yscale("log")
            span = f"first {limit} positions" if limit else "whole stream (dense: 2048 only)"
            ax.set_title(f"{model}: {span}, bins of {size}")
            ax.set_xlabel("position in the stream")
            ax.set_ylabel("perplexity per character")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mass(masses: dict, path: Path):
    fig, ax = plt.subplots(figsize=(7, 4))
    layers = np.arange(len(next(iter(masses.values()))["first"]))
    width = 0.8 / (2 * len(masses))
    i = 0
    for model, mass in masses.items():
        for key, label in (("first", "position 0"), ("first_token", "first text token")):
            if model == "rope" and key == "first_token":
                continue  # without a sink, position 0 is the first text token
            ax.bar(layers + i * width, mass[key], width, label=f"{model}: {label}")
            i += 1
    ax.set_xticks(layers + width * (i - 1) / 2, [f"layer {x}" for x in layers])
    ax.set_ylabel("mean attention mass")
    ax.set_title("attention on position 0 per layer (held-out windows of 128)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Flag defaults per variant (flags given on the command line still win).
VARIANTS = {
    "default": {},
    "tiny": {
        "max_tokens": 400,
        "window": 16,
        "n_sink": 2,
        "dense_capacity": 64,
        "chunk": 64,
        "dispatch_steps": 20,
        "speed_tokens": 128,
        "speed_repeats": 1,
        "out": "/tmp/stream_report_tiny",
    },
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rope", required=True, help="workdir of shakespeare_stream.py")
    parser.add_argument("--sink", required=True, help="workdir of shakespeare_stream.py:sink")
    parser.add_argument("--out", default="experiments/results/stream")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--max_tokens", type=int, default=0, help="0: the whole split")
    parser.add_argument("--window", type=int, default=128, help="cache size of every mode")
    parser.add_argument("--n_sink", type=int, default=4)
    parser.add_argument("--dense_capacity", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--dispatch_steps", type=int, default=300)
    parser.add_argument("--speed_tokens", type=int, default=4096)
    parser.add_argument("--speed_repeats", type=int, default=3)
    parser.add_argument("--reuse_curves", action="store_true")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    known, _ = parser.parse_known_args()
    parser.set_defaults(**VARIANTS[known.variant])
    args = parser.parse_args()
    out = Path(args.out)
    curves = out / "curves"  # large: not committed (experiments/results/stream/.gitignore)
    curves.mkdir(parents=True, exist_ok=True)
    results, masses, table = {}, {}, {}
    for model, workdir in (("rope", args.rope), ("sink", args.sink)):
        trained = nlpjax.load(workdir)
        tokens = trained.task.tokens(args.split)
        tokens = tokens[: args.max_tokens] if args.max_tokens else tokens
        print(f"{model}: {workdir} step {trained.step}, {tokens.size} {args.split} tokens")
        modes = _modes(args)
        args.current = model
        results[model] = stream_model(trained, tokens, modes, args, curves)
        masses[model] = first_position_mass(trained, tokens, windows=32)
        row = {name: r.summary() for name, r in results[model].items()}
        row["speed"] = interleaved_speed(trained, modes, tokens, args)
        print(f"  speed (tok/s, medians): {row['speed']['scan']} {row['speed']['dispatch']}")
        row["attention_mass"] = masses[model]
        table[model] = row
    plot_curves(results, out / "stream_perplexity.png", args.window, 1024, (32, 1024))
    plot_mass(masses, out / "stream_attention_mass.png")
    (out / "stream_report.json").write_text(json.dumps({"args": vars(args), **table}, indent=1))
    print(markdown(table, args, curves))


def markdown(table: dict, args, curves: Path) -> str:
    """The README table: perplexity per mode (and where), speeds, sink ratios."""
    lines = [
        "| model | dense, first 128 | dense, 2048 kept | window | sink_window | recompute "
        "| sink_window / recompute ppl | sink_window / recompute speed (scan, dispatch) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, row in table.items():
        dense_nll = np.load(curves / f"{model}_dense.npz")["nll"]
        ppl = {k: row[k]["perplexity"] for k in MODES}
        speed = row["speed"]
        scan = speed["scan"]["sink_window"] / speed["scan"]["recompute"]
        dispatch = speed["dispatch"]["sink_window"] / speed["dispatch"]["recompute"]
        lines.append(
            f"| {model} | {np.exp(dense_nll[: args.window].mean()):.3f} "
            f"| {ppl['dense']:.3f} | {ppl['window']:.3f} "
            f"| {ppl['sink_window']:.3f} | {ppl['recompute']:.3f} "
            f"| {ppl['sink_window'] / ppl['recompute']:.4f} | {scan:.1f}x, {dispatch:.1f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
