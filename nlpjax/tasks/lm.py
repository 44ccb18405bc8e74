"""Language-model task: the decoder-only transformer on a text corpus.

Next-token cross-entropy on random windows of ``context + 1`` tokens; evaluation
reports loss and perplexity per token on fixed validation windows.
"""

import dataclasses
import math
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from nlpjax.analysis import probes
from nlpjax.config import Config
from nlpjax.data import inspect, pipeline, transforms
from nlpjax.data.sources import parse_dataset
from nlpjax.data.tokenizers import (
    TokenizerConfig,
    join_documents,
    save_tokenizer,
)
from nlpjax.errors import ConfigError, DataError
from nlpjax.inference import stream_cache
from nlpjax.inference.decode import Generator, SamplingConfig
from nlpjax.inference.text_generator import TextGenerator
from nlpjax.models.decoder import Decoder, DecoderConfig, flops_per_token
from nlpjax.precision import resolve_dtype
from nlpjax.tasks.base import make_loss_average
from nlpjax.tasks.common import TOKENIZER_FILE, split_documents, with_vocab_size, workdir_tokenizer


@dataclasses.dataclass(frozen=True)
class LMDataConfig:
    """Corpus, tokenizer and batch shape of a language-model run.

    ``tokenizer`` is a section (``TokenizerConfig``: kind, vocab_size, model_type, ...);
    a plain kind string such as ``"char"`` (configs written before it was a section)
    reads as that kind with the other fields at their defaults.
    """

    dataset: str = "tiny_shakespeare"  # a dataset spec (nlpjax.data.sources), e.g. tfds:lm1b
    tokenizer: TokenizerConfig = TokenizerConfig()
    context: int = 64
    batch_size: int = 12
    tfds_data_dir: str = ""  # '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets
    prefetch: int = 4
    # Pause tokens (Goyal et al. 2023, https://arxiv.org/abs/2310.02226).
    pause_pretrain: bool = False  # pauses at random places of every training window
    pause_fraction: float = 0.1  # pretraining: round(fraction * (context + 1)) pauses a window
    pause_filler: str = ""  # filler control: this text's one token instead of <pause>
    answer_separator: str = ""  # set: lines "PROMPT<sep>ANSWER" (loss on the answer only)
    pause_finetune: int = 0  # M_ft: pauses after every prompt (needs answer_separator)
    pause_inference: int = 0  # M_inf: pauses appended to every prompt when generating

    def __post_init__(self):
        if self.context <= 0 or self.batch_size <= 0:
            raise ConfigError("data.context and data.batch_size must be > 0")
        if not 0.0 < self.pause_fraction <= 1.0:
            raise ConfigError(f"data.pause_fraction must be in (0, 1], got {self.pause_fraction}")
        if self.pause_finetune < 0 or self.pause_inference < 0:
            raise ConfigError("data.pause_finetune and data.pause_inference must be >= 0")
        if self.pause_pretrain and self.answer_separator:
            raise ConfigError(
                "data.pause_pretrain inserts pauses into text windows, and "
                "data.answer_separator makes prompt/answer rows: use data.pause_finetune "
                "for pauses after the prompts, or unset one of the two"
            )
        if self.pause_finetune and not self.answer_separator:
            raise ConfigError(
                "data.pause_finetune puts pauses after prompts, and the data has none: set "
                "data.answer_separator (e.g. '=') to read lines as PROMPT<sep>ANSWER"
            )

    @property
    def uses_pauses(self) -> bool:
        return self.pause_pretrain or self.pause_finetune > 0 or self.pause_inference > 0


def _check_has_validation(spec: str) -> None:
    """User files must name a validation split: the LM task evaluates on it from the start."""
    ref = parse_dataset(spec)
    if ref.kind == "files" and not ref.option("validation"):
        raise ConfigError(
            f"data.dataset={spec!r} names no validation files, and language-model runs "
            "evaluate on them; add ';validation=PATTERN' (files, a directory or a glob "
            "held out from training), e.g. 'files:train/*.txt;validation=valid.txt'"
        )


