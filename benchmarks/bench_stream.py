"""Tokens/s of the ``sink_window`` streaming cache against ``recompute`` at context 128,
for decoders of growing width (random weights: speed does not depend on training).

Both run the scanned scorer of ``nlpjax eval --stream`` (``stream_cache.chunk_scorer``),
measured alternately (sink_window, recompute, sink_window, ...) ``--repeats`` times after
a compiled warm-up; medians and their ratio, from the same run.

  python benchmarks/bench_stream.py --widths=64,128,256
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from nlpjax.inference import stream_cache
from nlpjax.inference.stream_cache import StreamConfig
from nlpjax.models.decoder import Decoder, DecoderConfig


def rate(token_stepper, params, tokens, chunk: int) -> float:
    """Tokens per second over ``tokens`` (whole chunks) after one compiled chunk."""
    score = stream_cache.chunk_scorer(token_stepper, chunk)
    params = stream_cache.on_device(params)
    state = stream_cache.on_device(token_stepper.init(params, 1))
    nll, state = score(params, state, tokens[:chunk], tokens[1 : chunk + 1])
    jax.block_until_ready(nll)
    start = time.perf_counter()
    for begin in range(chunk, tokens.size - chunk, chunk):
        inputs, targets = tokens[begin : begin + chunk], tokens[begin + 1 : begin + 1 + chunk]
        nll, state = score(params, state, inputs, targets)
    jax.block_until_ready(nll)
    done = len(range(chunk, tokens.size - chunk, chunk)) * chunk
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="64,128,256")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--n_sink", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokens = np.random.RandomState(0).randint(0, 65, args.tokens + args.chunk + 1)
    tokens = tokens.astype(np.int32)
    print(f"{jax.devices()[0].device_kind}, {args.layers} layers, context {args.context}")
    print("| width | params | sink_window tok/s | recompute tok/s | ratio |")
    print("|---|---|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        cfg = DecoderConfig(
            vocab_size=65,
            num_layers=args.layers,
            num_heads=4,
            d_model=width,
            d_ff=4 * width,
            max_len=args.context,
            positions="rope",
        )
        model = Decoder(cfg)
        params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, args.context), jnp.int32))
        params = params["params"]
        count = sum(x.size for x in jax.tree_util.tree_leaves(params))
        modes = {
            "sink_window": StreamConfig("sink_window", args.n_sink, args.context - args.n_sink),
            "recompute": StreamConfig("recompute", window=args.context),
        }
        resolved = {k: stream_cache.resolve(c, cfg) for k, c in modes.items()}
        steppers = {k: stream_cache.stepper(model, c) for k, c in resolved.items()}
        rates = {k: [] for k in modes}
        for _ in range(args.repeats):
            for name, token_stepper in steppers.items():
                rates[name].append(rate(token_stepper, params, tokens, args.chunk))
        sink, recompute = (float(np.median(rates[k])) for k in modes)
        print(f"| {width} | {count:,} | {sink:,.0f} | {recompute:,.0f} | {sink / recompute:.1f}x |")


if __name__ == "__main__":
    main()
