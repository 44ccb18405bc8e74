"""Text-to-text task: T5 on a parallel corpus (Multi30k German -> English), or T5's
span-corruption pretraining on any text corpus (``data.objective``).

Raffel et al., 2020 (T5), https://arxiv.org/abs/1910.10683. Every source gets a task
prefix ("translate German to English: "); pairs are packed into fixed (B, S) + (B, T)
rows with segment ids (``data.seq2seq_pipeline``); the loss is the per-token
cross-entropy of the targets (optional label smoothing and z-loss). ``evaluate`` reports
the validation loss and, with ``data.bleu_examples`` (-1: the whole split), greedy
translations scored with sacrebleu's BLEU and chrF, written to the workdir as
``hypotheses_<split>_<step>.txt``. Pairs with an empty target are skipped (counted in the
log); sources longer than ``data.source_length`` are cut or refused (``data.too_long``).
"""

import dataclasses
import logging
import math
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu
from etils import epath

from nlpjax.config import Config
from nlpjax.data import inspect, pipeline, seq2seq_pipeline, transforms
from nlpjax.data.sources import default_fields, open_text
from nlpjax.data.tokenizers import (
    TokenizerConfig,
    save_tokenizer,
)
from nlpjax.errors import ConfigError, DataError
from nlpjax.inference.seq2seq import Seq2SeqGenerator, Seq2SeqTextGenerator
from nlpjax.models.t5 import T5, T5Config, flops_per_token, token_losses
from nlpjax.precision import resolve_dtype
from nlpjax.tasks.base import make_loss_average
from nlpjax.tasks.common import TOKENIZER_FILE, with_vocab_size, workdir_tokenizer

_log = logging.getLogger(__name__)
TOO_LONG = ("truncate", "error")
OBJECTIVES = ("translation", "span_corruption")
HYPOTHESES_FILE = "hypotheses_{split}_{step}{search}.txt"  # search: "" greedy, "_beam4"


