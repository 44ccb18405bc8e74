"""grain pipelines for encoder-decoder models: translation pairs and T5 span corruption.

Batches have separate source (S) and target (T) lengths:

- ``inputs``, ``inputs_mask``, ``inputs_segment_ids``, ``inputs_positions``: (B, S);
- ``targets``, ``decoder_inputs``, ``targets_mask``, ``targets_segment_ids``,
  ``targets_positions``: (B, T).

Variable-length pairs are batched by packing (several pairs per row, grain's first-fit
packing, fixed shapes; attention must compare segment ids) or by length bucketing (pairs
of similar length padded together; one segment per row, shapes vary per bucket).
``benchmarks/bench_data.py`` measures the padding each leaves.
"""

import dataclasses
from collections.abc import Callable, Sequence

import grain
import grain.experimental as gx
import numpy as np

from nlpjax.data import transforms
from nlpjax.data.pipeline import read_options, shift_right


def features(
    inputs: np.ndarray,
    inputs_seg: np.ndarray,
    targets: np.ndarray,
    targets_seg: np.ndarray,
    start_id: int,
) -> dict[str, np.ndarray]:
    """The seq2seq batch format from token and segment-id arrays (rows or batches)."""
    return {
        "inputs": inputs.astype(np.int32),
        "inputs_mask": inputs_seg > 0,
        "inputs_segment_ids": inputs_seg.astype(np.int32),
        "inputs_positions": transforms.segment_positions(inputs_seg),
        "targets": targets.astype(np.int32),
        "decoder_inputs": shift_right(targets, targets_seg, start_id),
        "targets_mask": targets_seg > 0,
        "targets_segment_ids": targets_seg.astype(np.int32),
        "targets_positions": transforms.segment_positions(targets_seg),
    }


def _trim_eos(ids: np.ndarray, length: int, eos_id: int) -> np.ndarray:
    """At most ``length - 1`` tokens, then EOS (EOS survives truncation)."""
    return np.concatenate([ids[: length - 1], [eos_id]]).astype(np.int32)


def pair_examples(
    ds: grain.MapDataset,
    encode: Callable[[str], np.ndarray],
    fields: tuple[str, str],
    source_length: int,
    target_length: int,
    eos_id: int,
) -> grain.MapDataset:
    """``{src: text, tgt: text}`` -> ``{"inputs", "targets"}`` token ids, each ending in EOS.

    Sequences longer than ``source_length``/``target_length`` are cut (EOS kept).
    """
    src, tgt = fields

    def encode_pair(example: dict) -> dict:
        return {
            "inputs": _trim_eos(encode(example[src]), source_length, eos_id),
            "targets": _trim_eos(encode(example[tgt]), target_length, eos_id),
        }

    return ds.map(encode_pair)


@dataclasses.dataclass(frozen=True)
class PairStats:
    """What ``pair_stats`` found in a split: pairs, empty targets, over-long sources."""

    total: int
    empty_targets: int
    too_long: int
    longest: int  # tokens of the longest source (end id included)
    first_too_long: int  # index of the first over-long source, -1 if none


def nonempty_target(example: dict, target_field: str) -> bool:
    """Whether a pair has a target (empty or blank targets are skipped)."""
    return bool(example[target_field].strip())


def pair_stats(
    sources: Sequence[str],
    targets: Sequence[str],
    encode_batch: Callable[[list[str]], list[np.ndarray]],
    source_length: int,
) -> PairStats:
    """Counts the pairs with an empty target and the sources (already prefixed) whose
    tokens plus the end id exceed ``source_length``, among pairs with a target."""
    kept = [s for s, t in zip(sources, targets, strict=True) if t.strip()]
    lengths = np.array([len(ids) + 1 for ids in encode_batch(kept)] or [0])
    over = np.flatnonzero(lengths > source_length)
    first = -1
    if over.size:  # back to the index among all pairs
        first = [i for i, t in enumerate(targets) if t.strip()][int(over[0])]
    return PairStats(
        len(sources), len(sources) - len(kept), int(over.size), int(lengths.max()), first
    )


def packed_batches(
    examples: grain.MapDataset,
    *,
    source_length: int,
    target_length: int,
    batch_size: int,
    start_id: int,
    seed: int = 0,
    num_bins: int = 0,
    read_threads: int = 0,
    drop_remainder: bool = True,
) -> grain.IterDataset:
    """Pairs packed first-fit into rows of (S, T), ``num_bins`` (default: B) rows at a time.

    Row features are computed once per batch (vectorized), not per row.
    """
    it = gx.FirstFitPackIterDataset(
        examples.to_iter_dataset(read_options(read_threads)),
        length_struct={"inputs": source_length, "targets": target_length},
        num_packing_bins=num_bins or batch_size,
        seed=seed,
        shuffle_bins=True,
    )

    def finish(batch: dict) -> dict:
        return features(
            batch["inputs"],
            batch["inputs_segment_ids"],
            batch["targets"],
            batch["targets_segment_ids"],
            start_id,
        )

    return it.batch(batch_size, drop_remainder=drop_remainder).map(finish)


