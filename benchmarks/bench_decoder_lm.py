"""Training-step speed: nlpjax decoder LM against the same model in PyTorch eager.

    .venv/bin/python benchmarks/bench_decoder_lm.py [--steps=50] [--rounds=5]
        [--steps_per_dispatch=10] [--xla_options=NAME=VALUE,...] [--json=results.json]

Both sides train the char LM of ``experiments/shakespeare_char.py`` (4 layers, width 128,
context 64, batch 12, vocab 65) on random tokens: nlpjax through its real training step
(``make_train_step`` + ``make_multi_step``, ``make_optimizer``, ``TrainState``), PyTorch
through ``benchmarks/torch_decoder.py`` (same architecture, init, loss and AdamW). Rounds
alternate [nlpjax N steps, torch N steps] in one process; each framework's median round
is reported (and its fastest). Compilation and warm-up steps are excluded.

MFU = flops_per_token(model, context) * tokens/s / peak, where the peak is measured in
the same run as the throughput of a 2048^3 f32 matmul, best of a measurement before and
one after the timed rounds (nlpjax's MFU uses jax's peak, torch's uses torch's).
Before timing, both models are loaded with the same parameters and must give the same
loss on the same batch (a guard that they train the same model).
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch_decoder  # noqa: E402

from nlpjax.api import load_config  # noqa: E402
from nlpjax.models.decoder import Decoder, flops_per_token  # noqa: E402
from nlpjax.tasks.lm import LMTask  # noqa: E402
from nlpjax.training.optim import make_optimizer, make_schedule  # noqa: E402
from nlpjax.training.parallel import compiler_options  # noqa: E402
from nlpjax.training.state import TrainState  # noqa: E402
from nlpjax.training.step import make_multi_step, make_train_step  # noqa: E402

VOCAB = 65  # Tiny Shakespeare's character vocabulary


class SyntheticLMTask(LMTask):
    """The real ``LMTask`` (model, init, loss) with a fixed vocabulary and no corpus."""

    def __init__(self, config, vocab_size: int):
        self._tokens = {}
        self.config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, vocab_size=vocab_size)
        )
        self.model = Decoder(self.config.model)


def matmul_peak(n: int = 2048, reps: int = 8) -> tuple[float, float]:
    """FLOP/s of an n^3 f32 matmul: (jax, torch), best of ``reps``."""
    flops = 2.0 * n**3
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    mm = jax.jit(jnp.dot)
    mm(a, a).block_until_ready()
    best_jax = min(_timed(lambda: mm(a, a).block_until_ready()) for _ in range(reps))
    t = torch.randn(n, n)
    torch.mm(t, t)
    best_torch = min(_timed(lambda: torch.mm(t, t)) for _ in range(reps))
    return flops / best_jax, flops / best_torch


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process); (0, 0) off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    return v[0] + v[1] + v[2] + sum(v[5:8]), int(fields[11]) + int(fields[12])


def timed_with_load(fn) -> tuple[float, float]:
    """(seconds, share of the machine's CPUs that other processes used meanwhile)."""
    machine0, mine0 = _cpu_ticks()
    seconds = _timed(fn)
    machine1, mine1 = _cpu_ticks()
    other = (machine1 - machine0) - (mine1 - mine0)
    capacity = seconds * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    return seconds, max(0.0, other / capacity)


def interleaved_rounds(runs: dict, rounds: int, steps: int, pause: float) -> tuple[dict, dict]:
    """Times ``rounds`` rounds of ``runs`` (name -> a function training ``steps`` steps),
    alternating the names within each round after ``pause`` idle seconds (the other
    side's worker threads go idle). Returns, per name, the seconds per step of each round
    and the share of the CPUs other processes took meanwhile."""
    times = {name: [] for name in runs}
    others = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            time.sleep(pause)
            seconds, other = timed_with_load(fn)
            times[name].append(seconds / steps)
            others[name].append(other)
    return times, others


def round_stats(seconds_per_step: list[float], others: list[float], tokens_per_step: int) -> dict:
    """One side's results: median and fastest round in ms/step, every round, tokens/s."""
    med = statistics.median(seconds_per_step)
    return {
        "ms_per_step": med * 1e3,
        "min_ms_per_step": min(seconds_per_step) * 1e3,
        "rounds_ms_per_step": [t * 1e3 for t in seconds_per_step],
        "rounds_other_cpu_share": others,
        "tokens_per_s": tokens_per_step / med,
    }


def rounds_text(stats: dict) -> str:
    """Each round as ``ms/step[CPU share other processes took]``."""
    pairs = zip(stats["rounds_ms_per_step"], stats["rounds_other_cpu_share"], strict=True)
    return " ".join(f"{ms:.1f}[{o:.0%}]" for ms, o in pairs)


def side_row(name: str, stats: dict, extra: str = "") -> str:
    """One side's row of the table: median and fastest ms/step, tokens/s, ``extra``
    columns, then every round."""
    return (
        f"{name:8s} {stats['ms_per_step']:8.2f} {stats['min_ms_per_step']:8.2f} "
        f"{stats['tokens_per_s']:9.0f}{extra}  {rounds_text(stats)}"
    )


def warn_if_contended(others: dict, what: str) -> None:
    """Prints a warning when other processes took over 10% of the CPUs in any round."""
    busiest = max(o for side in others.values() for o in side)
    if busiest > 0.1:
        print(
            f"warning: other processes took up to {busiest:.0%} of the CPUs during timing; "
            f"{what}rerun on an idle machine before trusting the ratio"
        )


def write_json(path: str, results: dict) -> None:
    """``results`` as indented JSON at ``path`` (nothing when ``path`` is empty)."""
    if path:
        Path(path).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")


def build_jax(config, tokens: np.ndarray, steps_per_dispatch: int):
    """(run(n_dispatches) -> last loss, params) for the real nlpjax training step, compiled
    with the config's ``train.xla_options`` as the trainer does."""
    task = SyntheticLMTask(config, VOCAB)
    schedule = make_schedule(config.optim, config.train.steps)
    tx = make_optimizer(config.optim, schedule)
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(config.seed))["params"])
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(config.seed + 1),
        carry=task.init_carry(),
    )
    init_params = jax.tree_util.tree_map(np.asarray, params)
    multi_step = make_multi_step(
        make_train_step(task, tx, schedule),
        compiler_options=compiler_options(config.train.xla_options) or None,
    )
    batches = {"tokens": jnp.asarray(tokens[:steps_per_dispatch])}
    holder = {"state": state}

    def run(dispatches: int) -> float:
        state, metrics = holder["state"], None
        for _ in range(dispatches):
            state, metrics = multi_step(state, batches)  # state is donated
        jax.block_until_ready((state, metrics))
        holder["state"] = state
        return float(metrics["loss"][-1])

    def loss_fn(batch):
        loss, _ = task.loss(init_params, task.init_carry(), {"tokens": batch}, None, False)
        return float(loss)

    return run, init_params, loss_fn, task


