"""Recurrent language model task: truncated backpropagation through time over streams.

Zaremba et al. 2014, https://arxiv.org/abs/1409.2329: the corpus is cut into
``data.batch_size`` contiguous streams (``pipeline.lm_streams``); row i of batch t+1
continues row i of batch t, and the hidden state at the end of a batch is the start state
of the next (the task's carry, checkpointed with the run). Gradients stop at batch
boundaries. Evaluation runs the validation streams in order from a zero state.
"""

import dataclasses
import logging
import math
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from nlpjax.config import Config
from nlpjax.data import inspect, pipeline
from nlpjax.data.tokenizers import (
    TokenizerConfig,
    join_documents,
    save_tokenizer,
)
from nlpjax.errors import ConfigError
from nlpjax.models.rnn import GATES, RNNLM, RNNConfig, init_carry
from nlpjax.precision import resolve_dtype
from nlpjax.tasks.base import carry_leaf
from nlpjax.tasks.common import (
    TOKENIZER_FILE,
    split_documents,
    with_vocab_size,
    workdir_tokenizer,
)
from nlpjax.tasks.lm import _check_has_validation

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RNNLMDataConfig:
    """Corpus, tokenizer and stream shape: ``batch_size`` streams, ``context`` tokens per
    step (the truncation length of backpropagation through time)."""

    dataset: str = "tiny_shakespeare"
    tokenizer: TokenizerConfig = TokenizerConfig()
    context: int = 64
    batch_size: int = 32
    tfds_data_dir: str = ""
    prefetch: int = 4

    def __post_init__(self):
        if self.context <= 0 or self.batch_size <= 0:
            raise ConfigError("data.context and data.batch_size must be > 0")


class RNNLMTask:
    """RNN LM with a carried hidden state (see ``nlpjax.tasks.base.Task``)."""

    model_config_cls = RNNConfig
    data_config_cls = RNNLMDataConfig

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        if config.model.bidirectional:
            raise ConfigError(
                "model.bidirectional=true: a language model reads left to right; set it to false"
            )
        _check_has_validation(config.data.dataset)
        self.config = config
        self._tokens: dict[str, np.ndarray] = {}
        self.tokenizer, self._tokenizer_file = workdir_tokenizer(
            config, workdir, lambda: self._documents("train")
        )
        self.config = with_vocab_size(config, self.tokenizer.vocab_size)
        self.model = RNNLM(self.config.model)

    # -- data ---------------------------------------------------------------------------

    def _documents(self, split: str) -> list[str]:
        data = self.config.data
        return split_documents(data.dataset, split, data.tfds_data_dir)

    def tokens(self, split: str) -> np.ndarray:
        if split not in self._tokens:
            self._tokens[split] = join_documents(self.tokenizer, self._documents(split))
        return self._tokens[split]

    def _streams(self, split: str, seed: int) -> grain.MapDataset:
        data = self.config.data
        return pipeline.lm_streams(
            self.tokens(split), data.context + 1, data.batch_size, seed, pipeline.Shard.this_host()
        )

    def train_iterator(self) -> grain.DatasetIterator:
        return pipeline.iterator(
            self._streams("train", self.config.seed),
            self.config.data.prefetch,
            vocabulary=self.tokenizer,
            vocab_file=self._tokenizer_file,
        )

    def eval_batches(self, split: str = "validation") -> dict[str, np.ndarray]:
        """The first ``eval.num_batches`` consecutive steps of the ``split`` streams, at
        most one pass over them: further steps would start the rows again (at another
        offset) while the evaluation carries the state on from their ends, and count
        text twice. A larger ``eval.num_batches`` is cut to one pass, with a warning."""
        data, wanted = self.config.data, self.config.eval.num_batches
        one_pass = pipeline.stream_steps_per_epoch(
            len(self.tokens(split)), data.context + 1, data.batch_size
        )
        if wanted > one_pass >= 1:
            logger.warning(
                "eval.num_batches=%d is more than one pass over the %s streams (%d steps "
                "of %d x %d tokens); evaluating those %d",
                wanted, split, one_pass, data.batch_size, data.context, one_pass,
            )  # fmt: skip
        return pipeline.take_stacked(
            self._streams(split, self.config.eval.seed), min(wanted, one_pass)
        )

    # -- model and loss -----------------------------------------------------------------

    def init(self, rng) -> Any:
        return self.model.init(rng, jnp.zeros((1, self.config.data.context), jnp.int32))

    def init_carry(self) -> dict:
        """The zero state of every layer, one row per stream (``carry_leaf``)."""
        state = init_carry(self.config.model, self.config.data.batch_size)
        return {"state": jax.tree_util.tree_map(carry_leaf, _to_dict(state))}

    def loss(self, params, carry, batch, rng, train: bool):
        tokens = batch["tokens"]
        state = _to_tuple(jax.lax.stop_gradient(carry["state"]))  # truncated BPTT
        rngs = {"dropout": rng} if train and self.config.model.dropout > 0 else None
        logits_BLV, state = self.model.apply(
            {"params": params}, tokens[:, :-1], state, train=train, rngs=rngs
        )
        losses = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, tokens[:, 1:])
        weight = jnp.asarray(losses.size, jnp.float32)
        return jnp.mean(losses), ({"weight": weight}, {"state": _to_dict(state)})

    def eval_summary(self, metrics: dict) -> dict:
        loss = float(metrics["loss"])
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    # -- bookkeeping ----------------------------------------------------------------------

    def global_batch_size(self) -> int:
        return self.config.data.batch_size

    def tokens_per_batch(self) -> int:
        return self.config.data.batch_size * self.config.data.context

    def compute_dtype(self) -> str:
        return resolve_dtype(self.config.model.dtype).name

    def flops_per_token(self) -> float:
        """6 x the matmul parameters a token goes through (input, recurrent, output)."""
        m = self.config.model
        gates = GATES[m.cell] * m.d_hidden
        recurrent = sum(
            (m.embed_dim if i == 0 else m.d_hidden) * gates + m.d_hidden * gates
            for i in range(m.num_layers)
        )
        return 6.0 * (recurrent + m.d_hidden * m.vocab_size)

    def save_assets(self, directory: epath.PathLike) -> None:
        save_tokenizer(self.tokenizer, epath.Path(directory) / TOKENIZER_FILE)

    def model_signature(self) -> dict:
        return {"task": self.config.task, "model": self.config.model.signature()}

    def describe_data(self, split: str, num_examples: int) -> str:
        return inspect.report(self, split, num_examples)


def _to_dict(state: tuple) -> dict:
    """The stack's carry as named dicts (checkpoint-friendly): layer_i -> {c, h} or {h}."""
    return {
        f"layer_{i}": dict(zip(("c", "h") if len(layer) == 2 else ("h",), layer, strict=True))
        for i, layer in enumerate(state)
    }


def _to_tuple(state: dict) -> tuple:
    """Inverse of ``_to_dict``."""
    layers = [state[f"layer_{i}"] for i in range(len(state))]
    return tuple((lay["c"], lay["h"]) if "c" in lay else (lay["h"],) for lay in layers)