def _round_up(n: int, multiple: int, cap: int) -> int:
    return min(cap, -(-max(n, 1) // multiple) * multiple)


def pad_batch(
    rows: list[dict], batch_size: int, pad_multiple: int, caps: tuple[int, int], start_id: int
) -> dict[str, np.ndarray]:
    """Pads ``rows`` of {"inputs", "targets"} into one bucket batch of (B, S_b) and (B, T_b).

    S_b is the longest source rounded up to ``pad_multiple`` (at most ``caps[0]``), T_b
    likewise; rows past ``len(rows)`` are all padding.
    """
    out = {}
    for key, cap in zip(("inputs", "targets"), caps, strict=True):
        lengths = np.zeros(batch_size, np.int64)
        lengths[: len(rows)] = [len(r[key]) for r in rows]
        width = _round_up(int(lengths.max()), pad_multiple, cap)
        tokens = np.zeros((batch_size, width), np.int32)
        for i, row in enumerate(rows):
            tokens[i, : len(row[key])] = row[key]
        out[key] = tokens
        out[f"{key}_seg"] = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    return features(out["inputs"], out["inputs_seg"], out["targets"], out["targets_seg"], start_id)


def padded_batches(
    examples: grain.MapDataset,
    *,
    source_length: int,
    target_length: int,
    batch_size: int,
    start_id: int,
    read_threads: int = 0,
) -> grain.IterDataset:
    """One pair per row, padded to the fixed (B, S) and (B, T): for models that cannot
    read packed rows (a recurrent encoder runs one sequence per row), with one shape, so
    steps stack into one dispatch and compile once."""
    caps = (source_length, target_length)

    def pad(rows) -> dict[str, np.ndarray]:
        return pad_batch(list(rows), batch_size, max(caps), caps, start_id)

    # Iterated before batching: upstream filters (empty targets) make the length unknown.
    examples = examples.to_iter_dataset(read_options(read_threads))
    return examples.batch(batch_size, drop_remainder=True, batch_fn=pad)


class _Unwindow(gx.FlatMapTransform):
    """A window's list of batches -> the batches, one element each."""

    def __init__(self, max_fan_out: int):
        self.max_fan_out = max_fan_out

    def flat_map(self, batches: list[dict]) -> list[dict]:
        return batches


def bucketed_batches(
    examples: grain.MapDataset,
    *,
    source_length: int,
    target_length: int,
    batch_size: int,
    start_id: int,
    seed: int = 0,
    window_batches: int = 32,
    pad_multiple: int = 8,
    drop_remainder: bool = True,
    read_threads: int = 0,
) -> grain.IterDataset:
    """Length bucketing: each window of ``window_batches * B`` pairs is sorted by length,
    cut into B-pair batches padded to a multiple of ``pad_multiple``, and those batches are
    returned in a random order (each window is computed once, then flattened).
    """
    window = window_batches * batch_size
    caps = (source_length, target_length)

    def sort_and_batch(rows: list[dict], rng: np.random.Generator) -> list[dict]:
        rows = sorted(rows, key=lambda r: (len(r["inputs"]), len(r["targets"])))
        groups = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        if drop_remainder:
            groups = [g for g in groups if len(g) == batch_size]
        batches = [pad_batch(g, batch_size, pad_multiple, caps, start_id) for g in groups]
        return [batches[i] for i in rng.permutation(len(batches))]

    windows = examples.batch(window, drop_remainder=drop_remainder, batch_fn=list)
    windows = windows.random_map(sort_and_batch, seed=seed).to_iter_dataset(
        read_options(read_threads)
    )
    return gx.FlatMapIterDataset(windows, _Unwindow(window_batches))


def span_corruption_batches(
    docs: grain.MapDataset,
    *,
    inputs_length: int,
    batch_size: int,
    sentinel_ids: np.ndarray,
    eos_id: int,
    start_id: int,
    seed: int = 0,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    read_threads: int = 0,
) -> grain.IterDataset:
    """T5 span-corruption pretraining batches from documents of token ids.

    Documents are concatenated and cut into pieces of the raw length that corrupts to
    ``inputs_length`` (T5's ``random_spans_helper``), then each piece gets a random noise
    mask (``transforms.random_spans_noise_mask``) and becomes (inputs, targets) in T5's
    format, padded to (inputs_length, targets_length).
    """
    raw_length, targets_length = transforms.span_corruption_lengths(
        inputs_length, noise_density, mean_noise_span_length
    )
    sentinel_ids = np.asarray(sentinel_ids, np.int32)
    it = gx.ConcatThenSplitIterDataset(
        docs.map(lambda ids: {"tokens": ids.astype(np.int32)}).to_iter_dataset(
            read_options(read_threads)
        ),
        length_struct={"tokens": raw_length},
    )

    def corrupt(row: dict, rng: np.random.Generator) -> dict:
        tokens = row["tokens"][row["tokens_segment_ids"] > 0]
        mask = transforms.random_spans_noise_mask(
            len(tokens), rng, noise_density, mean_noise_span_length
        )
        inputs, targets = transforms.span_corruption(tokens, mask, sentinel_ids, eos_id)
        out = {}
        for key, ids, length in (
            ("inputs", inputs, inputs_length),
            ("targets", targets, targets_length),
        ):
            out[key] = np.zeros(length, np.int32)
            out[key][: len(ids)] = ids[:length]
            out[f"{key}_seg"] = (np.arange(length) < len(ids)).astype(np.int32)
        return out

    def finish(b: dict) -> dict:
        return features(b["inputs"], b["inputs_seg"], b["targets"], b["targets_seg"], start_id)

    it = it.random_map(corrupt, seed=seed)
    return it.batch(batch_size, drop_remainder=True).map(finish)