def build_torch(config, tokens: np.ndarray, params, fused_adamw: bool):
    """(run(n_steps) -> last loss, model) for the PyTorch twin, loaded with ``params``."""
    model = torch_decoder.TorchDecoder(dataclasses.replace(config.model, vocab_size=VOCAB))
    torch_decoder.load_jax_params(model, params)
    opt, sched = torch_decoder.make_optimizer(
        model, config.optim, config.train.steps, fused=fused_adamw or None
    )
    batches = torch.from_numpy(tokens.astype(np.int64))

    def run(steps: int) -> float:
        loss = None
        for s in range(steps):
            loss = torch_decoder.train_step(
                model, opt, sched, batches[s % len(batches)], config.optim.clip_norm
            )
        return float(loss)

    return run, model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "shakespeare_char.py"))
    parser.add_argument("--steps", type=int, default=50, help="steps per framework per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--steps_per_dispatch", type=int, default=0, help="0: the config's train value"
    )
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds of idle before each timed round"
    )
    parser.add_argument(
        "--torch_adamw",
        choices=("fused", "default"),
        default="fused",
        help="torch.optim.AdamW(fused=True) (faster on this CPU) or its default implementation",
    )
    parser.add_argument("--torch_threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--xla_options",
        default=None,
        help="train.xla_options for nlpjax's step (default: the config's), e.g. "
        "xla_cpu_use_onednn=true,xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
    )
    parser.add_argument("--skip_peak", action="store_true", help="no matmul peak / MFU")
    parser.add_argument("--json", default="", help="write the results to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.torch_threads)
    overrides = {} if args.xla_options is None else {"train.xla_options": args.xla_options}
    config = load_config(args.config, overrides)
    k = args.steps_per_dispatch or config.train.steps_per_dispatch
    dispatches = max(1, -(-args.steps // k))  # whole dispatches
    steps = dispatches * k
    batch, context = config.data.batch_size, config.data.context
    tokens_per_step = batch * context
    rng = np.random.default_rng(config.seed)
    tokens = rng.integers(0, VOCAB, (max(k, 10), batch, context + 1), dtype=np.int32)

    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}, train.xla_options="
        f"{config.train.xla_options!r}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, {args.torch_adamw} AdamW), {os.cpu_count()} CPUs"
    )
    print(
        f"model: {config.model.num_layers} layers, d_model {config.model.d_model}, "
        f"batch {batch} x context {context} = {tokens_per_step} tokens/step; "
        f"{steps} steps x {args.rounds} rounds per framework, {k} steps per jax dispatch"
    )

    jax_run, params, jax_loss, task = build_jax(config, tokens, k)
    torch_run, torch_model = build_torch(config, tokens, params, args.torch_adamw == "fused")
    with torch.no_grad():  # same params, same batch -> same loss
        loss_t = float(torch_decoder.lm_loss(torch_model, torch.from_numpy(tokens[0]).long()))
    loss_j = jax_loss(jnp.asarray(tokens[0]))
    if abs(loss_t - loss_j) > 1e-4 * abs(loss_j):
        raise SystemExit(f"models differ: nlpjax loss {loss_j} vs torch loss {loss_t}")

    peak_before = (float("nan"), float("nan")) if args.skip_peak else matmul_peak()
    start = time.perf_counter()
    jax_run(1)  # compile + first dispatch
    compile_s = time.perf_counter() - start
    jax_run(1)
    torch_run(2 * k)  # warm-up

    runs = {"nlpjax": lambda: jax_run(dispatches), "torch": lambda: torch_run(steps)}
    times, others = interleaved_rounds(runs, args.rounds, steps, args.pause)

    peak_jax = peak_torch = float("nan")
    if not args.skip_peak:  # best of a measurement before and one after the timed rounds
        peak_jax, peak_torch = map(max, zip(peak_before, matmul_peak(), strict=True))
    fpt = flops_per_token(task.config.model, context)

    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "steps_per_round": steps,
        "rounds": args.rounds,
        "steps_per_dispatch": k,
        "tokens_per_step": tokens_per_step,
        "flops_per_token": fpt,
        "jax_compile_s": compile_s,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "xla_options": config.train.xla_options,
        "torch_threads": torch.get_num_threads(),
        "torch_adamw": args.torch_adamw,
        "matmul_peak_gflops": None
        if args.skip_peak
        else {"nlpjax": peak_jax / 1e9, "torch": peak_torch / 1e9},
    }
    print(
        f"\nstep loss check: nlpjax {loss_j:.6f}, torch {loss_t:.6f}; jax compile {compile_s:.1f}s"
    )
    print(
        f"f32 2048^3 matmul peak: jax {peak_jax / 1e9:.0f} GFLOP/s, torch "
        f"{peak_torch / 1e9:.0f} GFLOP/s"
    )
    print(
        f"\n{'':8s} {'ms/step':>8s} {'(min)':>8s} {'tokens/s':>9s} {'MFU':>6s}  "
        "rounds: ms/step [CPU share other processes took]"
    )
    for name, peak in (("nlpjax", peak_jax), ("torch", peak_torch)):
        stats = round_stats(times[name], others[name], tokens_per_step)
        mfu = fpt * stats["tokens_per_s"] / peak
        results[name] = {**stats, "mfu": None if args.skip_peak else mfu}
        print(side_row(name, stats, f" {mfu:6.1%}"))
    ratio = results["nlpjax"]["tokens_per_s"] / results["torch"]["tokens_per_s"]
    results["ratio_nlpjax_over_torch"] = ratio
    print(f"\nnlpjax / torch tokens/s: {ratio:.2f}x (median rounds)")
    warn_if_contended(
        others, "eager PyTorch slows down far more than XLA under such contention, so "
    )
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
