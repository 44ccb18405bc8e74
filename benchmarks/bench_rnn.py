"""Training-step speed: nlpjax's recurrent LM against PyTorch ``nn.LSTM`` / ``nn.GRU``.

    .venv/bin/python benchmarks/bench_rnn.py [--cells=lstm,gru] [--steps=20] [--rounds=5]
        [--steps_per_dispatch=10] [--unroll=1] [--json=results.json]

Both sides train the same char LM on random tokens: embedding 65 x 256, 2 recurrent
layers of 256, a 256 -> 65 output layer, sequence 64, batch 32, cross-entropy, gradient
clipping at global norm 1, Adam (lr 2e-3). nlpjax runs ``models.rnn.RNNLM`` (input
projections hoisted out of the scan, the first layer's as the projection of the
65-row embedding table, the hand-written backward of ``models/rnn_fused.py``)
under one jit, ``--steps_per_dispatch`` steps per call through ``lax.scan``; PyTorch runs
eager with its oneDNN cells and ``torch.set_num_threads(os.cpu_count())``. Before timing,
the torch model is loaded with nlpjax's initial parameters and both must give the same
loss on the same batch. Rounds alternate [nlpjax N steps, torch N steps]; the median round
of each is reported as ms/step, and ``ratio`` = torch ms / nlpjax ms (> 1: nlpjax faster).

    .venv/bin/python benchmarks/bench_rnn.py --converge [--config=FILE[:VARIANT]]
        [--set=KEY=VALUE ...] [--side=both|nlpjax|torch] [--torch_init=torch|nlpjax]

trains the config (default ``experiments/shakespeare_lstm.py``, issue 12's acceptance run)
with nlpjax's trainer and with PyTorch on the same batches, and prints both validation
losses (``torch_reference`` says what "the same" covers).
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
EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "shakespeare_lstm.py"


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
    """Embedding, ``nn.LSTM``/``nn.GRU`` stack, output layer (PyTorch's default init)."""

    def __init__(self, cell: str, vocab=VOCAB, width=WIDTH, layers=LAYERS):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.rnn = rnn(width, width, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, tokens, state=None):
        """(logits, final state); ``state`` None starts from zeros."""
        h, state = self.rnn(self.embed(tokens), state)
        return self.head(h), state


def load_from_jax(model: TorchLM, params: dict, cell: str) -> None:
    """Copies nlpjax parameters into the torch model (gate orders agree)."""

    def put(tensor, value):
        tensor.data.copy_(torch.from_numpy(np.array(value, np.float32)))

    put(model.embed.weight, params["encoder"]["embedding"])
    for k in range(model.rnn.num_layers):
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
    logits, _ = model(batch_BL[:, :-1])
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
        logits, _ = model(batch[:, :-1])
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


# ---------------------------------------------------------- convergence (the acceptance run)


def _detach(state):
    """The state without its graph: (h, c) for nn.LSTM, h for nn.GRU."""
    if isinstance(state, tuple):
        return tuple(x.detach() for x in state)
    return None if state is None else state.detach()


def torch_eval(model, tokens_KBL: torch.Tensor) -> float:
    """Mean cross-entropy over the K evaluation batches, the state carried through them
    from zeros (the protocol of ``tasks.base.make_loss_average``)."""
    model.eval()
    state, total = None, 0.0
    with torch.no_grad():
        for batch in tokens_KBL:
            logits, state = model(batch[:, :-1], state)
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)))  # fmt: skip
    model.train()
    return total / len(tokens_KBL)