@dataclasses.dataclass(frozen=True)
class Seq2SeqDataConfig:
    """Corpus, tokenizer, batch shape and loss options of a text-to-text run."""

    dataset: str = "parallel_corpus/multi30k_de_en"
    tokenizer: TokenizerConfig = TokenizerConfig(kind="sentencepiece", vocab_size=8000)
    prefix: str = "translate German to English: "
    source_length: int = 64  # tokens per packed source row (prefix and end id included)
    target_length: int = 64
    batch_size: int = 32
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    bleu_examples: int = 0  # evaluate: translate this many examples (0: none, -1: all)
    beam_size: int = 1  # evaluate: 1 greedy, > 1 beam search (length penalty alpha 0.6)
    too_long: str = "truncate"  # a source over source_length: truncate (logged) | error
    # translation: (source, target) pairs; span_corruption: T5 pretraining on every text
    # field of the dataset (any corpus), inputs of source_length tokens.
    objective: str = "translation"
    noise_density: float = 0.15  # span_corruption: fraction of tokens masked
    mean_noise_span_length: float = 3.0  # span_corruption: mean masked span, in tokens
    tfds_data_dir: str = ""
    prefetch: int = 4

    def __post_init__(self):
        for key in ("source_length", "target_length", "batch_size"):
            if getattr(self, key) <= 1:
                raise ConfigError(f"data.{key} must be > 1, got {getattr(self, key)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"data.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.z_loss < 0:
            raise ConfigError(f"data.z_loss must be >= 0, got {self.z_loss}")
        if self.bleu_examples < -1:
            raise ConfigError(
                f"data.bleu_examples must be >= -1 (-1: the whole split), got {self.bleu_examples}"
            )
        if self.beam_size < 1:
            raise ConfigError(f"data.beam_size must be >= 1 (1: greedy), got {self.beam_size}")
        if self.too_long not in TOO_LONG:
            raise ConfigError(f"data.too_long must be one of {TOO_LONG}, got {self.too_long!r}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"data.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 < self.noise_density < 1.0 or self.mean_noise_span_length < 1.0:
            raise ConfigError(
                "data.noise_density must be in (0, 1) and data.mean_noise_span_length >= 1 "
                "(T5: 0.15 and 3)"
            )


class Seq2SeqTask:
    """T5 on (source, target) text pairs (see ``nlpjax.tasks.base.Task``).

    Another encoder-decoder family reuses the data, evaluation and decoding by subclassing:
    ``model_cls``, ``batch_rows`` (one pair per row when its model cannot read packed
    rows), ``loss`` and ``generator_options`` (its ``Seq2SeqGenerator`` search hooks).
    """

    model_config_cls = T5Config
    data_config_cls = Seq2SeqDataConfig
    model_cls: type = T5

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        data = config.data
        self.config = config
        self.fields = default_fields(data.dataset, data.tfds_data_dir)
        self.pretraining = data.objective == "span_corruption"
        if not self.pretraining and len(self.fields) != 2:
            raise ConfigError(
                f"data.dataset={data.dataset!r} has fields {self.fields}, not a (source, "
                "target) pair; use a parallel corpus, e.g. parallel_corpus/multi30k_de_en"
            )
        self.tokenizer, self._tokenizer_file = workdir_tokenizer(
            config, workdir, self._tokenizer_texts
        )
        self.config = with_vocab_size(config, self.tokenizer.vocab_size)
        if self.pretraining:
            self._check_sentinels()
        self.model = self.model_cls(self.config.model)
        self.workdir = workdir
        self._average = None
        self._eval_data: dict[str, tuple[dict, list]] = {}
        self._checked: set[str] = set()

    # -- data ---------------------------------------------------------------------------

    def _tokenizer_texts(self) -> list[str]:
        pairs = open_text(self.config.data.dataset, "train", self.config.data.tfds_data_dir)
        return [row[f] for row in pairs.read_all() for f in self.fields]

    def pairs(self, split: str) -> list[tuple[str, str]]:
        """The split's (source, target) texts with a target, in order."""
        source = open_text(self.config.data.dataset, split, self.config.data.tfds_data_dir)
        src, tgt = self.fields
        pairs = [(row[src], row[tgt]) for row in source.read_all()]
        return [(s, t) for s, t in pairs if t.strip()]

    def check_split(self, split: str) -> seq2seq_pipeline.PairStats:
        """Logs how many pairs of ``split`` have an empty target (skipped) and how many
        sources are cut to ``data.source_length``; with ``data.too_long=error`` an over-long
        source is a ``DataError`` naming it. Once per split."""
        data = self.config.data
        rows = open_text(data.dataset, split, data.tfds_data_dir).read_all()
        src, tgt = self.fields
        sources = [data.prefix + row[src] for row in rows]
        targets = [row[tgt] for row in rows]
        stats = seq2seq_pipeline.pair_stats(
            sources, targets, self.tokenizer.encode_batch, data.source_length
        )
        where = f"the {split} split of {data.dataset}"
        if stats.empty_targets and split not in self._checked:
            _log.warning(
                "%s: skipped %d of %d pairs with an empty target",
                where,
                stats.empty_targets,
                stats.total,
            )
        if stats.too_long and data.too_long == "error":
            first = rows[stats.first_too_long][src]
            raise DataError(
                f"{where}: {stats.too_long} of {stats.total} sources are longer than "
                f"data.source_length={data.source_length} tokens (prefix and end id included; "
                f"the longest has {stats.longest}; the first is #{stats.first_too_long}: "
                f"{first[:40]!r}); raise data.source_length, or set data.too_long=truncate "
                "to cut them"
            )
        if stats.too_long and split not in self._checked:
            _log.warning(
                "%s: %d of %d sources are longer than data.source_length=%d tokens and are "
                "cut (the longest has %d; data.too_long=error refuses them)",
                where,
                stats.too_long,
                stats.total,
                data.source_length,
                stats.longest,
            )
        self._checked.add(split)
        return stats

    def _check_sentinels(self) -> None:
        """Span corruption needs one sentinel id per masked span of an input."""
        data = self.config.data
        raw, _ = transforms.span_corruption_lengths(
            data.source_length, data.noise_density, data.mean_noise_span_length
        )
        spans = max(1, round(round(raw * data.noise_density) / data.mean_noise_span_length))
        have = getattr(self.tokenizer, "num_sentinels", 0)
        if have < spans:
            raise ConfigError(
                f"data.objective=span_corruption masks up to {spans} spans per input but the "
                f"tokenizer ({self._tokenizer_file}) has {have} sentinel ids: set "
                "data.tokenizer.num_sentinels=100 (T5's count) and train in a new --workdir "
                "(a workdir keeps the tokenizer it was built with)"
            )

    def _span_batches(self, split: str, seed: int, shuffle: bool) -> grain.IterDataset:
        """T5 span-corruption batches over every text field of ``split`` (documents are
        concatenated and cut, ``data.seq2seq_pipeline.span_corruption_batches``)."""
        data, fields, tok = self.config.data, self.fields, self.tokenizer
        shard = pipeline.Shard.this_host()
        source = open_text(data.dataset, split, data.tfds_data_dir)
        n = len(fields)
        texts = grain.MapDataset.range(len(source) * n).map(lambda i: source[i // n][fields[i % n]])
        docs = pipeline.epochs(texts, seed, shard, shuffle=shuffle)
        docs = docs.filter(lambda text: bool(text.strip())).map(tok.encode)
        sentinels = np.array([tok.sentinel_id(i) for i in range(tok.num_sentinels)], np.int32)
        return seq2seq_pipeline.span_corruption_batches(
            docs,
            inputs_length=data.source_length,
            batch_size=data.batch_size // shard.count,
            sentinel_ids=sentinels,
            eos_id=tok.eos_id,
            start_id=tok.pad_id,
            seed=seed,
            noise_density=data.noise_density,
            mean_noise_span_length=data.mean_noise_span_length,
        )

    def _batches(self, split: str, seed: int, shuffle: bool = True) -> grain.IterDataset:
        data = self.config.data
        shard = pipeline.Shard.this_host()
        if data.batch_size % shard.count:
            raise ConfigError(f"data.batch_size={data.batch_size} does not split over hosts")
        if self.pretraining:
            return self._span_batches(split, seed, shuffle)
        src, tgt = self.fields
        if split not in self._checked:
            self.check_split(split)
        source = open_text(data.dataset, split, data.tfds_data_dir)
        ds = pipeline.epochs(source, seed, shard, shuffle=shuffle)
        ds = ds.filter(lambda ex: seq2seq_pipeline.nonempty_target(ex, tgt))
        ds = ds.map(lambda ex: {**ex, src: data.prefix + ex[src]})
        examples = seq2seq_pipeline.pair_examples(
            ds,
            self.tokenizer.encode,
            self.fields,
            data.source_length,
            data.target_length,
            self.tokenizer.eos_id,
        )
        return self.batch_rows(examples, data.batch_size // shard.count, seed)

    def batch_rows(self, examples: grain.MapDataset, batch_size: int, seed: int):
        """Token-id pairs -> batches: packed rows (several pairs per row, segment ids)."""
        data = self.config.data
        return seq2seq_pipeline.packed_batches(
            examples,
            source_length=data.source_length,
            target_length=data.target_length,
            batch_size=batch_size,
            start_id=self.tokenizer.pad_id,
            seed=seed,
        )

    def train_iterator(self) -> grain.DatasetIterator:
        return pipeline.iterator(
            self._batches("train", self.config.seed),
            self.config.data.prefetch,
            vocabulary=self.tokenizer,
            vocab_file=self._tokenizer_file,
        )

    def eval_batches(self, split: str = "validation") -> dict[str, np.ndarray]:
        """``eval.num_batches`` fixed packed batches of ``split`` (the first pairs, in order)."""
        it = iter(self._batches(split, self.config.eval.seed, shuffle=False))
        return pipeline.stack_batches([next(it) for _ in range(self.config.eval.num_batches)])

    # -- model and loss -------------------------------------------------------------------

    def init(self, rng) -> Any:
        data = self.config.data
        source = jnp.zeros((1, data.source_length), jnp.int32)
        return self.model.init(rng, source, jnp.zeros((1, data.target_length), jnp.int32))

    def init_carry(self) -> dict:
        return {}

    def logits(self, params, batch, rngs, train: bool):
        """(B, T, V) target logits of a batch (the one model call a family replaces)."""
        return self.model.apply(
            {"params": params},
            batch["inputs"],
            batch["decoder_inputs"],
            source_segments_BS=batch["inputs_segment_ids"],
            source_positions_BS=batch["inputs_positions"],
            target_segments_BT=batch["targets_segment_ids"],
            target_positions_BT=batch["targets_positions"],
            train=train,
            rngs=rngs,
        )

    def loss(self, params, carry, batch, rng, train: bool):
        data = self.config.data
        rngs = {"dropout": rng} if train and self.config.model.dropout > 0 else None
        logits_BTV = self.logits(params, batch, rngs, train)
        # Evaluation reports the plain cross-entropy (a true perplexity): smoothing and
        # z-loss shape training only.
        loss_BT, _ = token_losses(
            logits_BTV,
            batch["targets"],
            label_smoothing=data.label_smoothing if train else 0.0,
            z_loss=data.z_loss if train else 0.0,
        )
        weights_BT = batch["targets_mask"].astype(jnp.float32)
        weight = jnp.sum(weights_BT)
        return jnp.sum(loss_BT * weights_BT) / jnp.maximum(weight, 1.0), ({"weight": weight}, carry)

    def eval_summary(self, metrics: dict) -> dict:
        loss = float(metrics["loss"])
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def evaluate(self, params, extras: dict, rng, split: str = "validation") -> dict[str, float]:
        """The loss average over ``eval_batches(split)``; with ``data.bleu_examples``, the
        greedy translations of the split's first examples (-1: all), scored by sacrebleu
        (BLEU and chrF on the detokenized text) and written one per line to the workdir's
        ``hypotheses_<split>_<step>.txt``."""
        if self._average is None:
            self._average = make_loss_average(self)
        if split not in self._eval_data:  # read and tokenized once per split
            n = 0 if self.pretraining else self.config.data.bleu_examples
            pairs = self.pairs(split)[: None if n == -1 else n] if n else []
            self._eval_data[split] = (self.eval_batches(split), pairs)
        batches, pairs = self._eval_data[split]
        summary = self.eval_summary(self._average(params, batches, rng))
        if pairs:
            sources = [s for s, _ in pairs]  # over-long ones: counted once by check_split
            hypotheses = self.translator(params).translate(
                sources, self._max_len(), report_cuts=False
            )
            summary.update(score_translations(hypotheses, [t for _, t in pairs]))
            self._write_hypotheses(hypotheses, split, int(extras.get("step", 0)))
        return summary

    def _write_hypotheses(self, hypotheses: list[str], split: str, step: int) -> None:
        if self.workdir is None or jax.process_index() != 0:
            return
        beam = self.config.data.beam_size
        search = f"_beam{beam}" if beam > 1 else ""
        name = HYPOTHESES_FILE.format(split=split, step=step, search=search)
        path = epath.Path(self.workdir) / name
        path.write_text("".join(h.replace("\n", " ") + "\n" for h in hypotheses))

    def _max_len(self) -> int:
        """The longest output evaluation decodes (tokens, end id included)."""
        return min(self.config.data.target_length, self.config.model.max_target_len)

    def _max_source_len(self) -> int:
        """The longest input the translator takes (tokens, end id included)."""
        return self.config.data.source_length

    # -- bookkeeping ----------------------------------------------------------------------

    def global_batch_size(self) -> int:
        return self.config.data.batch_size

    def _target_length(self) -> int:
        data = self.config.data
        if self.pretraining:
            return transforms.span_corruption_lengths(
                data.source_length, data.noise_density, data.mean_noise_span_length
            )[1]
        return data.target_length

    def tokens_per_batch(self) -> int:
        data = self.config.data
        return data.batch_size * (data.source_length + self._target_length())

    def compute_dtype(self) -> str:
        return resolve_dtype(self.config.model.dtype).name

    def flops_per_token(self) -> float:
        data = self.config.data
        return flops_per_token(self.config.model, data.source_length, self._target_length())

    def save_assets(self, directory: epath.PathLike) -> None:
        save_tokenizer(self.tokenizer, epath.Path(directory) / TOKENIZER_FILE)

    def model_signature(self) -> dict:
        return {"task": self.config.task, "model": self.config.model.signature()}

    # -- faces ----------------------------------------------------------------------------

    def translator(
        self, params, sampling=None, beam_size: int | None = None
    ) -> Seq2SeqTextGenerator:
        """Text in, text out for ``params``: ``sampling``, else a beam search of
        ``beam_size`` (None: ``data.beam_size``; 1 is greedy)."""
        if beam_size is None:
            beam_size = self.config.data.beam_size if sampling is None else 1
        tokens = Seq2SeqGenerator(
            self.model,
            params,
            eos_id=self.tokenizer.eos_id,
            start_id=self.tokenizer.pad_id,
            pad_id=self.tokenizer.pad_id,
            banned_ids=self.tokenizer.non_text_ids(),
            **self.generator_options(),
        )
        kwargs = {} if sampling is None else {"sampling": sampling}
        return Seq2SeqTextGenerator(
            tokens,
            self.tokenizer,
            self._tokenizer_file,
            max_source_len=self._max_source_len(),
            prefix=self.config.data.prefix,
            beam_size=beam_size,
            too_long=self.config.data.too_long,
            **kwargs,
        )

    def set_beam_size(self, beam_size: int) -> None:
        """Evaluate with beam search of ``beam_size`` (1: greedy) from now on: ``nlpjax eval
        --beam_size``. A search setting, so the checkpoint and its model are unchanged."""
        data = dataclasses.replace(self.config.data, beam_size=beam_size)  # validates it
        self.config = dataclasses.replace(self.config, data=data)

    def generator_options(self) -> dict:
        """Family-specific ``Seq2SeqGenerator`` arguments (T5: none, its defaults)."""
        return {}

    def generator(self, params, sampling) -> Seq2SeqTextGenerator:
        """The ``nlpjax generate`` face: the prompt is the source text."""
        return self.translator(params, sampling)

    def describe_data(self, split: str, num_examples: int) -> str:
        return inspect.report(self, split, num_examples)


def score_translations(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """sacrebleu's corpus BLEU (13a tokenization, cased) and chrF of detokenized text, and
    the exact-match rate."""
    exact = float(np.mean([h == r for h, r in zip(hypotheses, references, strict=True)]))
    return {
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [references]).score),
        "exact_match": exact,
    }
