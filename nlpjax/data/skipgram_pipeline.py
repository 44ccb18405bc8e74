"""grain pipeline of word2vec skip-gram pairs (https://arxiv.org/abs/1310.4546).

Documents of word ids -> frequent-word subsampling per document (before windows are
formed, as in word2vec, so windows reach past dropped words) -> sentences of at most
``sentence_length`` kept words (a sentence never spans two documents) -> (center,
context) pairs from the dynamic window, shuffled within the sentence -> batches of
exactly B pairs. Negatives are drawn by the trainer from ``transforms.noise_distribution``.

What the ``sgns`` task trains on instead: ``SubsampledStream`` (the in-vocabulary word
stream, subsampled on the host once per epoch) cut into ``chunk_batches`` of kept words;
the device builds the pairs and draws the negatives.
"""

import threading

import grain
import grain.experimental as gx
import numpy as np
from jaxtyping import Int

from nlpjax.data import transforms
from nlpjax.data.pipeline import read_options
from nlpjax.data.special_tokens import NUM_SPECIAL

_ENDLESS = 2**40  # steps of a SubsampledStream's batches (the stream never ends)


def training_counts(counts: Int[np.ndarray, " V"]) -> Int[np.ndarray, " V"]:
    """Word counts with pad/eos/unk/bos zeroed: word2vec never trains on them."""
    counts = np.array(counts, np.int64)
    counts[:NUM_SPECIAL] = 0
    return counts


def skipgram_batches(
    docs: grain.MapDataset,
    *,
    counts: Int[np.ndarray, " V"],
    window: int,
    batch_size: int,
    seed: int = 0,
    subsample_threshold: float = 1e-3,
    sentence_length: int = 1000,
    read_threads: int = 0,
) -> grain.IterDataset:
    """Batches {"centers": int32 (B,), "contexts": int32 (B,)} of skip-gram pairs.

    Args:
      docs: token-id arrays, one per document (from a ``WordTokenizer``).
      counts: training count per id (``WordTokenizer.counts_array()``); ids with count 0
        (and the special ids) are dropped.
      window: the maximum window; each center draws its own from 1..window.
      batch_size: pairs per batch.
      seed: for subsampling, windows and the pair order.
      subsample_threshold: word2vec's ``sample`` t (0 disables subsampling).
      sentence_length: most words per sentence (word2vec's 1000).
      read_threads: threads that tokenize and subsample documents ahead.
    """
    keep = transforms.keep_probabilities(training_counts(counts), subsample_threshold)

    def subsample(ids: np.ndarray, rng: np.random.Generator) -> dict:
        return {"ids": transforms.subsample(ids, keep, rng)}

    kept = docs.random_map(subsample, seed=seed).filter(lambda e: len(e["ids"]) > 0)
    it = gx.ConcatThenSplitIterDataset(
        kept.to_iter_dataset(read_options(read_threads)), length_struct={"ids": sentence_length}
    )

    def pairs(row: dict, rng: np.random.Generator) -> dict:
        centers, contexts = transforms.skipgram_pairs(
            row["ids"], window, rng, row["ids_segment_ids"]
        )
        order = rng.permutation(len(centers))
        return {"centers": centers[order], "contexts": contexts[order]}

    it = it.random_map(pairs, seed=seed + 1).filter(lambda p: len(p["centers"]) > 0)
    return gx.RebatchIterDataset(it, batch_size, drop_remainder=True)


class SubsampledStream:
    """word2vec's training stream: the corpus subsampled anew every epoch, epoch after epoch.

    Epoch e keeps word i with probability ``keep_V[ids[i]]``, drawn with
    ``np.random.default_rng([seed, e])``: a pure function of the seed and the epoch, so a
    resumed run draws what an uninterrupted one drew. The kept words of all epochs
    form one endless stream; ``words(start, n)`` reads any part of it. Sentence numbers of
    odd epochs are shifted by the sentence count, so the last sentence of one epoch and
    the first of the next never look like one sentence. Thread-safe (a prefetch thread
    and the main thread may both read).
    """

    def __init__(
        self,
        ids: Int[np.ndarray, " N"],
        sentences: Int[np.ndarray, " N"],
        keep_V: np.ndarray,
        seed: int,
    ):
        if len(ids) == 0:
            raise ValueError("SubsampledStream needs a non-empty word stream")
        self.ids, self.sentences, self.keep_V, self.seed = ids, sentences, keep_V, seed
        self._shift = int(sentences.max(initial=0))
        self._starts = [0]  # _starts[e]: stream position where epoch e begins
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.RLock()

    def expected_words_per_epoch(self) -> float:
        """The mean number of words an epoch keeps."""
        return float(np.sum(self.keep_V[self.ids], dtype=np.float64))

    def epoch(self, e: int) -> tuple[Int[np.ndarray, " M"], Int[np.ndarray, " M"]]:
        """(ids, sentence numbers) of the words epoch ``e`` keeps, in corpus order."""
        with self._lock:
            if e not in self._cache:
                rng = np.random.default_rng([self.seed, e])
                kept = rng.random(len(self.ids)) < self.keep_V[self.ids]
                sentences = self.sentences[kept] + (e % 2) * self._shift
                if len(self._cache) >= 2:  # the epoch being read and the next
                    del self._cache[min(self._cache)]
                self._cache[e] = (self.ids[kept], sentences.astype(np.int32))
            return self._cache[e]

    def _epoch_of(self, position: int) -> int:
        """The epoch holding stream ``position`` (subsampling the epochs before it once)."""
        while self._starts[-1] <= position:
            e = len(self._starts) - 1
            self._starts.append(self._starts[-1] + len(self.epoch(e)[0]))
        return int(np.searchsorted(self._starts, position, side="right")) - 1

    def words(self, start: int, length: int) -> tuple[Int[np.ndarray, " L"], Int[np.ndarray, " L"]]:
        """(ids, sentence numbers) of stream positions ``start .. start + length - 1``."""
        ids, sentences, position = [], [], start
        with self._lock:
            while position < start + length:
                e = self._epoch_of(position)
                offset = position - self._starts[e]
                take = min(start + length - position, self._starts[e + 1] - position)
                epoch_ids, epoch_sentences = self.epoch(e)
                ids.append(epoch_ids[offset : offset + take])
                sentences.append(epoch_sentences[offset : offset + take])
                position += take
        return np.concatenate(ids), np.concatenate(sentences)


def chunk_batches(stream: SubsampledStream, chunk: int, batch_size: int, shard) -> grain.MapDataset:
    """Step t's batch {"ids", "segments"} (rows, ``chunk``) of ``stream``: the global batch
    holds chunks t * B .. t * B + B - 1 of the stream and this host (``shard``, a
    ``pipeline.Shard``) the rows ``shard.index::shard.count`` of it. Element t is a pure
    function of t, so a grain iterator's position is the data position."""
    if batch_size % shard.count:
        raise ValueError(f"batch_size={batch_size} does not split over {shard.count} hosts")
    rows = range(shard.index, batch_size, shard.count)

    def batch(step: int) -> dict[str, np.ndarray]:
        parts = [stream.words((step * batch_size + r) * chunk, chunk) for r in rows]
        return {
            "ids": np.stack([ids for ids, _ in parts]).astype(np.int32),
            "segments": np.stack([segments for _, segments in parts]).astype(np.int32),
        }

    return grain.MapDataset.range(_ENDLESS).map(batch)