class LMTask:
    """Decoder LM on a text corpus (see ``nlpjax.tasks.base.Task``)."""

    model_config_cls = DecoderConfig
    data_config_cls = LMDataConfig

    def __init__(self, config: Config, workdir: epath.PathLike | None = None):
        data = config.data
        if data.context > config.model.max_len:
            raise ConfigError(
                f"data.context={data.context} exceeds model.max_len={config.model.max_len}"
            )
        _check_has_validation(data.dataset)
        self._tokens: dict[str, np.ndarray] = {}
        self._examples: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.config = config
        self.tokenizer = self._restore_or_build_tokenizer(workdir)
        self.config = with_vocab_size(config, self.tokenizer.vocab_size)
        self.model = Decoder(self.config.model)
        self.pause_id = pause_token_id(self.tokenizer, data) if data.uses_pauses else None
        self._eval_host: dict[str, dict[str, np.ndarray]] = {}
        self._eval_device: dict[str, Any] = {}
        self._average = None
        if config.eval.probes:  # the Task hook; without it the loop's default loss average
            self.evaluate = self._evaluate_with_probes

    # -- data ---------------------------------------------------------------------------

    def _restore_or_build_tokenizer(self, workdir):
        """The workdir's tokenizer (checked against ``data.tokenizer``), else a new one.

        A new one is built from the train split, which is read once: the same text is
        then encoded as the training tokens.
        """
        read: dict[str, list[str]] = {}

        def texts() -> list[str]:
            read["train"] = self._documents("train")
            return read["train"]

        tokenizer, self._tokenizer_file = workdir_tokenizer(self.config, workdir, texts)
        if "train" in read:
            self._tokens["train"] = join_documents(tokenizer, read["train"])
        return tokenizer

    def _documents(self, split: str) -> list[str]:
        """The split's documents (``common.split_documents``)."""
        data = self.config.data
        return split_documents(data.dataset, split, data.tfds_data_dir)

    def tokens(self, split: str) -> np.ndarray:
        """The split as one token stream; documents are joined by ``join_documents``
        (EOS between them, or a newline for ``char``), so no boundary is lost."""
        if split not in self._tokens:
            self._tokens[split] = join_documents(self.tokenizer, self._documents(split))
        return self._tokens[split]

    def _windows(self, split: str, seed: int, train: bool = False) -> grain.MapDataset:
        """Batches of ``{"tokens"}`` windows; with pauses or prompt/answer lines, also
        ``{"weights"}`` (B, context): the weight of predicting each next token."""
        data = self.config.data
        shard = pipeline.Shard.this_host()
        if data.answer_separator:
            rows = self._answer_rows(split)
            return pipeline.epochs(rows, seed, shard, shuffle=train).batch(
                data.batch_size // shard.count, drop_remainder=True
            )
        transform = None
        if train and data.pause_pretrain:  # evaluation stays on plain text (comparable)
            num = int(round(data.pause_fraction * (data.context + 1)))
            pause_id = self.pause_id

            def transform(window, rng):
                return transforms.pause_pretrain_window(window, num, pause_id, rng)

        return pipeline.lm_windows(
            self.tokens(split), data.context + 1, data.batch_size, seed, shard, transform
        )

    def answer_examples(self, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """The split's ``PROMPT<sep>ANSWER`` lines as (prompt ids, answer ids); the
        separator ends the prompt. A line without the separator is a ``DataError``."""
        if split in self._examples:
            return self._examples[split]
        data, tok = self.config.data, self.tokenizer
        sep, examples = data.answer_separator, []
        lines = [ln for doc in self._documents(split) for ln in doc.splitlines() if ln.strip()]
        for line in lines:
            if sep not in line:
                raise DataError(
                    f"a {split} line of {data.dataset!r} has no data.answer_separator {sep!r}: "
                    f"{line[:80]!r}; every line must read PROMPT{sep}ANSWER"
                )
            cut = line.index(sep) + len(sep)
            examples.append((tok.encode(line[:cut]), tok.encode(line[cut:])))
        if not examples:
            raise DataError(f"the {split} split of {data.dataset!r} has no prompt/answer lines")
        self._examples[split] = examples
        return examples

    def _end_id(self) -> int:
        """The id that ends an answer: EOS, or for ``char`` (no special ids) a newline."""
        eos = getattr(self.tokenizer, "eos_id", None)
        if eos is not None:
            return int(eos)
        try:
            return int(self.tokenizer.encode("\n")[0])
        except ValueError:
            raise DataError(
                "prompt/answer lines end with a newline, and this char vocabulary has none "
                f"({self._tokenizer_file}): use data.tokenizer.kind=byte"
            ) from None

    def _answer_rows(self, split: str) -> list[dict[str, np.ndarray]]:
        """The split's examples as padded rows with M_ft pauses (``pause_answer_row``)."""
        data, eos = self.config.data, self._end_id()
        pad, pauses = getattr(self.tokenizer, "pad_id", eos), data.pause_finetune
        pause_id = 0 if self.pause_id is None else self.pause_id
        rows = []
        for prompt, answer in self.answer_examples(split):
            row = transforms.pause_answer_row(
                prompt, answer, pauses, pause_id, eos, data.context + 1, pad
            )
            if row is None:
                raise DataError(
                    f"a {split} example of {data.dataset!r} needs {len(prompt) + pauses} + "
                    f"{len(answer) + 1} tokens, more than data.context + 1 = "
                    f"{data.context + 1}: raise data.context (and model.max_len)"
                )
            rows.append(row)
        return rows

    def exact_match(
        self, params, split: str = "validation", pauses: int | None = None, limit: int = 0
    ) -> dict[str, float]:
        """Greedy answers to the split's prompts, each followed by M_inf pauses (``pauses``,
        default ``data.pause_inference``), against the references.

        An answer is right when the tokens generated after the last pause, up to the
        first EOS (a newline for ``char``), are exactly the reference. Returns
        ``{"exact_match": fraction right, "examples": count}``; ``limit`` > 0 scores only
        the first ``limit`` examples.
        """
        examples = self.answer_examples(split)[: limit or None]
        tokens = self.generator(params, SamplingConfig(temperature=0.0), pauses).token_generator
        eos, right = self._end_id(), 0
        by_length: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for prompt, answer in examples:  # the generator takes equal-length prompts
            by_length.setdefault(len(prompt), []).append((prompt, answer))
        size = self.config.data.batch_size
        for group in by_length.values():
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                longest = max(len(answer) for _, answer in chunk)
                out = tokens.generate(np.stack([p for p, _ in chunk]), longest + 1)
                for row, (_, answer) in zip(out, chunk, strict=True):
                    right += answer_matches(row, answer, eos)
        return {"exact_match": right / len(examples), "examples": float(len(examples))}

    def train_iterator(self) -> grain.DatasetIterator:
        return pipeline.iterator(
            self._windows("train", self.config.seed, train=True),
            self.config.data.prefetch,
            vocabulary=self.tokenizer,
            vocab_file=self._tokenizer_file,
        )

    def eval_batches(self, split: str = "validation") -> dict[str, np.ndarray]:
        """``eval.num_batches`` fixed windows of ``split`` (validation unless asked)."""
        ds = self._windows(split, self.config.eval.seed)
        return pipeline.take_stacked(ds, self.config.eval.num_batches)

    def text_units(self, batches: dict[str, np.ndarray]) -> dict[str, int]:
        """Characters and UTF-8 bytes of the text the evaluated (target) tokens decode to.

        Each window's targets are its tokens after the first; their text is the window's
        decoded text after the first token's, so pieces that depend on their neighbour
        (SentencePiece's leading space) count as they appear in the running text.
        """
        tokens = np.asarray(batches["tokens"])
        if self.config.data.answer_separator:  # only the answers carry loss
            return self._answer_units(tokens, np.asarray(batches["weights"]))
        characters = utf8_bytes = 0
        for window in tokens.reshape(-1, tokens.shape[-1]):
            text = self.tokenizer.decode(window)[len(self.tokenizer.decode(window[:1])) :]
            characters += len(text)
            utf8_bytes += len(text.encode("utf-8"))
        return {"characters": characters, "bytes": utf8_bytes}

    def _answer_units(self, tokens: np.ndarray, weights: np.ndarray) -> dict[str, int]:
        """Prompt/answer rows: the answers' characters and bytes, plus one for each EOS
        (it ends the answer as a newline ends a line)."""
        characters = utf8_bytes = 0
        tokens, weights = (
            tokens.reshape(-1, tokens.shape[-1]),
            weights.reshape(-1, weights.shape[-1]),
        )
        for row, row_weights in zip(tokens, weights, strict=True):
            answer = row[1:][row_weights > 0][:-1]  # the weighted targets less their EOS
            text = self.tokenizer.decode(answer)
            characters += len(text) + 1
            utf8_bytes += len(text.encode("utf-8")) + 1
        return {"characters": characters, "bytes": utf8_bytes}

    # -- model and loss -----------------------------------------------------------------

    def init(self, rng) -> Any:
        inputs = jnp.zeros((1, self.config.data.context), jnp.int32)
        return self.model.init(rng, inputs)

    def init_carry(self) -> dict:
        return {}

    def loss(self, params, carry, batch, rng, train: bool):
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        rngs = {"dropout": rng} if train and self.config.model.dropout > 0 else None
        logits_BLV = self.model.apply({"params": params}, inputs, train=train, rngs=rngs)
        vocab = logits_BLV.shape[-1]
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits_BLV.reshape(-1, vocab).astype(jnp.float32), targets.reshape(-1)
        )
        if "weights" in batch:  # pauses, prompts and padding carry no loss
            weights = batch["weights"].reshape(-1).astype(jnp.float32)
            total = jnp.sum(weights)
            return jnp.sum(losses * weights) / jnp.maximum(total, 1.0), ({"weight": total}, carry)
        weight = jnp.asarray(losses.size, jnp.float32)
        return jnp.mean(losses), ({"weight": weight}, carry)

    def eval_summary(self, metrics: dict) -> dict:
        loss = float(metrics["loss"])
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def probe(self, params, split: str = "validation") -> probes.Probe:
        """Attention weights and hidden states on the split's first evaluation batch
        (``nlpjax.analysis.probes``: sink and register mass, outlier tokens, plots)."""
        tokens = np.asarray(self._host_eval_batches(split)["tokens"])[0, :, :-1]
        return probes.collect(self.model, params, tokens)

    def _host_eval_batches(self, split: str) -> dict[str, np.ndarray]:
        if split not in self._eval_host:
            self._eval_host[split] = self.eval_batches(split)
        return self._eval_host[split]

    def _evaluate_with_probes(self, params, extras, rng, split: str = "validation") -> dict:
        """``evaluate`` with ``eval.probes``: the default loss average and summary, plus
        the probes' means (``attn_first_mass``, ``attn_register_mass``,
        ``outlier_fraction``) on the first evaluation batch."""
        if split not in self._eval_device:
            host = self._host_eval_batches(split)
            self._eval_device[split] = jax.tree_util.tree_map(jnp.asarray, host)
        if self._average is None:
            self._average = make_loss_average(self)
        summary = self.eval_summary(self._average(params, self._eval_device[split], rng))
        found = probes.probe_metrics(self.probe(params, split))
        return summary | {k: v for k, v in found.items() if "/" not in k}

    # -- bookkeeping ----------------------------------------------------------------------

    def global_batch_size(self) -> int:
        return self.config.data.batch_size

    def tokens_per_batch(self) -> int:
        return self.config.data.batch_size * self.config.data.context

    def compute_dtype(self) -> str:
        """The dtype the model computes in (picks the chip's peak for MFU)."""
        return resolve_dtype(self.config.model.dtype).name

    def flops_per_token(self) -> float:
        return flops_per_token(self.config.model, self.config.data.context)

    def save_assets(self, directory: epath.PathLike) -> None:
        save_tokenizer(self.tokenizer, epath.Path(directory) / TOKENIZER_FILE)

    def model_signature(self) -> dict:
        return {"task": self.config.task, "model": self.config.model.signature()}

    # -- faces: generation and data inspection ---------------------------------------------

    def generator(
        self,
        params,
        sampling,
        pauses: int | None = None,
        cache: stream_cache.StreamConfig | None = None,
    ) -> TextGenerator:
        """Samples text from ``params`` with ``sampling`` (a ``SamplingConfig``), using the
        KV-cached decoder; ids that stand for no text are never generated.

        ``pauses``: M_inf, the pauses appended to every prompt (default
        ``data.pause_inference``); sampling starts after the last one. ``cache``: a
        streaming cache mode (``stream_stepper``) instead of the default, which re-encodes
        the last half context whenever the cache fills.
        """
        count = self.config.data.pause_inference if pauses is None else pauses
        if count < 0:
            raise ValueError(f"pauses must be >= 0, got {count}")
        pause_id = self.pause_id
        if count and pause_id is None:
            pause_id = pause_token_id(self.tokenizer, self.config.data)
        pauses = [pause_id] * count  # M_inf after the prompt
        banned = self.tokenizer.non_text_ids()  # the learned <pause> among them
        if cache is None:
            tokens = Generator(self.model, params, sampling, banned, append_ids=pauses)
        else:
            stepper = self.stream_stepper(cache)
            tokens = stream_cache.StreamGenerator(stepper, params, sampling, banned, pauses)
        return TextGenerator(tokens, self.tokenizer, self._tokenizer_file)

    def stream_stepper(self, cache: stream_cache.StreamConfig):
        """The decoder one token per step under a resolved ``cache`` mode
        (``stream_cache.resolve``)."""
        return stream_cache.stepper(self.model, cache)

    def describe_data(self, split: str, num_examples: int) -> str:
        """The ``nlpjax data inspect`` report: sizes, vocabulary, decoded batches, speed."""
        return inspect.report(self, split, num_examples)


