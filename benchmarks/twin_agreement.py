"""Does the PyTorch twin train the same model? 150 steps of both from the same start.

    .venv/bin/python benchmarks/twin_agreement.py [--steps=150] [--num_batches=10]
        [--torch_adamw=both|fused|default] [--json=FILE]

Initialises the char LM of ``experiments/shakespeare_char.py`` with nlpjax, copies the
parameters into ``benchmarks/torch_decoder.py``'s model, then trains both on the same
``--num_batches`` random token batches (cycled) with their own training steps: nlpjax's
``make_train_step`` + ``make_multi_step`` (``train.steps_per_dispatch`` steps per
dispatch) and the twin's ``train_step`` (clipping, AdamW, warmup + cosine ``LambdaLR``).
Prints the largest relative loss difference over the steps and, for the final
parameters, the largest difference relative to each tensor's largest entry, once per
torch AdamW implementation. This is the check behind the benchmark's claim that both
sides do the same work; it is not timed.
"""

import argparse
import dataclasses
import json
import sys
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
from bench_decoder_lm import VOCAB, SyntheticLMTask  # noqa: E402

from nlpjax.api import load_config  # noqa: E402
from nlpjax.training.optim import make_optimizer, make_schedule  # noqa: E402
from nlpjax.training.state import TrainState  # noqa: E402
from nlpjax.training.step import make_multi_step, make_train_step  # noqa: E402


def train_jax(config, tokens: np.ndarray, steps: int):
    """(initial params, final params, per-step losses) of nlpjax's real training step."""
    task = SyntheticLMTask(config, VOCAB)
    schedule = make_schedule(config.optim, config.train.steps)
    tx = make_optimizer(config.optim, schedule)
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(config.seed))["params"])
    init_params = jax.tree_util.tree_map(np.array, params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(config.seed + 1),
        carry=task.init_carry(),
    )
    multi_step = make_multi_step(make_train_step(task, tx, schedule))
    k = config.train.steps_per_dispatch
    losses = []
    for start in range(0, steps, k):
        idx = [s % len(tokens) for s in range(start, min(start + k, steps))]
        state, metrics = multi_step(state, {"tokens": jnp.asarray(tokens[idx])})
        losses.extend(np.asarray(metrics["loss"]).tolist())
    return init_params, jax.tree_util.tree_map(np.array, state.params), np.array(losses)


def train_torch(config, tokens: np.ndarray, steps: int, params, fused: bool):
    """(trained twin, per-step losses), starting from nlpjax's ``params``."""
    model_cfg = dataclasses.replace(config.model, vocab_size=VOCAB)
    model = torch_decoder.TorchDecoder(model_cfg)
    torch_decoder.load_jax_params(model, params)
    opt, sched = torch_decoder.make_optimizer(
        model, config.optim, config.train.steps, fused=fused or None
    )
    batches = torch.from_numpy(tokens.astype(np.int64))
    losses = [
        float(
            torch_decoder.train_step(
                model, opt, sched, batches[s % len(batches)], config.optim.clip_norm
            )
        )
        for s in range(steps)
    ]
    return model, np.array(losses)


def param_difference(config, trained: torch.nn.Module, jax_params) -> tuple[float, float, str]:
    """(max over tensors of max|a - b| / max|b|, max|a - b|, the tensor with the first)."""
    reference = torch_decoder.TorchDecoder(dataclasses.replace(config.model, vocab_size=VOCAB))
    torch_decoder.load_jax_params(reference, jax_params)
    rel = absolute = 0.0
    worst = ""
    ours = dict(reference.named_parameters())
    for name, p in trained.named_parameters():
        diff = float((p.detach() - ours[name].detach()).abs().max())
        scale = float(ours[name].detach().abs().max())
        absolute = max(absolute, diff)
        if (diff / scale if scale > 0 else diff) > rel:
            rel, worst = (diff / scale if scale > 0 else diff), name
    return rel, absolute, worst


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "shakespeare_char.py"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--num_batches", type=int, default=10)
    parser.add_argument("--torch_adamw", choices=("both", "fused", "default"), default="both")
    parser.add_argument("--json", default="", help="write the results to this file")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    batch, context = config.data.batch_size, config.data.context
    rng = np.random.default_rng(config.seed)
    tokens = rng.integers(0, VOCAB, (args.num_batches, batch, context + 1), dtype=np.int32)
    print(
        f"jax {jax.__version__}, torch {torch.__version__}; {args.steps} steps on "
        f"{args.num_batches} batches of {batch} x {context + 1} tokens"
    )
    init_params, jax_params, jax_losses = train_jax(config, tokens, args.steps)
    results = {"steps": args.steps, "num_batches": args.num_batches, "torch": {}}
    kinds = ("fused", "default") if args.torch_adamw == "both" else (args.torch_adamw,)
    for kind in kinds:
        model, torch_losses = train_torch(config, tokens, args.steps, init_params, kind == "fused")
        loss_rel = np.abs(jax_losses - torch_losses) / np.abs(torch_losses)
        param_rel, param_abs, worst = param_difference(config, model, jax_params)
        results["torch"][kind] = {
            "max_rel_loss_diff": float(loss_rel.max()),
            "step_of_max": int(loss_rel.argmax()) + 1,
            "max_rel_param_diff": param_rel,
            "max_abs_param_diff": param_abs,
            "tensor_of_max_rel_param_diff": worst,
            "first_loss": [float(jax_losses[0]), float(torch_losses[0])],
            "last_loss": [float(jax_losses[-1]), float(torch_losses[-1])],
        }
        print(
            f"torch {kind:7s} AdamW: max relative loss difference {loss_rel.max():.2e} "
            f"(step {loss_rel.argmax() + 1}); final params: max difference "
            f"{param_rel:.2e} of the tensor's largest entry (in {worst}; {param_abs:.2e} "
            "absolute over all tensors); "
            f"loss {jax_losses[0]:.4f} -> {jax_losses[-1]:.4f} (nlpjax), "
            f"{torch_losses[0]:.4f} -> {torch_losses[-1]:.4f} (torch)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