def torch_reference(task, init: str) -> dict:
    """PyTorch's run of ``task.config`` on the task's own batches.

    The very batches nlpjax trains on (``task.train_iterator()``, so the same streams and
    per-epoch offsets), the hidden state carried across batches and detached (truncated
    BPTT), ``clip_grad_norm_`` then ``torch.optim.Adam`` with a ``LambdaLR`` giving
    ``training.optim.make_schedule``'s learning rate at every step, and evaluation on
    ``task.eval_batches()`` with the state carried from zeros. ``init``: ``torch``
    (PyTorch's own defaults: embedding N(0, 1), every LSTM/GRU weight and both biases
    U(-1/sqrt(D), 1/sqrt(D)), output layer Kaiming-uniform) or ``nlpjax`` (nlpjax's
    initial parameters for the seed, and an LSTM's second bias ``bias_hh`` frozen at 0,
    so that the model is nlpjax's: then both runs agree step by step up to rounding).
    Returns {"curve": {step: validation loss}, "seconds": training time}.
    """
    from nlpjax.training.optim import make_schedule

    cfg, m, o = task.config, task.config.model, task.config.optim
    if m.dropout or m.tie_embeddings or m.embed_dim != m.d_hidden or m.cell == "elman":
        raise SystemExit("the PyTorch reference covers LSTM/GRU LMs without dropout or tying")
    if o.name != "adamw" or o.weight_decay:
        raise SystemExit("the PyTorch reference covers Adam (optim.name=adamw, no decay)")
    torch.manual_seed(cfg.seed)
    model = TorchLM(m.cell, m.vocab_size, m.d_hidden, m.num_layers)
    if init == "nlpjax":
        params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(cfg.seed)))["params"]
        load_from_jax(model, params, m.cell)
        if m.cell == "lstm":  # one bias, as nlpjax (torch's two get twice Adam's step)
            for k in range(m.num_layers):
                getattr(model.rnn, f"bias_hh_l{k}").requires_grad_(False)
    steps = cfg.train.steps
    lrs = np.asarray(jax.vmap(make_schedule(o, steps))(np.arange(steps + 1)), np.float64)
    trained = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.Adam(trained, lr=o.lr, betas=(o.b1, o.b2), eps=o.eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lrs[step] / o.lr)
    batches = task.train_iterator()
    eval_tokens = torch.from_numpy(np.asarray(task.eval_batches()["tokens"], np.int64))
    state, curve, start = None, {}, time.perf_counter()
    for step in range(1, steps + 1):
        batch = torch.from_numpy(np.asarray(next(batches)["tokens"], np.int64))
        opt.zero_grad(set_to_none=True)
        logits, state = model(batch[:, :-1], state)
        state = _detach(state)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, m.vocab_size), batch[:, 1:].reshape(-1)
        )
        loss.backward()
        if o.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(trained, o.clip_norm)
        opt.step()
        schedule.step()
        if step % cfg.eval.every == 0 or step == steps:
            curve[step] = torch_eval(model, eval_tokens)
            print(f"  torch step {step}: train loss {loss.item():.4f}, val {curve[step]:.4f}")
    return {"curve": curve, "seconds": time.perf_counter() - start}


def nlpjax_run(config, workdir: str) -> dict:
    """nlpjax's own trainer (``nlpjax.train``) on ``config``: the validation curve."""
    import nlpjax
    from nlpjax.training.metrics import read_metrics

    start = time.perf_counter()
    nlpjax.train(config, workdir)
    curve = {r["step"]: r["eval/loss"] for r in read_metrics(workdir) if "eval/loss" in r}
    return {"curve": curve, "seconds": time.perf_counter() - start}


def converge(args) -> dict:
    """Trains the acceptance setup with nlpjax and with PyTorch; prints both losses."""
    import tempfile

    from nlpjax.api import load_config
    from nlpjax.tasks.rnn import RNNLMTask

    overrides = dict(kv.split("=", 1) for kv in args.set)
    config = load_config(args.config, {"train.progress": "false", **overrides})
    results = {}
    if args.side in ("both", "torch"):
        task = RNNLMTask(config)
        results["torch"] = torch_reference(task, args.torch_init)
    if args.side in ("both", "nlpjax"):
        workdir = args.workdir or tempfile.mkdtemp(prefix="bench_rnn_")
        results["nlpjax"] = nlpjax_run(config, workdir)
    for name, r in results.items():
        steps = sorted(r["curve"])
        curve = ", ".join(f"{r['curve'][s]:.4f}" for s in steps)
        print(f"{name}: validation loss {r['curve'][steps[-1]]:.4f} nats/token after "
              f"{steps[-1]} steps ({r['seconds']:.0f} s); curve at {steps}: {curve}")  # fmt: skip
    if len(results) == 2:
        gap = (
            results["nlpjax"]["curve"][config.train.steps]
            - results["torch"]["curve"][config.train.steps]
        )
        print(f"nlpjax - torch: {gap:+.4f} nats/token")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--steps", type=int, default=20, help="train steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps_per_dispatch", type=int, default=10)
    parser.add_argument("--unroll", type=int, default=1)
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--converge", action="store_true", help="train --config with nlpjax and PyTorch instead"
    )
    parser.add_argument("--config", default=str(EXPERIMENT))
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--side", choices=("both", "nlpjax", "torch"), default="both")
    parser.add_argument("--torch_init", choices=("torch", "nlpjax"), default="torch")
    parser.add_argument("--workdir", default="", help="nlpjax's workdir (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all CPUs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.converge:
        results = converge(args)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}))
        return
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
