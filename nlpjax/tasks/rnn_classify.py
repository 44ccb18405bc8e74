"""Recurrent classifiers: a sentence classifier (``rnn_classifier``) and a per-token tagger
(``rnn_tagger``), with accuracy and macro-F1.

Both read small corpora, so each split is tokenized once into fixed arrays (``inputs``
(N, L), ``inputs_mask``, ``labels``: (N,) classes or (N, L) tags); training batches come
from those rows through grain (shuffled per epoch, checkpointable), and ``evaluate`` runs
the whole split, reporting the loss, ``accuracy``, ``macro_f1``, the F1 of every class, and
the same numbers for the majority-class baseline (every example, or token, predicted as
the training data's most frequent class), so a score can be judged against it.

- ``rnn_classifier``: ``labelled:`` data (``label<TAB>text`` files, ``nlpjax.data.labelled``);
  ``model.pooling`` final/max/mean over the mask; ``data.overflow`` decides what an input
  longer than ``data.max_length`` does (``error`` naming it, or ``truncate`` with the count
  logged). The label set is saved in the workdir (``labels.json``) and a resumed run must
  have the same one.
- ``rnn_tagger``: truecasing (``nlpjax.data.truecase``): the lowercased lines of a text
  corpus in, one tag per character out (``keep`` or ``upper``); the loss and the metrics
  count real tokens only.
"""

import dataclasses
import json
import logging
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from nlpjax.config import Config
from nlpjax.data import inspect, labelled, pipeline, sources, truecase
from nlpjax.data.tokenizers import TokenizerConfig, save_tokenizer
from nlpjax.errors import ConfigError, DataError
from nlpjax.evaluation.classification import classification_metrics
from nlpjax.models.rnn import GATES, RNNClassifier, RNNConfig, RNNTagger
from nlpjax.precision import resolve_dtype
from nlpjax.tasks.common import (
    TOKENIZER_FILE,
    split_documents,
    with_vocab_size,
    workdir_tokenizer,
)

