"""``nlpjax data inspect``: what a config's data pipeline feeds the model.

Reports dataset sizes, vocabulary statistics (size, coverage, UNK rate), a few examples
decoded exactly as the model receives them (masks shown) and the pipeline's examples/s.
Works on any task that exposes ``tokenizer``, ``config.data.dataset``,
``train_iterator()`` and ``eval_batches()``.
"""

import time
from collections.abc import Callable

import numpy as np

from nlpjax.data import sources
from nlpjax.data.special_tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID, UNK_ID
from nlpjax.data.tokenizers import fingerprint

TOKEN_KEYS = ("tokens", "inputs", "decoder_inputs", "targets", "centers", "contexts")
MASK_KEYS = ("inputs_mask", "targets_mask", "segment_ids", "inputs_segment_ids",
             "targets_segment_ids", "weights", "positions", "inputs_positions",
             "targets_positions")  # fmt: skip
MAX_SHOWN = 160  # positions shown per row


def dataset_report(spec: str, tokenizer, data_dir: str, max_docs: int = 20_000) -> list[str]:
    """Examples per split, plus characters, tokens and unknown tokens per split."""
    lines = [f"dataset {spec}"]
    fields = sources.default_fields(spec, data_dir)
    for split, count in sources.split_sizes(spec, data_dir).items():
        source = sources.open_text(spec, split, data_dir, fields)
        n = min(len(source), max_docs)
        chars = tokens = unknown = 0
        for i in range(n):
            for text in source[i].values():
                t, u = tokenizer.count_unknown(text)
                chars, tokens, unknown = chars + len(text), tokens + t, unknown + u
        sample = "" if n == len(source) else f" (first {n:,} examples)"
        lines.append(
            f"  {split}: {count:,} examples; {chars:,} characters, {tokens:,} tokens{sample}; "
            f"coverage {100 * (1 - unknown / max(tokens, 1)):.2f}%, "
            f"UNK rate {100 * unknown / max(tokens, 1):.2f}%"
        )
    return lines


def vocabulary_report(tokenizer) -> list[str]:
    """Kind, size, fingerprint and the special ids of a tokenizer."""
    lines = [
        f"vocabulary: {tokenizer.kind}, {tokenizer.vocab_size:,} ids, "
        f"fingerprint {fingerprint(tokenizer)}"
    ]
    if hasattr(tokenizer, "extra"):
        e = tokenizer.extra
        sentinels = "none"
        if e.num_sentinels:
            sentinels = f"<extra_id_0>={e.sentinel_id(0)} .. {e.sentinel_id(e.num_sentinels - 1)}"
        lines.append(
            f"  pad {PAD_ID}, eos {EOS_ID}, unk {UNK_ID}, bos {BOS_ID}; "
            f"body {NUM_SPECIAL}..{e.base - 1}; pause {e.pause_id}, sink {e.sink_id}, "
            f"registers {e.register_ids or 'none'}; sentinels {sentinels}"
        )
    if hasattr(tokenizer, "unk_count"):
        total = sum(tokenizer.counts) + tokenizer.unk_count
        lines.append(
            f"  words kept {len(tokenizer.words):,} (min_count {tokenizer.min_count}, "
            f"max_size {tokenizer.max_size or 'none'}); training tokens {total:,}, "
            f"of which <unk> {tokenizer.unk_count:,} ({100 * tokenizer.unk_count / total:.2f}%)"
        )
    return lines


def _mask_string(values: np.ndarray) -> str:
    """A row of small integers (masks, segment ids) as one character per position."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    shown = "".join(digits[min(int(v), 35)] for v in values[:MAX_SHOWN])
    return shown + ("..." if len(values) > MAX_SHOWN else "")


def example_report(batch: dict, decode: Callable, num_examples: int) -> list[str]:
    """The first rows of a batch decoded as the model sees them, with their masks."""
    lines = ["arrays: " + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in batch.items())]
    if set(batch) == {"tokens"}:  # LM windows: the model reads tokens[:-1], predicts tokens[1:]
        for row in batch["tokens"][:num_examples]:
            lines += [
                f"  example (window of {len(row)} tokens):",
                f"    inputs  = tokens[:-1]: {decode(row[:-1])!r}",
                f"    targets = tokens[1:]:  {decode(row[1:])!r}",
                f"    loss mask: all {len(row) - 1} targets weighted (no padding)",
            ]
        return lines
    if batch[next(iter(batch))].ndim == 1:  # pairs (skip-gram): one example per entry
        pairs = [f"{decode([c])!r} -> {decode([x])!r}" for c, x in
                 zip(batch["centers"][:num_examples], batch["contexts"][:num_examples],
                     strict=True)]  # fmt: skip
        return lines + ["  (center -> context) " + ", ".join(pairs)]
    for r in range(min(num_examples, len(batch[next(iter(batch))]))):
        lines.append(f"  example (row {r}):")
        for key in [k for k in TOKEN_KEYS if k in batch]:
            lines.append(f"    {key}: {decode(batch[key][r])!r}")
        for key in [k for k in MASK_KEYS if k in batch]:
            lines.append(f"    {key}: {_mask_string(np.asarray(batch[key][r]))}")
    return lines


def throughput(iterator, seconds: float = 2.0, min_batches: int = 5) -> tuple[float, int]:
    """(examples/s, batches timed) of a batch iterator; the first batch is not timed."""
    first = next(iterator)
    rows = len(first[next(iter(first))])
    start, n = time.perf_counter(), 0
    while n < min_batches or time.perf_counter() - start < seconds:
        next(iterator)
        n += 1
    return n * rows / (time.perf_counter() - start), n


def report(task, split: str = "train", num_examples: int = 3, seconds: float = 2.0) -> str:
    """The full ``nlpjax data inspect`` text for a constructed task."""
    data, tokenizer = task.config.data, task.tokenizer
    lines = dataset_report(data.dataset, tokenizer, getattr(data, "tfds_data_dir", ""))
    lines += vocabulary_report(tokenizer)
    it = task.train_iterator()
    if split == "train":
        batch = next(it)
        lines.append(f"{split} batch 0, exactly as the model receives it:")
    else:
        batch = {k: v[0] for k, v in task.eval_batches().items()}
        lines.append(f"evaluation batch 0 ({split}), exactly as the model receives it:")
    lines += example_report(batch, tokenizer.decode, num_examples)
    rate, n = throughput(it, seconds)
    lines.append(f"train pipeline: {rate:,.0f} examples/s ({n} batches timed)")
    return "\n".join(lines)
