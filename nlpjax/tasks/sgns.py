"""Word2vec task: skip-gram or CBOW with negative sampling on the shared trainer.

Mikolov et al. 2013 (https://arxiv.org/abs/1310.4546). The host subsamples the word
stream once per epoch (``skipgram_pipeline.SubsampledStream``) and ships chunks of the
kept words (one row of the batch = ``data.chunk`` consecutive kept words, sentences
marked by segment ids); the device draws each step's random bits in one call, builds
the dynamic-window pairs and draws negatives from them (``nlpjax.models.sgns``). The
loss reads the two tables through ``sparse_rows`` and ``apply_update`` scatters
word2vec's SGD step (summed over pairs, learning rate linear from ``optim.lr`` to
``optim.lr * optim.min_lr_ratio``) into the touched rows only.
``evaluate`` reports WordSim-353 and SimLex-999 Spearman and analogy accuracy.
"""

import dataclasses
import logging
import math
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
from nlpjax.data.skipgram_pipeline import SubsampledStream, chunk_batches, training_counts
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
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SGNSDataConfig:
    """Corpus, vocabulary and chunking of a word2vec run."""

    dataset: str = "tiny_shakespeare"  # a dataset spec (nlpjax.data.sources)
    tokenizer: TokenizerConfig = TokenizerConfig(kind="word", min_count=5)
    chunk: int = 768  # consecutive kept (subsampled) words per batch row
    batch_size: int = 1  # rows per step
    sample: float = 1e-3  # word2vec's subsampling threshold t (0: none)
    ns_exponent: float = 0.75  # negatives ~ count ** ns_exponent
    word_eval_dir: str = ""  # '' -> $NLPJAX_DATA_DIR/word_eval
    analogy_restrict: int = 30_000
    tfds_data_dir: str = ""
    prefetch: int = 0  # batches are slices of the subsampled stream: no thread needed

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


def evaluate_word_vectors(wv: wvec.WordVectors, directory, restrict: int) -> dict[str, float]:
    """WordSim-353 and SimLex-999 Spearman, analogy accuracy (3CosAdd over the ``restrict``
    most frequent words) and their coverages, from the files in ``directory`` (those
    missing are left out, with a warning when all are)."""
    directory, out = epath.Path(directory), {}
    for name, filename in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")):
        path = directory / filename
        if path.exists():
            report = wvec.word_similarity(wv, path)
            _warn_skipped(path, report)
            out[name], out[f"{name}_coverage"] = report["spearman"], report["coverage"]
    path = directory / "questions-words.txt"
    if path.exists():
        report = wvec.word_analogies(wv, path, restrict)
        _warn_skipped(path, report)
        out["analogy"], out["analogy_coverage"] = report["accuracy"], report["coverage"]
    if not out:
        logger.warning("no word-evaluation files in %s (set data.word_eval_dir)", directory)
    return out


def _check_objective(config: Config) -> None:
    if config.model.objective not in LOSSES:
        raise ConfigError(
            f"model.objective={config.model.objective!r}: the sgns task trains "
            f"{' or '.join(LOSSES)} (the full softmax reads the whole table: use "
            "nlpjax.models.sgns.skipgram_softmax_loss directly)"
        )


