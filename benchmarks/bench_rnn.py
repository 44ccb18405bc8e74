"""Training-step speed: nlpjax's recurrent LM against PyTorch ``nn.LSTM`` / ``nn.GRU``.

    .venv/bin/python benchmarks/bench_rnn.py [--cells=lstm,gru] [--steps=20] [--rounds=5]
        [--steps_per_dispatch=10] [--unroll=1] [--json=results.json]

Both sides train the same char LM on random tokens: embedding 65 x 256, 2 recurrent
layers of 256, a 256 -> 65 output layer, sequence 64, batch 32, cross-entropy, gradient
clipping at global norm 1, Adam (lr 2e-3). nlpjax runs ``models.rnn.RNNLM`` (input
projections hoisted out of the scan, the hand-written backward of ``models/rnn_fused.py``)
under one jit, ``--steps_per_dispatch`` steps per call through ``lax.scan``; PyTorch runs
eager with its oneDNN cells and ``torch.set_num_threads(os.cpu_count())``. Before timing,
the torch model is loaded with nlpjax's initial parameters and both must give the same
loss on the same batch. Rounds alternate [nlpjax N steps, torch N steps]; the median round
of each is reported as ms/step, and ``ratio`` = torch ms / nlpjax ms (> 1: nlpjax faster).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from nlpjax.models.rnn import RNNLM, RNNConfig  # noqa: E402

VOCAB, WIDTH, LAYERS, LENGTH, BATCH, LR = 65, 256, 2, 64, 32, 2e-3


def jax_side(cell: str, steps_per_dispatch: int, unroll: int, tokens_KBL: np.ndarray):
    """(params, a jitted function running K train steps, the loss of one batch)."""
    model = RNNLM(RNNConfig(VOCAB, cell, LAYERS, d_hidden=WIDTH, unroll=unroll))
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), tokens_KBL[0, :, :-1]))["params"]
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(LR))

    def loss_fn(p, batch_BL):
        logits, _ = model.apply({"params": p}, batch_BL[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch_BL[:, 1:]).mean()

    def one_step(state, batch_BL):
        p, opt = state
        loss, grads = jax.value_and_grad(loss_fn)(p, batch_BL)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), loss

    @jax.jit
    def run(state, batches_KBL):
        return jax.lax.scan(one_step, state, batches_KBL)

    first = float(jax.jit(loss_fn)(params, tokens_KBL[0]))
    return (params, tx.init(params)), run, first


class TorchLM(torch.nn.Module):
    def __init__(self, cell: str):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.rnn = rnn(WIDTH, WIDTH, num_layers=LAYERS, batch_first=True)
        self.head = torch.nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):
        return self.head(self.rnn(self.embed(tokens))[0])


def load_from_jax(model: TorchLM, params: dict, cell: str) -> None:
    """Copies nlpjax parameters into the torch model (gate orders agree)."""

    def put(tensor, value):
        tensor.data.copy_(torch.from_numpy(np.array(value, np.float32)))

    put(model.embed.weight, params["encoder"]["embedding"])
    for k in range(LAYERS):
        layer = params["encoder"]["stack"][f"layer_{k}"]
        put(getattr(model.rnn, f"weight_ih_l{k}"), np.asarray(layer["input_kernel"]).T)
        put(getattr(model.rnn, f"weight_hh_l{k}"), np.asarray(layer["recurrent_kernel"]).T)
        put(getattr(model.rnn, f"bias_ih_l{k}"), layer["bias"])
        recurrent_bias = layer["recurrent_bias"] if cell == "gru" else np.zeros_like(layer["bias"])
        put(getattr(model.rnn, f"bias_hh_l{k}"), recurrent_bias)
    put(model.head.weight, np.asarray(params["lm_head"]["kernel"]).T)
    put(model.head.bias, params["lm_head"]["bias"])


def torch_step(model, opt, batch_BL):
    opt.zero_grad(set_to_none=True)
    logits = model(batch_BL[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch_BL[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def bench_cell(cell: str, args) -> dict:
    rng = np.random.default_rng(0)
    k = args.steps_per_dispatch
    tokens = rng.integers(0, VOCAB, (k, BATCH, LENGTH + 1)).astype(np.int32)
    state, run, jax_loss = jax_side(cell, k, args.unroll, tokens)
    model = TorchLM(cell)
    load_from_jax(model, state[0], cell)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    batch = torch.from_numpy(tokens[0].astype(np.int64))
    with torch.no_grad():
        logits = model(batch[:, :-1])
        torch_loss = float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1)))  # fmt: skip
    if abs(torch_loss - jax_loss) > 1e-4:
        raise SystemExit(f"{cell}: the two models disagree: loss {jax_loss} vs {torch_loss}")
    dispatches = max(args.steps // k, 1)
    state, _ = jax.block_until_ready(run(state, tokens))  # compile + warm up
    torch_step(model, opt, batch)
    rounds = {"nlpjax": [], "torch": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(dispatches):
            state, losses = run(state, tokens)
        jax.block_until_ready(losses)
        rounds["nlpjax"].append((time.perf_counter() - start) / (dispatches * k))
        start = time.perf_counter()
        for _ in range(dispatches * k):
            torch_step(model, opt, batch)
        rounds["torch"].append((time.perf_counter() - start) / (dispatches * k))
    ms = {name: 1000 * statistics.median(times) for name, times in rounds.items()}
    best = {name: 1000 * min(times) for name, times in rounds.items()}
    return {"cell": cell, "ms_per_step": ms, "best_ms_per_step": best,
            "ratio": ms["torch"] / ms["nlpjax"], "loss_check": [jax_loss, torch_loss]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--steps", type=int, default=20, help="train steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps_per_dispatch", type=int, default=10)
    parser.add_argument("--unroll", type=int, default=1)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = []
    for cell in args.cells.split(","):
        r = bench_cell(cell, args)
        results.append(r)
        print(
            f"{cell}: nlpjax {r['ms_per_step']['nlpjax']:.1f} ms/step, torch "
            f"{r['ms_per_step']['torch']:.1f} ms/step, ratio {r['ratio']:.2f} "
            f"(best {r['best_ms_per_step']['nlpjax']:.1f} / {r['best_ms_per_step']['torch']:.1f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