LABELS_FILE = "labels.json"
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClassifyDataConfig:
    """Corpus, tokenizer and row shape of a classifier or tagger run.

    ``dataset``: a ``labelled:`` spec (classifier) or a text corpus (tagger).
    """

    dataset: str = ""
    tokenizer: TokenizerConfig = TokenizerConfig(kind="word", num_registers=0)
    max_length: int = 64  # tokens per example
    overflow: str = "error"  # an example over max_length: error | truncate
    batch_size: int = 32
    eval_batch_size: int = 256  # evaluation rows per compiled call
    tfds_data_dir: str = ""
    prefetch: int = 4

    def __post_init__(self):
        if not self.dataset:
            raise ConfigError("data.dataset is empty: name the corpus (see the README)")
        for key in ("max_length", "batch_size", "eval_batch_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"data.{key} must be > 0, got {getattr(self, key)}")
        if self.overflow not in labelled.OVERFLOW:
            raise ConfigError(
                f"data.overflow must be one of {labelled.OVERFLOW}, got {self.overflow!r}"
            )


class _ArraysTask:
    """What the classifier and the tagger share: split arrays, batches, loss, evaluation.

    A subclass sets ``model_cls`` and ``class_names`` and defines ``_texts(split)`` (the
    tokenizer's training texts) and ``_arrays(split)``.
    """

    model_config_cls = RNNConfig
    data_config_cls = ClassifyDataConfig
    model_cls: type

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        self.config = config
        self._arrays_cache: dict[str, dict[str, np.ndarray]] = {}
        self.tokenizer, self._tokenizer_file = workdir_tokenizer(
            config, workdir, lambda: self._texts("train")
        )
        config = with_vocab_size(config, self.tokenizer.vocab_size)
        self.config = _with_num_classes(config, len(self.class_names))
        self.model = self.model_cls(self.config.model)
        self._logits = jax.jit(self._logits_fn)

    # -- data ---------------------------------------------------------------------------

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """The split's rows: ``inputs``, ``inputs_mask`` (N, L) and ``labels``."""
        if split not in self._arrays_cache:
            self._arrays_cache[split] = self._arrays(split)
        return self._arrays_cache[split]

    def _rows(self, split: str) -> list[dict[str, np.ndarray]]:
        arrays = self.arrays(split)
        return [{k: v[i] for k, v in arrays.items()} for i in range(len(arrays["labels"]))]

    def train_iterator(self) -> grain.DatasetIterator:
        data, shard = self.config.data, pipeline.Shard.this_host()
        if data.batch_size % shard.count:
            raise ConfigError(f"data.batch_size={data.batch_size} does not split over hosts")
        rows = self._rows("train")
        self.arrays("validation")  # a bad validation line fails now, before any step
        if len(rows) < data.batch_size:
            raise DataError(
                f"the train split has {len(rows)} examples, fewer than data.batch_size="
                f"{data.batch_size}; lower data.batch_size"
            )
        ds = pipeline.epochs(rows, self.config.seed, shard)
        ds = ds.batch(data.batch_size // shard.count, drop_remainder=True)
        return pipeline.iterator(
            ds, data.prefetch, vocabulary=self.tokenizer, vocab_file=self._tokenizer_file
        )

    def eval_batches(self, split: str = "validation") -> dict[str, np.ndarray]:
        """The split's first ``eval.num_batches`` batches of ``data.batch_size`` rows."""
        arrays, n = self.arrays(split), self.config.data.batch_size
        count = min(self.config.eval.num_batches, len(arrays["labels"]) // n)
        if count == 0:
            raise DataError(f"the {split} split has fewer than data.batch_size={n} examples")
        return {k: v[: count * n].reshape(count, n, *v.shape[1:]) for k, v in arrays.items()}

    # -- model and loss -------------------------------------------------------------------

    def init(self, rng) -> Any:
        tokens = jnp.zeros((1, self.config.data.max_length), jnp.int32)
        return self.model.init(rng, tokens, jnp.ones_like(tokens, bool))

    def init_carry(self) -> dict:
        return {}

    def _logits_fn(self, params, inputs, mask, rng=None, train: bool = False):
        rngs = {"dropout": rng} if train and self.config.model.dropout > 0 else None
        return self.model.apply({"params": params}, inputs, mask, train=train, rngs=rngs)

    def loss(self, params, carry, batch, rng, train: bool):
        logits = self._logits_fn(params, batch["inputs"], batch["inputs_mask"], rng, train)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        weights = self._weights(batch).astype(jnp.float32)
        weight = jnp.sum(weights)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["labels"]) * weights)
        metrics = {"weight": weight, "accuracy": correct / jnp.maximum(weight, 1.0)}
        return jnp.sum(losses * weights) / jnp.maximum(weight, 1.0), (metrics, carry)

    def _weights(self, batch) -> jax.Array:
        """What each loss term counts: 1 per example (classifier), per real token (tagger)."""
        return jnp.ones_like(batch["labels"], bool)

    def eval_summary(self, metrics: dict) -> dict:
        return {k: float(v) for k, v in metrics.items() if k != "weight"}

    def evaluate(self, params, extras: dict, rng, split: str = "validation") -> dict[str, float]:
        """Loss, accuracy, macro-F1 and per-class F1 on the whole ``split``, and the
        majority-class baseline's accuracy and macro-F1."""
        arrays = self.arrays(split)
        logits = self.predict_logits(params, arrays["inputs"], arrays["inputs_mask"])
        valid = np.asarray(self._weights(arrays), bool)
        labels = arrays["labels"]
        log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)))
        nll = -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
        true, pred = labels[valid], np.argmax(logits, -1)[valid]
        summary = {"loss": float(nll[valid].mean())}
        summary.update(self._named(classification_metrics(true, pred, len(self.class_names))))
        majority = np.full_like(true, self.majority_class())
        baseline = classification_metrics(true, majority, len(self.class_names))
        summary["majority_accuracy"] = baseline["accuracy"]
        summary["majority_macro_f1"] = baseline["macro_f1"]
        summary["examples"] = float(len(labels))
        return summary

    def predict_logits(self, params, inputs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Logits of every row, ``data.eval_batch_size`` rows per compiled call (the last
        chunk padded to that size, so one shape compiles)."""
        n, chunk = len(inputs), self.config.data.eval_batch_size
        out = []
        for lo in range(0, n, chunk):
            x, m = inputs[lo : lo + chunk], mask[lo : lo + chunk]
            pad = chunk - len(x)
            if pad:
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
                m = np.concatenate([m, np.zeros((pad, *m.shape[1:]), m.dtype)])
            out.append(np.asarray(self._logits(params, x, m))[: chunk - pad])
        return np.concatenate(out)

    def majority_class(self) -> int:
        """The most frequent class of the training data (ties: the lowest id)."""
        train = self.arrays("train")
        true = train["labels"][np.asarray(self._weights(train), bool)]
        return int(np.argmax(np.bincount(true, minlength=len(self.class_names))))

    def _named(self, metrics: dict) -> dict:
        """``f1/<id>`` -> ``f1/<class name>``."""
        out = {}
        for key, value in metrics.items():
            if key.startswith("f1/"):
                key = f"f1/{self.class_names[int(key[3:])]}"
            out[key] = value
        return out

    # -- bookkeeping ----------------------------------------------------------------------

    def global_batch_size(self) -> int:
        return self.config.data.batch_size

    def tokens_per_batch(self) -> int:
        return self.config.data.batch_size * self.config.data.max_length

    def compute_dtype(self) -> str:
        return resolve_dtype(self.config.model.dtype).name

    def flops_per_token(self) -> float:
        """6 x the matmul parameters a token goes through (input and recurrent
        projections of every layer and direction); the head is per example or per token."""
        m = self.config.model
        gates, dirs = GATES[m.cell] * m.d_hidden, 2 if m.bidirectional else 1
        stack = sum(
            ((m.embed_dim if i == 0 else m.output_dim) * gates + m.d_hidden * gates) * dirs
            for i in range(m.num_layers)
        )
        return 6.0 * (stack + m.output_dim * m.num_classes)

    def save_assets(self, directory: epath.PathLike) -> None:
        save_tokenizer(self.tokenizer, epath.Path(directory) / TOKENIZER_FILE)
        path = epath.Path(directory) / LABELS_FILE
        path.write_text(json.dumps({"labels": list(self.class_names)}, indent=1) + "\n")

    def model_signature(self) -> dict:
        return {"task": self.config.task, "model": self.config.model.signature()}

    def describe_data(self, split: str, num_examples: int) -> str:
        return inspect.report(self, split, num_examples)


def _with_num_classes(config: Config, count: int) -> Config:
    """``config`` with ``model.num_classes`` from the data (a different non-zero value is
    a ``ConfigError``)."""
    if config.model.num_classes not in (0, count):
        raise ConfigError(
            f"model.num_classes={config.model.num_classes} but the data has {count} classes; "
            "set model.num_classes=0 to take it from the data"
        )
    model = dataclasses.replace(config.model, num_classes=count)
    return dataclasses.replace(config, model=model)


def check_saved_labels(workdir: epath.PathLike | None, labels: tuple[str, ...]) -> None:
    """A workdir's ``labels.json`` (written at the first checkpoint) must list ``labels``:
    class ids index the saved head's rows, so another label set would misread them."""
    path = epath.Path(workdir) / LABELS_FILE if workdir else None
    if path is None or not path.is_file():
        return
    try:
        saved = tuple(json.loads(path.read_text())["labels"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: unreadable label file ({e}); restore it or use a new --workdir"
        ) from None
    if saved != labels:
        raise DataError(
            f"{path}: the run was trained with labels {list(saved)}, but data.dataset now has "
            f"{list(labels)}; use the same label set (;labels=... fixes the order) or a new "
            "--workdir"
        )


class RNNClassifierTask(_ArraysTask):
    """Sentence classification from ``labelled:`` data (see the module docstring)."""

    model_cls = RNNClassifier

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        spec = config.data.dataset
        if sources.parse_dataset(spec).kind != "labelled":
            raise ConfigError(
                f"data.dataset={spec!r} is not labelled data; the classifier reads "
                "'labelled:TRAIN.tsv;validation=VAL.tsv' (label<TAB>text lines)"
            )
        self.class_names = sources.label_names(spec)
        check_saved_labels(workdir, self.class_names)
        super().__init__(config, workdir)

    def _examples(self, split: str) -> list[dict[str, str]]:
        data = self.config.data
        return sources.open_text(data.dataset, split, data.tfds_data_dir).read_all()

    def _texts(self, split: str) -> list[str]:
        return [ex["text"] for ex in self._examples(split)]

    def _arrays(self, split: str) -> dict[str, np.ndarray]:
        data = self.config.data
        arrays, _ = labelled.classification_arrays(
            self._examples(split),
            self.tokenizer.encode,
            self.class_names,
            data.max_length,
            data.overflow,
            where=f"{data.dataset} [{split}]",
        )
        return arrays


class RNNTaggerTask(_ArraysTask):
    """Per-character truecasing tags for the lines of a text corpus (module docstring)."""

    model_cls = RNNTagger
    class_names = truecase.TAGS

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        if config.data.tokenizer.kind != "char":
            raise ConfigError(
                f"data.tokenizer.kind={config.data.tokenizer.kind!r}: the truecasing tagger "
                "tags characters; set data.tokenizer.kind='char'"
            )
        super().__init__(config, workdir)

    def _lines(self, split: str) -> list[str]:
        data = self.config.data
        return truecase.lines(split_documents(data.dataset, split, data.tfds_data_dir))

    def _texts(self, split: str) -> list[str]:
        return [truecase.lowercase(line) for line in self._lines(split)]

    def _arrays(self, split: str) -> dict[str, np.ndarray]:
        data = self.config.data
        return truecase.tag_arrays(
            self._lines(split),
            self.tokenizer.encode,
            data.max_length,
            data.overflow,
            where=f"{data.dataset} [{split}]",
        )

    def _weights(self, batch) -> jax.Array:
        return batch["inputs_mask"]
