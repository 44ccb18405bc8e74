"""grain pipelines that turn documents or token streams into training and evaluation batches.

Every pipeline is deterministic given its seed: shuffling uses grain's index shuffle
(a new order each epoch), random transforms derive their generator from (seed, element
index), and each host reads only its own shard (``Shard``). ``DataIterator`` wraps the
grain iterator: its state (saved in every checkpoint) holds the grain position and the
fingerprint of the vocabulary that made the batches, so a resumed run continues with
exactly the batches an uninterrupted run would have seen, and refuses another vocabulary.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grain
import grain.experimental as gx
import numpy as np

from nlpjax.data import transforms
from nlpjax.data.tokenizers import check_fingerprint, fingerprint

# Effectively endless: windows are sampled with replacement, there are no epochs.
_NUM_ELEMENTS = 2**40


def lm_windows(
    tokens: np.ndarray,
    length: int,
    batch_size: int,
    seed: int,
    shard: "Shard | None" = None,
    transform: Callable[[np.ndarray, np.random.Generator], dict] | None = None,
) -> grain.MapDataset:
    """Random windows of ``length`` tokens (inputs + shifted targets = context + 1).

    Returns a MapDataset whose i-th element is {"tokens": int32 (batch_size / hosts,
    length)}: global batch i is windows ``i * batch_size ... (i + 1) * batch_size - 1``,
    and with ``shard`` each host takes every ``shard.count``-th of them, so hosts see
    disjoint windows whose union is exactly the single-host batch. ``transform(window,
    rng)`` (e.g. pause insertion) turns each window into a dict of arrays, drawing from
    the window's own generator, so it too is a pure function of (seed, window index).
    """
    if len(tokens) <= length:
        raise ValueError(f"token stream of {len(tokens)} is too short for windows of {length}")
    shard = shard or Shard()
    if batch_size % shard.count:
        raise ValueError(f"batch size {batch_size} does not split over {shard.count} hosts")
    max_start = len(tokens) - length

    def window(_, rng: np.random.Generator):
        start = int(rng.integers(0, max_start + 1))
        if transform is not None:
            return transform(tokens[start : start + length], rng)
        return tokens[start : start + length]

    ds = grain.MapDataset.range(_NUM_ELEMENTS).random_map(window, seed=seed)
    ds = ds[shard.index :: shard.count]
    ds = ds.batch(batch_size // shard.count, drop_remainder=True)
    return ds if transform is not None else ds.map(lambda x: {"tokens": x})


def stream_steps_per_epoch(num_tokens: int, length: int, batch_size: int) -> int:
    """Steps in one pass of ``lm_streams`` over ``num_tokens`` tokens (its epoch length;
    < 1 when the rows are too short for one window)."""
    row_len = num_tokens // batch_size
    return (row_len - (length - 1)) // (length - 1) - 1


def lm_streams(
    tokens: np.ndarray, length: int, batch_size: int, seed: int, shard: "Shard | None" = None
) -> grain.MapDataset:
    """Contiguous streams for truncated backpropagation through time.

    The token stream is cut into ``batch_size`` rows of equal length (row r is the r-th
    contiguous part of the corpus). Batch t holds, for every row, the ``length`` tokens
    starting at ``offset + t * (length - 1)``: consecutive windows overlap by one token, so
    the last target of row r at step t is the first input of row r at step t + 1, and a
    carried hidden state continues exactly where it stopped. When a row is used up a new
    epoch starts all rows again at an offset in ``[0, length - 1)`` drawn from (seed,
    epoch), so window boundaries move between epochs. Element i is a pure function of
    (seed, i), hence resumable from the index alone. With ``shard`` each host takes a
    contiguous block of ``batch_size / count`` rows (the carry's rows on its devices).

    Returns a MapDataset of {"tokens": int32 (batch_size / hosts, length)}.
    """
    shard = shard or Shard()
    if batch_size % shard.count:
        raise ValueError(f"batch size {batch_size} does not split over {shard.count} hosts")
    if length < 2:
        raise ValueError(f"stream windows need at least 2 tokens (inputs + targets), not {length}")
    per_epoch = stream_steps_per_epoch(len(tokens), length, batch_size)
    if per_epoch < 1:
        raise ValueError(
            f"a token stream of {len(tokens)} cut into {batch_size} rows is too short for "
            f"windows of {length}: use a smaller batch or context, or more text"
        )
    per_host = batch_size // shard.count
    first = shard.index * per_host
    row_len = len(tokens) // batch_size
    rows = np.asarray(tokens[: batch_size * row_len], np.int32).reshape(batch_size, row_len)
    rows = rows[first : first + per_host]

    def window(index: int) -> dict[str, np.ndarray]:
        epoch, t = divmod(int(index), per_epoch)
        offset = int(np.random.default_rng([seed, epoch]).integers(0, length - 1))
        start = offset + t * (length - 1)
        return {"tokens": rows[:, start : start + length]}

    return grain.MapDataset.range(_NUM_ELEMENTS).map(window)


@dataclasses.dataclass(frozen=True)
class Shard:
    """This host's part of the data: elements ``index, index + count, ...`` of every epoch."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} out of range for {self.count} hosts")

    @classmethod
    def this_host(cls) -> "Shard":
        """The shard of this process (``jax.process_index()`` of ``jax.process_count()``)."""
        import jax

        return cls(jax.process_index(), jax.process_count())


def epochs(
    source: Sequence | grain.MapDataset,
    seed: int,
    shard: Shard | None = None,
    num_epochs: int | None = None,
    shuffle: bool = True,
) -> grain.MapDataset:
    """This host's shard of ``source``, reshuffled every epoch, repeated (None: forever).

    Sharding happens before shuffling, so hosts see disjoint elements whose union is
    the whole epoch; every epoch has its own order derived from ``seed``.
    """
    shard = shard or Shard.this_host()
    ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
    ds = ds[shard.index :: shard.count]
    if len(ds) == 0:
        raise ValueError(f"host {shard.index} of {shard.count} gets no data from {len(source)}")
    if shuffle:
        ds = ds.shuffle(seed=seed)
    return ds.repeat(num_epochs)


def tokenized(ds: grain.MapDataset, encode: Callable[[str], np.ndarray], field: str = "text"):
    """Maps ``{field: text}`` elements to int32 token arrays (runs on grain's read threads)."""
    return ds.map(lambda example: encode(example[field]))


def materialize(ds: grain.MapDataset, limit: int = 5_000_000) -> grain.MapDataset:
    """Computes every element of a finite ``ds`` once and keeps them in memory.

    For corpora that fit in memory (Multi30k, Tiny Shakespeare): tokenize once, then
    every epoch only shuffles and packs. More than ``limit`` elements is an error.
    """
    if len(ds) > limit:
        raise ValueError(f"{len(ds)} elements is too many to keep in memory (limit {limit})")
    return grain.MapDataset.source([ds[i] for i in range(len(ds))])


class DataIterator:
    """A checkpointable iterator of host batches that remembers its vocabulary.

    ``get_state()`` is JSON-serializable: ``{"pipeline": grain state (tuples marked,
    because grain compares some entries with tuples and JSON would turn them into
    lists), "vocabulary": {"fingerprint", "size"} or None}``. ``set_state`` refuses a
    state recorded with another vocabulary (``VocabularyMismatchError`` naming
    ``vocab_file``) and accepts bare grain states written before the vocabulary was recorded.
    """

    def __init__(self, dataset: grain.IterDataset, vocabulary=None, vocab_file: str = ""):
        self._it = iter(dataset)
        self._tokenizer, self._vocab_file = vocabulary, vocab_file or "the tokenizer"
        self._vocab = None
        if vocabulary is not None:
            self._vocab = {"fingerprint": fingerprint(vocabulary), "size": vocabulary.vocab_size}

    def __iter__(self) -> "DataIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return {"pipeline": _tuples_to_json(self._it.get_state()), "vocabulary": self._vocab}

    def set_state(self, state: dict[str, Any]) -> None:
        if "pipeline" not in state:  # a bare grain state from before vocabularies were recorded
            self._it.set_state(state)
            return
        saved = state.get("vocabulary")
        if saved and self._tokenizer is not None:
            expected, size = saved["fingerprint"], saved["size"]
            check_fingerprint(self._tokenizer, expected, self._vocab_file, size)
        self._it.set_state(_tuples_from_json(state["pipeline"]))

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def _tuples_to_json(state: Any) -> Any:
    """Marks tuples so they survive JSON: grain compares some state entries to tuples."""
    if isinstance(state, tuple):
        return {"__tuple__": [_tuples_to_json(x) for x in state]}
    if isinstance(state, list):
        return [_tuples_to_json(x) for x in state]
    if isinstance(state, dict):
        return {k: _tuples_to_json(v) for k, v in state.items()}
    return state


def _tuples_from_json(state: Any) -> Any:
    if isinstance(state, dict):
        if set(state) == {"__tuple__"}:
            return tuple(_tuples_from_json(x) for x in state["__tuple__"])
        return {k: _tuples_from_json(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_tuples_from_json(x) for x in state]
    return state


def iterator(
    ds: grain.MapDataset | grain.IterDataset,
    prefetch: int = 0,
    vocabulary=None,
    vocab_file: str = "",
) -> DataIterator:
    """A checkpointable iterator over ``ds``; ``prefetch`` > 0 prepares batches in a thread.

    Args:
      ds: the pipeline.
      prefetch: batches prepared ahead by a background thread (0: none).
      vocabulary: the tokenizer that made the batches (its fingerprint goes in the state).
      vocab_file: where that tokenizer is saved, named in mismatch errors.
    """
    if isinstance(ds, grain.MapDataset):
        read = grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
        ds = ds.to_iter_dataset(read_options=read)
    elif prefetch:
        ds = gx.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
    return DataIterator(ds, vocabulary, vocab_file)


def stack_batches(batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[batch, ...] -> one batch whose arrays have a new leading axis (one row a batch)."""
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def take_stacked(ds: grain.MapDataset, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` elements of ``ds`` stacked on a new leading axis."""
    return stack_batches([ds[i] for i in range(n)])


def read_options(threads: int) -> grain.ReadOptions:
    """Read threads for the per-element map stage (tokenizing); 0 reads in the caller."""
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(4 * threads, 1))


def shift_right(targets: np.ndarray, segment_ids: np.ndarray, start_id: int) -> np.ndarray:
    """Decoder inputs: ``targets`` shifted right by one inside each segment, ``start_id`` first.

    A token never sees the previous segment's last token, so packed documents stay
    independent; padding (segment 0) stays 0.
    """
    shifted = np.concatenate([np.full_like(targets[..., :1], start_id), targets[..., :-1]], -1)
    prev_seg = np.concatenate([np.zeros_like(segment_ids[..., :1]), segment_ids[..., :-1]], -1)
    starts = segment_ids != prev_seg
    return np.where(segment_ids > 0, np.where(starts, start_id, shifted), 0).astype(np.int32)


def lm_packed(
    docs: grain.MapDataset,
    *,
    length: int,
    batch_size: int,
    eos_id: int,
    bos_id: int,
    pause_id: int | None = None,
    pause_fraction: float = 0.0,
    seed: int = 0,
    read_threads: int = 0,
) -> grain.IterDataset:
    """Documents joined with EOS, cut into rows of ``length``: the packed LM batch.

    Args:
      docs: token arrays, one per document (e.g. ``tokenized(epochs(...), tok.encode)``).
      length: tokens per row (the model's context).
      batch_size: rows per batch.
      eos_id, bos_id: EOS ends every document; BOS starts every segment's inputs.
      pause_id, pause_fraction: if set, ``round(pause_fraction * real tokens)`` pauses are
        inserted at random positions of each row (``transforms.insert_pauses``).
      seed: for pause positions.
      read_threads: threads that tokenize documents ahead of packing.

    Returns:
      An IterDataset of {"inputs", "targets", "segment_ids", "positions": int32 (B, L),
      "weights": float32 (B, L)}. ``inputs`` is ``targets`` shifted right inside each
      segment; ``weights`` is 0 on padding and where the target is a pause. Attention must
      use ``segment_ids`` (equal and > 0) so it never crosses documents.
    """
    eos = np.asarray([eos_id], np.int32)
    ds = docs.map(lambda ids: {"targets": np.concatenate([ids.astype(np.int32), eos])})
    it = gx.ConcatThenSplitIterDataset(
        ds.to_iter_dataset(read_options(read_threads)), length_struct={"targets": length}
    )

    def pauses(row: dict, rng: np.random.Generator) -> dict:
        seg = row["targets_segment_ids"]
        num = int(round(pause_fraction * int((seg > 0).sum())))
        targets, seg = transforms.insert_pauses(row["targets"], num, pause_id, rng, seg)
        return {"targets": targets, "targets_segment_ids": seg}

    def features(batch: dict) -> dict:
        targets, seg = batch["targets"], batch["targets_segment_ids"]
        weights = transforms.pause_loss_weights(targets, -1 if pause_id is None else pause_id, seg)
        return {
            "inputs": shift_right(targets, seg, bos_id),
            "targets": targets.astype(np.int32),
            "segment_ids": seg.astype(np.int32),
            "positions": transforms.segment_positions(seg),
            "weights": weights,
        }

    if pause_id is not None and pause_fraction > 0:
        it = it.random_map(pauses, seed=seed)
    return it.batch(batch_size, drop_remainder=True).map(features)


def padding_stats(batches: Sequence[dict[str, np.ndarray]], mask_keys: Sequence[str]) -> dict:
    """Fraction of token slots that are padding, per mask key (e.g. ``inputs_mask``)."""
    stats = {}
    for key in mask_keys:
        real = sum(float((b[key] > 0).sum()) for b in batches)
        total = sum(b[key].size for b in batches)
        stats[key] = 1.0 - real / total
    return stats
