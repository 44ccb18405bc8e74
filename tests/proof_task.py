"""A test-only task that uses every hook of the Task interface v2 at once.

A one-layer tanh RNN language model on a synthetic token stream:

- a carry with a batch axis (the hidden state, ``carry_leaf``), continued across batches
  by ``pipeline.lm_streams``;
- a sparse update: the input embedding is read through ``sparse_rows`` and updated row by
  row with SGD (``apply_update``), the dense weights with SGD too, following the task's
  own linearly decaying schedule (``make_optimizer``);
- ``evaluate(params, extras, rng)`` that samples (a sampled next-token accuracy) next to
  the loss average of ``make_loss_average``.

Running this file trains it: ``python -m tests.proof_task WORKDIR [--key=value ...]``
(dotted config overrides), with ``PROOF_KILL_AT=N`` to SIGKILL the process when batch N
is requested (the SIGKILL resume test).
"""

import dataclasses
import json
import os
import signal
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nlpjax.data import pipeline
from nlpjax.tasks.base import Rows, carry_leaf, make_loss_average

NAME = "proof"


@dataclasses.dataclass(frozen=True)
class ProofModelConfig:
    vocab_size: int = 32
    width: int = 16

    def signature(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ProofDataConfig:
    batch_size: int = 8
    context: int = 6
    num_tokens: int = 6000


def stream(cfg: ProofDataConfig, vocab: int, seed: int) -> np.ndarray:
    """A learnable synthetic stream: each token mostly follows from the previous one."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros(cfg.num_tokens, np.int32)
    for i in range(1, cfg.num_tokens):
        tokens[i] = (3 * tokens[i - 1] + 1) % vocab if rng.random() < 0.8 else rng.integers(vocab)
    return tokens


class _KillAt:
    """Iterator wrapper that SIGKILLs its own process when batch ``at`` is requested."""

    def __init__(self, it, at: int):
        self.it, self.at, self.count = it, at, 0

    def __next__(self):
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.count += 1
        return next(self.it)

    def __iter__(self):
        return self

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


class ProofTask:
    model_config_cls = ProofModelConfig
    data_config_cls = ProofDataConfig

    def __init__(self, config, workdir=None):
        self.config = config
        self.tokens = stream(config.data, config.model.vocab_size, 0)

    # -- data -----------------------------------------------------------------------------

    def _streams(self, tokens, seed):
        data = self.config.data
        return pipeline.lm_streams(
            tokens, data.context + 1, data.batch_size, seed, pipeline.Shard.this_host()
        )

    def train_iterator(self):
        it = pipeline.iterator(self._streams(self.tokens[:5000], self.config.seed))
        kill_at = os.environ.get("PROOF_KILL_AT")
        return _KillAt(it, int(kill_at)) if kill_at else it

    def eval_batches(self, split="validation"):
        return pipeline.take_stacked(self._streams(self.tokens[5000:], 0), 3)

    # -- model ----------------------------------------------------------------------------

    def init(self, rng):
        m = self.config.model
        k1, k2, k3 = jax.random.split(rng, 3)

        def boxed(value, names):
            return nn.LogicallyPartitioned(value, names=names)

        return {
            "params": {
                "embed": {
                    "embedding": boxed(
                        jax.random.normal(k1, (m.vocab_size, m.width)), ("vocab", "embed")
                    )
                },
                "mix": {
                    "kernel": boxed(
                        jax.random.normal(k2, (m.width, m.width)) / np.sqrt(m.width),
                        ("embed", "mlp"),
                    )
                },
                "out": {
                    "kernel": boxed(
                        jax.random.normal(k3, (m.width, m.vocab_size)) / np.sqrt(m.width),
                        ("embed", "vocab"),
                    )
                },
            }
        }

    def init_carry(self):
        return {"h": carry_leaf(jnp.zeros((self.config.data.batch_size, self.config.model.width)))}

    def sparse_rows(self, batch, rng):
        return {"embed/embedding": batch["tokens"][:, :-1]}

    def logits(self, params, carry, tokens):
        table = params["embed"]["embedding"]
        x_BLD = table.values if isinstance(table, Rows) else table[tokens[:, :-1]]

        def step(h, x):
            h = jnp.tanh(x + h @ params["mix"]["kernel"])
            # Keep the carried state laid out like the batch at every step: without this
            # constraint, XLA (jax 0.10.2, Shardy) computes wrong gradients for a scan
            # whose weight is sharded (fsdp, tensor) while the batch is split over
            # data x fsdp (tests/test_task_v2.py::test_xla_scan_needs_the_carry_constraint).
            h = nn.with_logical_constraint(h, ("act_batch", None))
            return h, h

        h, hs_LBD = jax.lax.scan(step, carry["h"], x_BLD.swapaxes(0, 1))
        return hs_LBD.swapaxes(0, 1) @ params["out"]["kernel"], {"h": h}

    def loss(self, params, carry, batch, rng, train):
        tokens = batch["tokens"]
        logits, carry = self.logits(params, carry, tokens)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return jnp.mean(losses), ({"weight": jnp.asarray(losses.size, jnp.float32)}, carry)

    # -- optimizer and update ----------------------------------------------------------------

    def make_optimizer(self, config):
        schedule = optax.linear_schedule(config.optim.lr, config.optim.lr * 0.1, config.train.steps)
        tx = optax.GradientTransformation(lambda params: {"count": jnp.zeros((), jnp.int32)}, None)
        self.schedule = schedule
        return tx, schedule

    def apply_update(self, params, grads, opt_state, batch):
        lr = self.schedule(opt_state["count"])

        def one(p, g):
            if isinstance(g, Rows):
                width = g.values.shape[-1]
                return p.at[g.ids.reshape(-1)].add(-lr * g.values.reshape(-1, width))
            return p - lr * g

        params = jax.tree_util.tree_map(one, params, grads, is_leaf=lambda x: isinstance(x, Rows))
        return params, {"count": opt_state["count"] + 1}

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, params, extras, rng, split="validation"):
        batches = self.eval_batches(split)
        metrics = make_loss_average(self)(params, batches, rng)
        tokens = batches["tokens"][0]
        logits, _ = self.logits(params, extras["carry"], tokens)
        sampled = jax.random.categorical(rng, logits)
        accuracy = jnp.mean(sampled == tokens[:, 1:])
        return {"loss": float(metrics["loss"]), "sampled_accuracy": float(accuracy)}

    # -- bookkeeping -----------------------------------------------------------------------------

    def eval_summary(self, metrics):
        return {"loss": float(metrics["loss"])}

    def global_batch_size(self):
        return self.config.data.batch_size

    def tokens_per_batch(self):
        return self.config.data.batch_size * self.config.data.context

    def flops_per_token(self):
        return 0.0

    def compute_dtype(self):
        return "float32"

    def save_assets(self, directory):
        pass

    def model_signature(self):
        return {"task": self.config.task, "model": self.config.model.signature()}


def config(**overrides):
    """The proof task's config (dotted overrides, e.g. ``{"parallel.mesh": "data:8"}``)."""
    from nlpjax import api
    from nlpjax import config as config_lib

    api.register_task(NAME, ProofTask)

    def section(cls, **values):
        return {**dataclasses.asdict(cls()), **values}

    tree = {
        "task": NAME,
        "seed": 0,
        "model": section(ProofModelConfig),
        "data": section(ProofDataConfig),
        "optim": section(config_lib.OptimConfig, lr=0.5, warmup_steps=0),
        "train": section(
            config_lib.TrainConfig, steps=12, log_every=2, steps_per_dispatch=2, progress=False
        ),
        "eval": section(config_lib.EvalConfig, every=4),
        "checkpoint": section(config_lib.CheckpointConfig, every=4, async_save=False),
        "parallel": section(config_lib.ParallelConfig),
    }
    return api.load_config(tree, overrides)


if __name__ == "__main__":
    from nlpjax import api

    workdir, *args = sys.argv[1:]
    overrides = dict(a.removeprefix("--").split("=", 1) for a in args)
    summary = api.train(config(**overrides), workdir)
    print(json.dumps({k: v for k, v in summary.items() if isinstance(v, int | float)}))