def pause_token_id(tokenizer, data: LMDataConfig) -> int:
    """The id that pauses use: the tokenizer's ``<pause>``, or ``data.pause_filler``'s token."""
    if data.pause_filler:
        try:
            ids = tokenizer.encode(data.pause_filler)
        except ValueError as e:
            raise ConfigError(f"data.pause_filler={data.pause_filler!r}: {e}") from None
        if len(ids) != 1:
            raise ConfigError(
                f"data.pause_filler={data.pause_filler!r} encodes to {len(ids)} tokens; "
                "give text that is exactly one token (e.g. '.')"
            )
        return int(ids[0])
    pause_id = getattr(tokenizer, "pause_id", None)
    if pause_id is None:
        raise ConfigError(
            f"pause tokens need a <pause> id, and the {tokenizer.kind} tokenizer has none: "
            "use data.tokenizer.kind=byte, word or sentencepiece, or set data.pause_filler "
            "(an ordinary token such as '.')"
        )
    return int(pause_id)


def answer_matches(generated: np.ndarray, answer: np.ndarray, eos_id: int) -> bool:
    """Whether ``generated`` is ``answer`` then EOS (anything after the EOS is ignored).
    Without an EOS among the first ``len(answer) + 1`` tokens, the answer is wrong."""
    generated, answer = np.asarray(generated), np.asarray(answer)
    n = len(answer)
    return len(generated) > n and bool((generated[:n] == answer).all()) and generated[n] == eos_id