class SGNSTask:
    """word2vec on a text corpus (see ``nlpjax.tasks.base.Task``)."""

    model_config_cls = sgns.SGNSConfig
    data_config_cls = SGNSDataConfig

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        _check_objective(config)
        self.config = config
        docs: dict[str, list[str]] = {}

        def texts() -> list[str]:
            docs["train"] = self._documents("train")
            return docs["train"]

        self.tokenizer, self._tokenizer_file = workdir_tokenizer(config, workdir, texts)
        self._set_counts(config, self.tokenizer.counts_array())
        self._train_docs = docs.get("train")

    @classmethod
    def for_counts(cls, config: Config, counts_V: np.ndarray) -> "SGNSTask":
        """A task with the word counts ``counts_V`` and no corpus: its training step runs on
        batches made elsewhere (``benchmarks/bench_sgns.py --vocab_scaling``)."""
        _check_objective(config)
        task = cls.__new__(cls)
        task.tokenizer, task._tokenizer_file, task._train_docs = None, "", None
        task._set_counts(config, counts_V)
        return task

    def _set_counts(self, config: Config, counts_V: np.ndarray) -> None:
        """The vocabulary size, subsampling keep rates and negative table from the counts."""
        self.config = with_vocab_size(config, len(counts_V), name="vocabulary", unit="ids")
        counts = training_counts(counts_V)
        if counts.sum() == 0:
            raise DataError(f"no word of {config.data.dataset!r} is in the vocabulary")
        self.keep_V = transforms.keep_probabilities(counts, config.data.sample)
        self.accept_V, self.alias_V = sgns.negative_table(counts, config.data.ns_exponent)
        self._streams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._subsampled: dict[str, SubsampledStream] = {}

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
            ids, lengths = self.tokenizer.encode_lines(lines)
            numbers = np.repeat(np.arange(1, len(lines) + 1), lengths)
            trained = self.keep_V[ids] > 0
            self._streams[split] = ids[trained].astype(np.int32), numbers[trained].astype(np.int32)
        return self._streams[split]

    def subsampled(self, split: str = "train") -> SubsampledStream:
        """The split's stream subsampled anew every epoch (seeded by ``config.seed``)."""
        if split not in self._subsampled:
            ids, numbers = self.stream(split)
            if not len(ids):
                raise DataError(f"the {split} split of {self.config.data.dataset!r} has no word")
            stream = SubsampledStream(ids, numbers, self.keep_V, self.config.seed)
            self._subsampled[split] = stream
        return self._subsampled[split]

    def _chunks(self, split: str) -> grain.MapDataset:
        """Batch t holds chunks t * B .. t * B + B - 1 of the subsampled stream (epoch
        after epoch); each host takes every ``count``-th chunk of a batch."""
        shard, data = pipeline.Shard.this_host(), self.config.data
        if data.batch_size % shard.count:
            raise ConfigError(
                f"data.batch_size={data.batch_size} does not split over {shard.count} hosts"
            )
        return chunk_batches(self.subsampled(split), data.chunk, data.batch_size, shard)

    def steps_per_epoch(self) -> int:
        """Steps that take one epoch's kept words (on average: subsampling varies)."""
        words = self.subsampled("train").expected_words_per_epoch()
        return max(1, round(words / (self.config.data.chunk * self.config.data.batch_size)))

    def train_iterator(self) -> grain.DatasetIterator:
        return pipeline.iterator(
            self._chunks("train"),
            self.config.data.prefetch,
            vocabulary=self.tokenizer,
            vocab_file=self._tokenizer_file,
        )

    def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
        """One global training batch: ``data.batch_size`` rows of ``data.chunk`` ids and
        sentence numbers (the loop compiles the step from it before reading the corpus)."""
        shape = (self.config.data.batch_size, self.config.data.chunk)
        return {name: jax.ShapeDtypeStruct(shape, jnp.int32) for name in ("ids", "segments")}

    def eval_batches(self, split: str = "validation") -> dict[str, np.ndarray]:
        return pipeline.take_stacked(self._chunks("train"), self.config.eval.num_batches)

    # -- model --------------------------------------------------------------------------

    def init(self, rng) -> Any:
        return sgns.SGNS(self.config.model).init(rng)

    def host_init(self, seed: int) -> dict[str, np.ndarray]:
        """The tables ``init`` describes, filled on the host (numpy, seeded by ``seed``):
        the trainer places them instead of compiling a table-sized init."""
        return sgns.host_tables(self.config.model, seed)

    def init_carry(self) -> dict:
        return {}

    def _draws(self, batch, rng):
        """Per row: the pair mask and the negative ids, from one ``jax.random.bits`` call
        for the whole batch (each word's window reach, then the negatives' buckets and
        coins). Segment 0 marks padding (none in training batches)."""
        cfg = self.config.model
        accept, alias = jnp.asarray(self.accept_V), jnp.asarray(self.alias_V)
        rows, length = batch["ids"].shape
        shape = sgns.negative_shape(cfg, length)
        bits = jax.random.bits(rng, (rows, length + 2 * math.prod(shape)), jnp.uint32)

        def one(segments_L, bits_W):
            valid = segments_L > 0
            reach = cfg.window - (bits_W[:length] % cfg.window).astype(jnp.int32)
            if cfg.objective != "skipgram" or cfg.negative_sharing == "pair":
                mask, _ = sgns.window_pairs(valid, reach, cfg.window, segments_L)
            else:  # the same pairs in the positive scores' block layout (cheaper to build)
                mask = sgns.window_pairs_blocked(valid, reach, cfg.window, segments_L)
            negatives = sgns.negatives_from_bits(bits_W[length:].reshape(2, *shape), accept, alias)
            return mask, negatives

        return jax.vmap(one)(batch["segments"], bits)

    def sparse_rows(self, batch, rng) -> dict[str, jax.Array]:
        ids = batch["ids"]
        negatives = self._draws(batch, rng)[1]
        context = jnp.concatenate([ids, negatives.reshape(ids.shape[0], -1)], axis=1)
        return {"center": ids, "context": context}

    def loss(self, params, carry, batch, rng, train: bool):
        cfg = self.config.model
        ids = batch["ids"]
        mask, negatives = self._draws(batch, rng)
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
        metrics = {"pair_loss": total / jnp.maximum(count, 1.0), "pairs": count}
        # Divided by the batch's token slots: apply_update multiplies the step back up, so
        # the update is word2vec's per-pair SGD summed, on one device or many.
        return total / ids.size, (metrics, carry)

    # -- optimizer and update -----------------------------------------------------------

    def make_optimizer(self, config: Config):
        lr = config.optim.lr
        schedule = sgns.linear_lr(config.train.steps, lr, lr * config.optim.min_lr_ratio)
        self.schedule = schedule

        def init(params):  # a host array: the trainer places the state made on the host
            return {"count": np.zeros((), np.int32)}

        return optax.GradientTransformation(init, None), schedule

    def apply_update(self, params, grads, opt_state, batch):
        lr = self.schedule(opt_state["count"])
        slots = self.config.data.batch_size * self.config.data.chunk  # the loss's divisor

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
        """``evaluate_word_vectors`` of the center table (``data.word_eval_dir``)."""
        restrict = self.config.data.analogy_restrict
        return evaluate_word_vectors(self.word_vectors(params), self._eval_dir(), restrict)

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
        """Vocabulary, stream and the first ``num_examples`` chunks of epoch 0 after
        subsampling (``nlpjax data inspect``; word2vec trains on the train split only, so
        ``split`` picks the stream shown)."""
        ids, numbers = self.stream(split)
        data, words = self.config.data, self.tokenizer.words
        counts = self.tokenizer.counts
        chunk = data.chunk
        kept = float(np.mean(self.keep_V[ids])) if len(ids) else 0.0
        epoch_ids = self.subsampled(split).epoch(0)[0] if len(ids) else ids
        lines = [
            f"dataset {data.dataset!r}, split {split}: {len(ids):,} words trained on, "
            f"{int(numbers.max(initial=0)):,} sentences",
            f"vocabulary: {len(words):,} words with count >= {data.tokenizer.min_count} "
            f"(most frequent: "
            + ", ".join(f"{w} {c:,}" for w, c in zip(words[:8], counts[:8], strict=False))
            + ")",
            f"subsampling (t={data.sample}, anew each epoch) keeps {kept:.1%} of the words: "
            f"chunks of {chunk} kept words, about {self.steps_per_epoch():,} steps of "
            f"{data.batch_size} chunk(s) per epoch (set train.steps to epochs x that)",
        ]
        for i in range(min(num_examples, -(-len(epoch_ids) // chunk))):
            piece = epoch_ids[i * chunk : i * chunk + 24]
            lines.append(f"chunk {i}: {self.tokenizer.decode(piece)} ...")
        return "\n".join(lines)
