"""Word2vec task: skip-gram or CBOW with negative sampling on the shared trainer.

Mikolov et al. 2013 (https://arxiv.org/abs/1310.4546). The host ships chunks of the token
stream (one row of the batch = ``data.chunk`` consecutive words, sentences marked by
segment ids); the device subsamples, builds the pairs and draws negatives
(``nlpjax.models.sgns``). The loss reads the two tables through ``sparse_rows`` and
``apply_update`` scatters word2vec's SGD step (summed over pairs, learning rate linear
from ``optim.lr`` to ``optim.lr * optim.min_lr_ratio``) into the touched rows only.
``evaluate`` reports WordSim-353 and SimLex-999 Spearman and analogy accuracy.
"""

import dataclasses
import logging
import os
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from nlpjax.config import Config
from nlpjax.data import pipeline, transforms
from nlpjax.data.skipgram_pipeline import training_counts
from nlpjax.data.special_tokens import NUM_SPECIAL
from nlpjax.data.tokenizers import (
    TokenizerConfig,
    save_tokenizer,
)
from nlpjax.errors import ConfigError, DataError
from nlpjax.evaluation import word_vectors as wvec
from nlpjax.models import sgns
from nlpjax.tasks.base import Rows
from nlpjax.tasks.common import TOKENIZER_FILE, split_documents, with_vocab_size, workdir_tokenizer

LOSSES = {"skipgram": sgns.skipgram_ns_loss, "cbow": sgns.cbow_ns_loss}
_NUM_ELEMENTS = 2**40  # the chunk stream cycles through the corpus epoch after epoch
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SGNSDataConfig:
    """Corpus, vocabulary and chunking of a word2vec run."""

    dataset: str = "tiny_shakespeare"  # a dataset spec (nlpjax.data.sources)
    tokenizer: TokenizerConfig = TokenizerConfig(kind="word", min_count=5)
    chunk: int = 1024  # consecutive words per batch row
    batch_size: int = 1  # rows per step
    sample: float = 1e-3  # word2vec's subsampling threshold t (0: none)
    ns_exponent: float = 0.75  # negatives ~ count ** ns_exponent
    word_eval_dir: str = ""  # '' -> $NLPJAX_DATA_DIR/word_eval
    analogy_restrict: int = 30_000
    tfds_data_dir: str = ""
    prefetch: int = 2

    def __post_init__(self):
        if self.chunk <= 0 or self.batch_size <= 0:
            raise ConfigError("data.chunk and data.batch_size must be > 0")
        if self.tokenizer.kind != "word":
            raise ConfigError(
                f"data.tokenizer.kind={self.tokenizer.kind!r}: word2vec needs word counts; "
                "use data.tokenizer.kind='word'"
            )
        if self.sample < 0:
            raise ConfigError("data.sample must be >= 0 (0 disables subsampling)")


def _warn_skipped(path, report: dict) -> None:
    """Malformed lines of an evaluation file are skipped, and said so (once per file)."""
    if report["skipped_lines"] and str(path) not in _WARNED:
        _WARNED.add(str(path))
        logger.warning(
            "%s: %d malformed line(s) skipped (want 'word1 word2 score' or, for analogies, "
            "': section' headers and 'a b c d' questions)",
            path,
            report["skipped_lines"],
        )


_WARNED: set[str] = set()


