"""Training-step speed: nlpjax's T5 against Hugging Face ``transformers`` T5 (PyTorch eager).

    .venv/bin/python benchmarks/bench_t5.py [--data=multi30k|random] [--dropout=P]
        [--steps=20] [--rounds=5] [--torch_adamw=fused|default] [--quick] [--json=FILE]

Both sides train the ``compare`` variant of ``experiments/t5_multi30k.py`` (T5 v1.1:
d_model 256, 3+3 layers, 4 heads of 64, gated-GELU d_ff 1024, relative buckets 32 / max
distance 128, untied ``lm_head``, dropout 0.1, SentencePiece 8000; batch 32, source and
target 32; AdamW b1 0.9, b2 0.98, eps 1e-8, weight decay 0.01 on matrices and embeddings,
global-norm clipping 1.0, warmup + cosine) with label smoothing 0 (Hugging Face's loss has
none), on the same batches from the same initial weights:

- **nlpjax**: the trainer's own pieces: ``build_run`` (task, ``make_tx``, initial
  ``TrainState``), ``make_train_step`` over ``Seq2SeqTask.loss``, ``scan_steps`` compiled
  by ``parallel.compile_steps`` (``train.steps_per_dispatch`` steps per call, state
  donated), batches placed by ``parallel.put_batches``;
- **Hugging Face**: ``T5ForConditionalGeneration(T5Config(...))`` with the same config
  (``interop.hf_t5.hf_config_from_t5``), loaded with nlpjax's initial parameters through
  the interop (``hf_from_params``), ``torch.optim.AdamW`` with the same hyperparameters,
  decay set and schedule (``benchmarks/torch_decoder.make_optimizer``),
  ``clip_grad_norm_``, ``torch.set_num_threads(os.cpu_count())``; each step gets
  ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding) and uses the
  model's own loss (mean cross-entropy over the labelled tokens, as nlpjax's).

Batches (``--data``): ``multi30k`` (default) runs the task's own pipeline (Multi30k de->en,
the task prefix, its SentencePiece 8000 tokenizer built from the train split) with one pair
per row padded to 32 + 32 (``seq2seq_pipeline.padded_batches``: Hugging Face's T5 cannot
read packed rows); ``random`` draws uniform token ids with row lengths uniform in
[L/4, L] (end id last, padding after), the same padding pattern without a corpus. Both
sides get every batch ready in memory; input preparation is not timed.

Before timing, both compute the loss of the first batch without dropout (must agree to
1e-4 relative), then train ``train.steps_per_dispatch`` steps on the same batches (this is
also nlpjax's compilation); the losses of those steps are printed side by side (with
``--dropout=0`` they agree closely; with dropout each side draws its own masks). Rounds
then alternate [nlpjax N steps, Hugging Face N steps] after a pause; each side's median
round gives ms/step and tokens/s (batch x (source + target) positions), and
``ratio`` = Hugging Face ms/step / nlpjax ms/step (> 1: nlpjax faster).
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_decoder_lm  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch_decoder  # noqa: E402
import transformers  # noqa: E402

from nlpjax.api import load_config  # noqa: E402
from nlpjax.data import pipeline, seq2seq_pipeline  # noqa: E402
from nlpjax.interop import hf_t5  # noqa: E402
from nlpjax.models.t5 import T5  # noqa: E402
from nlpjax.tasks.rnn_seq2seq import RNNSeq2SeqTask  # noqa: E402
from nlpjax.tasks.seq2seq import Seq2SeqTask  # noqa: E402
from nlpjax.training import parallel  # noqa: E402
from nlpjax.training.optim import decay_mask  # noqa: E402
from nlpjax.training.run import build_run  # noqa: E402
from nlpjax.training.step import make_train_step, scan_steps  # noqa: E402

EXPERIMENT = REPO / "experiments" / "t5_multi30k.py"
# variant, and (steps per round, rounds, pause) under --quick
VARIANTS = {"full": "compare", "quick": "tiny"}
QUICK_ROUNDS = (5, 2, 0.0)
PAD, EOS = 0, 1  # T5's ids (the SentencePiece tokenizer's too)


class PaddedSeq2SeqTask(Seq2SeqTask):
    """The T5 task with one pair per padded row instead of packed rows (the only layout
    Hugging Face's T5 reads): the RNN seq2seq task's rows; model, loss and tokenizer
    unchanged."""

    batch_rows = RNNSeq2SeqTask.batch_rows


class RandomSeq2SeqTask(Seq2SeqTask):
    """The T5 task (model, init, loss) with the tokenizer's vocabulary size and no corpus."""

    def __init__(self, config, workdir=None):
        model = dataclasses.replace(config.model, vocab_size=config.data.tokenizer.vocab_size)
        self.config = dataclasses.replace(config, model=model)
        self.model = T5(self.config.model)
        self.pretraining = False


def random_batches(task, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` padded batches of uniform ids; row lengths uniform in [L/4, L], EOS last."""
    data, vocab = task.config.data, task.config.model.vocab_size
    rng = np.random.default_rng(seed)
    caps = (data.source_length, data.target_length)

    def row(length: int) -> np.ndarray:
        n_tokens = int(rng.integers(max(length // 4, 2), length + 1))
        return np.append(rng.integers(EOS + 2, vocab, n_tokens - 1), EOS).astype(np.int32)

    return [
        seq2seq_pipeline.pad_batch(
            [{"inputs": row(caps[0]), "targets": row(caps[1])} for _ in range(data.batch_size)],
            data.batch_size,
            max(caps),
            caps,
            PAD,
        )
        for _ in range(n)
    ]


def multi30k_batches(task, n: int) -> list[dict[str, np.ndarray]]:
    """The task's first ``n`` training batches (its shuffled Multi30k pipeline)."""
    it = task.train_iterator()
    return [next(it) for _ in range(n)]


def hf_inputs(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Hugging Face's arguments for a padded batch: labels are -100 on padding."""
    labels = np.where(batch["targets_mask"], batch["targets"], -100)
    return {
        "input_ids": torch.from_numpy(batch["inputs"].astype(np.int64)),
        "attention_mask": torch.from_numpy(batch["inputs_mask"].astype(np.int64)),
        "labels": torch.from_numpy(labels.astype(np.int64)),
    }


def hf_loss(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean cross-entropy ``T5ForConditionalGeneration`` computes from its labels."""
    return model(**inputs).loss


def build_hf(cfg, params, attention: str):
    """``T5ForConditionalGeneration`` of nlpjax's T5 config holding nlpjax's ``params``."""
    hf_config = transformers.T5Config.from_dict(hf_t5.hf_config_from_t5(cfg))
    kwargs = {"attn_implementation": attention} if attention else {}
    model = transformers.T5ForConditionalGeneration(hf_config, **kwargs)
    if not cfg.tie_embeddings:  # transformers 5 ties lm_head to shared.weight unless loaded
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
    tensors = hf_t5.hf_from_params(params, cfg, hf_t5.VocabLayout(cfg.vocab_size))
    state = {name: torch.from_numpy(np.array(x, np.float32)) for name, x in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    left = set(missing) - set(hf_t5.IGNORED)  # the tied copies of shared.weight
    if left or unexpected:
        raise SystemExit(f"interop mismatch: missing {sorted(left)}, unexpected {unexpected}")
    return model


def check_decay_sets(params, model) -> None:
    """AdamW decays the same parameters on both sides (nlpjax by name, the torch optimizer
    by rank): a guard that the two optimizers do the same thing."""
    ours = sum(
        x.size
        for x, d in zip(
            jax.tree_util.tree_leaves(params),
            jax.tree_util.tree_leaves(decay_mask(params)),
            strict=True,
        )
        if d
    )
    theirs = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    if ours != theirs:
        raise SystemExit(f"decayed parameters differ: nlpjax {ours}, torch {theirs}")


def build_nlpjax(run, host_batches: list[dict]):
    """(run_dispatch(state) -> (state, losses), placed batches) with the trainer's step
    (compiled with ``train.xla_options`` as the trainer does)."""
    train_step = make_train_step(run.task, run.tx, run.schedule)
    options = parallel.compiler_options(run.config.train.xla_options)
    multi_step = parallel.compile_steps(
        run.placement, scan_steps(train_step), run.state_shardings, compiler_options=options
    )
    with run.placement.context():
        batches = parallel.put_batches(run.placement, pipeline.stack_batches(host_batches))

    def dispatch(state):
        with run.placement.context():
            state, metrics = multi_step(state, batches)  # the state is donated
        return state, metrics["loss"]

    return dispatch


def load_bench_config(args):
    """The benchmark's config: the experiment's variant, label smoothing 0, ``--set``."""
    overrides = {"data.label_smoothing": 0.0, "train.progress": False}
    if args.quick:  # the tiny variant trains with the experiment's Adafactor: use compare's
        compare = load_config(f"{EXPERIMENT}:compare").optim
        overrides.update(
            {f"optim.{k}": getattr(compare, k) for k in ("name", "lr", "weight_decay")}
        )
    if args.dropout is not None:
        overrides["model.dropout"] = args.dropout
    overrides.update(kv.split("=", 1) for kv in args.set)
    variant = VARIANTS["quick" if args.quick else "full"]
    config = load_config(f"{EXPERIMENT}:{variant}", overrides)
    if config.optim.name != "adamw":  # the torch side is torch.optim.AdamW
        raise SystemExit(f"optim.name={config.optim.name!r}: the comparison trains AdamW")
    return config


def first_losses(run, hf_model, host_batch, inputs) -> tuple[float, float]:
    """Both sides' loss of one batch, without dropout, from the initial weights."""
    params = jax.device_get(run.state.params)
    ours, _ = jax.jit(run.task.loss, static_argnums=4)(
        params, run.task.init_carry(), host_batch, None, False
    )
    hf_model.eval()
    with torch.no_grad():
        theirs = float(hf_loss(hf_model, inputs))
    hf_model.train()
    return float(ours), theirs


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("multi30k", "random"), default="multi30k")
    parser.add_argument(
        "--dropout", type=float, default=None, help="both sides (default: the config's 0.1)"
    )
    parser.add_argument("--steps", type=int, default=20, help="steps per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pause", type=float, default=1.0, help="idle seconds before a round")
    parser.add_argument("--torch_adamw", choices=("fused", "default"), default="fused")
    parser.add_argument("--torch_threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--hf_attention", default="", help="attn_implementation (default: transformers')"
    )
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument(
        "--quick", action="store_true", help="the tiny variant, 5 steps x 2 rounds (tests)"
    )
    parser.add_argument("--json", default="", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.pause = QUICK_ROUNDS
    return args


@dataclasses.dataclass
class Sides:
    """Both sides, ready to train: ``jax_run(dispatches)`` and ``hf_run(steps)`` each
    train on the same cycled batches and return the losses of their steps."""

    run: object  # nlpjax's training.run.Run
    hf_model: object
    host: list  # the host batches, in training order
    inputs: list  # the same batches as Hugging Face's arguments
    jax_run: object
    hf_run: object


def build_sides(args) -> Sides:
    """Config, task, batches, nlpjax's compiled step and the Hugging Face model."""
    config = load_bench_config(args)
    task_cls = PaddedSeq2SeqTask if args.data == "multi30k" else RandomSeq2SeqTask
    run = build_run(config, None, task_cls=task_cls)
    config, k = run.config, run.config.train.steps_per_dispatch
    if args.data == "multi30k":
        host = multi30k_batches(run.task, k)
    else:
        host = random_batches(run.task, k, config.seed)
    inputs = [hf_inputs(b) for b in host]

    params = jax.tree_util.tree_map(np.asarray, jax.device_get(run.state.params))
    hf_model = build_hf(config.model, params, args.hf_attention)
    check_decay_sets(params, hf_model)
    fused = (args.torch_adamw == "fused") or None
    opt, sched = torch_decoder.make_optimizer(hf_model, config.optim, config.train.steps, fused)

    def hf_run(n: int) -> list[float]:
        step, clip = torch_decoder.train_step, config.optim.clip_norm
        return [
            float(step(hf_model, opt, sched, inputs[s % k], clip, loss_fn=hf_loss))
            for s in range(n)
        ]

    dispatch, holder = build_nlpjax(run, host), {"state": run.state}

    def jax_run(n_dispatches: int) -> list[float]:
        losses = []
        for _ in range(n_dispatches):
            holder["state"], step_losses = dispatch(holder["state"])
            losses.append(step_losses)
        return np.concatenate(jax.device_get(losses)).tolist()

    return Sides(run, hf_model, host, inputs, jax_run, hf_run)


def describe(args, sides: Sides, steps: int) -> dict:
    """Prints and returns what runs: versions, threads, the model and the batch shape."""
    m, d = sides.run.config.model, sides.run.config.data
    attention = sides.hf_model.config._attn_implementation
    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, {args.torch_adamw} AdamW), transformers "
        f"{transformers.__version__} (attention {attention}), {os.cpu_count()} CPUs"
    )
    print(
        f"model: d_model {m.d_model}, {m.num_encoder_layers}+{m.num_decoder_layers} layers, "
        f"{m.num_heads} heads, {m.feed_forward} d_ff {m.d_ff}, vocab {m.vocab_size}, dropout "
        f"{m.dropout}; batch {d.batch_size} x ({d.source_length} + {d.target_length}), "
        f"{args.data} data; {steps} steps x {args.rounds} rounds per side, "
        f"{sides.run.config.train.steps_per_dispatch} per jax dispatch"
    )
    return {
        "data": args.data,
        "dropout": m.dropout,
        "model": dataclasses.asdict(m),
        "batch_size": d.batch_size,
        "source_length": d.source_length,
        "target_length": d.target_length,
        "tokens_per_step": sides.run.task.tokens_per_batch(),
        "steps_per_round": steps,
        "rounds": args.rounds,
        "steps_per_dispatch": sides.run.config.train.steps_per_dispatch,
        "torch_threads": torch.get_num_threads(),
        "torch_adamw": args.torch_adamw,
        "hf_attention": attention,
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def check_and_warm_up(sides: Sides) -> dict:
    """The first batch's loss on both sides (must agree), the first dispatch's steps on
    both (nlpjax compiles; losses printed side by side), then one warm-up dispatch."""
    loss_j, loss_h = first_losses(sides.run, sides.hf_model, sides.host[0], sides.inputs[0])
    if abs(loss_j - loss_h) > 1e-4 * abs(loss_j):
        raise SystemExit(f"the models differ: nlpjax loss {loss_j} vs Hugging Face {loss_h}")
    k = sides.run.config.train.steps_per_dispatch
    start = time.perf_counter()
    trajectory = {"nlpjax": sides.jax_run(1)}  # compiles nlpjax's step
    compile_s = time.perf_counter() - start
    trajectory["hf"] = sides.hf_run(k)
    sides.jax_run(1), sides.hf_run(k)  # warm-up
    pairs = zip(trajectory["nlpjax"], trajectory["hf"], strict=True)
    rel = max(abs(a - b) / abs(a) for a, b in pairs)
    print(f"\nloss of batch 0 without dropout: nlpjax {loss_j:.6f}, Hugging Face {loss_h:.6f}")
    print(f"training losses of the first {k} steps (dropout {sides.run.config.model.dropout}):")
    for name, losses in trajectory.items():
        print(f"  {name:7s} " + " ".join(f"{x:.5f}" for x in losses))
    print(f"  largest relative difference {rel:.2e}; jax compile + first dispatch {compile_s:.1f}s")
    return {
        "jax_compile_s": compile_s,
        "first_loss": {"nlpjax": loss_j, "hf": loss_h},
        "first_steps_loss": trajectory,
        "first_steps_max_rel_diff": rel,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    sides = build_sides(args)
    k = sides.run.config.train.steps_per_dispatch
    dispatches = max(1, -(-args.steps // k))  # whole dispatches
    steps = dispatches * k
    command = ["benchmarks/bench_t5.py", *(sys.argv[1:] if argv is None else argv)]
    results = {"command": " ".join(command), **describe(args, sides, steps)}
    results.update(check_and_warm_up(sides))

    runs = {"nlpjax": lambda: sides.jax_run(dispatches), "hf": lambda: sides.hf_run(steps)}
    times, others = bench_decoder_lm.interleaved_rounds(runs, args.rounds, steps, args.pause)
    print(f"\n{'':8s} {'ms/step':>8s} {'(min)':>8s} {'tokens/s':>9s}  rounds [other CPU share]")
    for name in ("nlpjax", "hf"):
        stats = bench_decoder_lm.round_stats(times[name], others[name], results["tokens_per_step"])
        results[name] = stats
        print(bench_decoder_lm.side_row(name, stats))
    ratio = results["hf"]["ms_per_step"] / results["nlpjax"]["ms_per_step"]
    results["ratio"] = ratio
    print(f"\nratio = Hugging Face ms/step / nlpjax ms/step = {ratio:.2f} (median rounds)")
    bench_decoder_lm.warn_if_contended(others, "")
    bench_decoder_lm.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