class SGNSTask:
    """word2vec on a text corpus (see ``nlpjax.tasks.base.Task``)."""

    model_config_cls = sgns.SGNSConfig
    data_config_cls = SGNSDataConfig

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        if config.model.objective not in LOSSES:
            raise ConfigError(
                f"model.objective={config.model.objective!r}: the sgns task trains "
                f"{' or '.join(LOSSES)} (the full softmax reads the whole table: use "
                "nlpjax.models.sgns.skipgram_softmax_loss directly)"
            )
        self.config = config
        docs: dict[str, list[str]] = {}

        def texts() -> list[str]:
            docs["train"] = self._documents("train")
            return docs["train"]

        self.tokenizer, self._tokenizer_file = workdir_tokenizer(config, workdir, texts)
        vocab = self.tokenizer.vocab_size
        self.config = with_vocab_size(config, vocab, name="vocabulary", unit="ids")
        counts = training_counts(self.tokenizer.counts_array())
        if counts.sum() == 0:
            raise DataError(f"no word of {config.data.dataset!r} is in the vocabulary")
        self.keep_V = transforms.keep_probabilities(counts, config.data.sample)
        self.accept_V, self.alias_V = sgns.negative_table(counts, config.data.ns_exponent)
        self.capacity = sgns.kept_capacity(self.keep_V, counts, config.data.chunk)
        self._train_docs = docs.get("train")
        self._streams: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- data ---------------------------------------------------------------------------

    def _documents(self, split: str) -> list[str]:
        data = self.config.data
        return split_documents(data.dataset, split, data.tfds_data_dir)

    def stream(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(ids, sentence number) of the split's words that are trained on (as word2vec,
        words outside the vocabulary are dropped before windows are formed); each
        non-empty line is a sentence, which no window crosses."""
        if split not in self._streams:
            docs = self._train_docs if split == "train" and self._train_docs else None
            docs = docs or self._documents(split)
            lines = [line for doc in docs for line in doc.splitlines() if line.strip()]
            encoded = [self.tokenizer.encode(line) for line in lines]
            ids = np.concatenate(encoded) if encoded else np.zeros(0, np.int32)
            numbers = np.repeat(np.arange(1, len(encoded) + 1), [len(e) for e in encoded])
            trained = self.keep_V[ids] > 0
            self._streams[split] = ids[trained].astype(np.int32), numbers[trained].astype(np.int32)
        return self._streams[split]

    def _chunks(self, split: str) -> grain.MapDataset:
        """Batch t holds chunks t * B .. t * B + B - 1 of the stream (cycling over epochs);
        each host takes every ``count``-th chunk of a batch."""
        ids, numbers = self.stream(split)
        chunk = self.config.data.chunk
        num_chunks = max(1, -(-len(ids) // chunk))
        pad = num_chunks * chunk - len(ids)
        ids_NT = np.pad(ids, (0, pad)).reshape(num_chunks, chunk)
        numbers_NT = np.pad(numbers, (0, pad)).reshape(num_chunks, chunk)
        shard = pipeline.Shard.this_host()
        if self.config.data.batch_size % shard.count:
            raise ConfigError(
                f"data.batch_size={self.config.data.batch_size} does not split over "
                f"{shard.count} hosts"
            )

        def row(i):
            return {"ids": ids_NT[i % num_chunks], "segments": numbers_NT[i % num_chunks]}

        ds = grain.MapDataset.range(_NUM_ELEMENTS).map(row)[shard.index :: shard.count]
        return ds.batch(self.config.data.batch_size // shard.count, drop_remainder=True)

    def steps_per_epoch(self) -> int:
        chunks = -(-len(self.stream("train")[0]) // self.config.data.chunk)
        return max(1, -(-chunks // self.config.data.batch_size))

    def train_iterator(self) -> grain.DatasetIterator:
        return pipeline.iterator(
            self._chunks("train"),
            self.config.data.prefetch,
            vocabulary=self.tokenizer,
            vocab_file=self._tokenizer_file,
        )

    def eval_batches(self, split: str = "validation") -> dict[str, np.ndarray]:
        return pipeline.take_stacked(self._chunks("train"), self.config.eval.num_batches)

    # -- model --------------------------------------------------------------------------

    def init(self, rng) -> Any:
        return sgns.SGNS(self.config.model).init(rng)

    def init_carry(self) -> dict:
        return {}

    def _draws(self, batch, rng):
        """Per row: (packed ids, valid, segments, overflow), the pair mask, negative ids."""
        cfg = self.config.model
        keep, accept, alias = (jnp.asarray(a) for a in (self.keep_V, self.accept_V, self.alias_V))
        rows = batch["ids"].shape[0]
        keys = jax.random.split(rng, rows)

        def one(ids_T, segments_T, key):
            k_sub, k_win, k_neg = jax.random.split(key, 3)
            ids, valid, segments, overflow = sgns.subsample(
                ids_T, keep, k_sub, segments_T, self.capacity
            )
            reach = cfg.window - jax.random.randint(k_win, valid.shape, 0, cfg.window)
            if cfg.objective != "skipgram" or cfg.negative_sharing == "pair":
                mask, position = sgns.window_pairs(valid, reach, cfg.window, segments)
            else:  # the same pairs in the positive scores' block layout (cheaper to build)
                mask = sgns.window_pairs_blocked(valid, reach, cfg.window, segments)
                position = None
            shape = sgns.negative_shape(cfg, self.capacity)
            negatives = sgns.sample_negatives(k_neg, accept, alias, shape)
            return ids, mask, position, negatives, overflow

        return jax.vmap(one)(batch["ids"], batch["segments"], keys)

    def sparse_rows(self, batch, rng) -> dict[str, jax.Array]:
        ids, _, _, negatives, _ = self._draws(batch, rng)
        rows = ids.shape[0]
        context = jnp.concatenate([ids, negatives.reshape(rows, -1)], axis=1)
        return {"center": ids, "context": context}

    def loss(self, params, carry, batch, rng, train: bool):
        cfg = self.config.model
        ids, mask, position, negatives, overflow = self._draws(batch, rng)
        center, context = params["center"], params["context"]
        v_BME = center.values if isinstance(center, Rows) else center[ids]
        if isinstance(context, Rows):
            u_BME = context.values[:, : ids.shape[1]]
            neg = context.values[:, ids.shape[1] :].reshape(*negatives.shape, -1)
        else:
            u_BME, neg = context[ids], context[negatives]
        loss_fn = LOSSES[cfg.objective]

        def one(v, u, n, m):
            return loss_fn(v, u, n, m, cfg.window, cfg.negative_sharing, cfg.negatives)

        sums, pairs = jax.vmap(one)(v_BME, u_BME, neg, mask)
        total, count = jnp.sum(sums), jnp.sum(pairs)
        metrics = {
            "pair_loss": total / jnp.maximum(count, 1.0),
            "pairs": count,
            "overflow": jnp.sum(overflow).astype(jnp.float32),
        }
        # Divided by the batch's token slots: apply_update multiplies the step back up, so
        # the update is word2vec's per-pair SGD summed, on one device or many.
        return total / ids.size, (metrics, carry)

    # -- optimizer and update -----------------------------------------------------------

    def make_optimizer(self, config: Config):
        lr = config.optim.lr
        schedule = sgns.linear_lr(config.train.steps, lr, lr * config.optim.min_lr_ratio)
        self.schedule = schedule

        def init(params):
            return {"count": jnp.zeros((), jnp.int32)}

        return optax.GradientTransformation(init, None), schedule

    def apply_update(self, params, grads, opt_state, batch):
        lr = self.schedule(opt_state["count"])
        slots = self.config.data.batch_size * self.capacity  # the loss's divisor, globally

        def one(table, g):
            if isinstance(g, Rows):
                return sgns.sparse_sgd(table, g.ids, g.values * slots, lr)
            return table

        params = jax.tree_util.tree_map(one, params, grads, is_leaf=lambda x: isinstance(x, Rows))
        return params, {"count": opt_state["count"] + 1}

    # -- evaluation -----------------------------------------------------------------------

    def word_vectors(self, params) -> wvec.WordVectors:
        words = self.tokenizer.words
        table = np.asarray(jax.device_get(params["center"]))
        return wvec.WordVectors(words, table[NUM_SPECIAL : NUM_SPECIAL + len(words)])

    def _eval_dir(self) -> epath.Path:
        given = self.config.data.word_eval_dir
        data_dir = os.environ.get("NLPJAX_DATA_DIR", ".")
        return epath.Path(given or os.path.join(data_dir, "word_eval"))

    def evaluate(self, params, extras, rng, split: str = "validation") -> dict[str, float]:
        """WordSim-353 and SimLex-999 Spearman, analogy accuracy (3CosAdd over the
        ``data.analogy_restrict`` most frequent words) and their coverages."""
        wv, directory, out = self.word_vectors(params), self._eval_dir(), {}
        for name, filename in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")):
            path = directory / filename
            if path.exists():
                report = wvec.word_similarity(wv, path)
                _warn_skipped(path, report)
                out[name], out[f"{name}_coverage"] = report["spearman"], report["coverage"]
        path = directory / "questions-words.txt"
        if path.exists():
            report = wvec.word_analogies(wv, path, self.config.data.analogy_restrict)
            _warn_skipped(path, report)
            out["analogy"], out["analogy_coverage"] = report["accuracy"], report["coverage"]
        if not out:
            logger.warning("no word-evaluation files in %s (set data.word_eval_dir)", directory)
        return out

    def eval_summary(self, metrics: dict) -> dict:
        return {"loss": float(metrics["loss"])}

    # -- bookkeeping ------------------------------------------------------------------------

    def global_batch_size(self) -> int:
        return self.config.data.batch_size

    def tokens_per_batch(self) -> int:
        return self.config.data.batch_size * self.config.data.chunk

    def flops_per_token(self) -> float:
        cfg = self.config.model
        negatives = cfg.batch_negatives if cfg.negative_sharing == "batch" else cfg.negatives
        return 6.0 * cfg.embed_dim * (cfg.num_contexts + negatives)

    def compute_dtype(self) -> str:
        return "float32"

    def save_assets(self, directory: epath.PathLike) -> None:
        save_tokenizer(self.tokenizer, epath.Path(directory) / TOKENIZER_FILE)

    def model_signature(self) -> dict:
        return {"task": self.config.task, "model": self.config.model.signature()}

    # -- faces ------------------------------------------------------------------------------

    def generator(self, params, sampling):
        raise ConfigError(
            "the sgns task trains word vectors and generates no text; use `nlpjax eval` "
            "for its similarity and analogy numbers"
        )

    def describe_data(self, split: str, num_examples: int) -> str:
        """Vocabulary, stream and the first ``num_examples`` chunks (``nlpjax data inspect``;
        word2vec trains on the train split only, so ``split`` picks the stream shown)."""
        ids, numbers = self.stream(split)
        data, words = self.config.data, self.tokenizer.words
        counts = self.tokenizer.counts
        chunk = data.chunk
        kept = float(np.mean(self.keep_V[ids])) if len(ids) else 0.0
        lines = [
            f"dataset {data.dataset!r}, split {split}: {len(ids):,} words trained on, "
            f"{int(numbers.max(initial=0)):,} sentences",
            f"vocabulary: {len(words):,} words with count >= {data.tokenizer.min_count} "
            f"(most frequent: "
            + ", ".join(f"{w} {c:,}" for w, c in zip(words[:8], counts[:8], strict=False))
            + ")",
            f"chunks of {chunk} words: {-(-len(ids) // chunk):,} per epoch, "
            f"{self.steps_per_epoch():,} steps of {data.batch_size} per epoch; subsampling "
            f"(t={data.sample}) keeps {kept:.1%} of the words, into {self.capacity} slots",
        ]
        for i in range(min(num_examples, -(-len(ids) // chunk))):
            piece = ids[i * chunk : i * chunk + 24]
            lines.append(f"chunk {i}: {self.tokenizer.decode(piece)} ...")
        return "\n".join(lines)
