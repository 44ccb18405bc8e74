"""grain pipeline of word2vec skip-gram pairs (https://arxiv.org/abs/1310.4546).

Documents of word ids -> frequent-word subsampling per document (before windows are
formed, as in word2vec, so windows reach past dropped words) -> sentences of at most
``sentence_length`` kept words (a sentence never spans two documents) -> (center,
context) pairs from the dynamic window, shuffled within the sentence -> batches of
exactly B pairs. Negatives are drawn by the trainer from ``transforms.noise_distribution``.
"""

import grain
import grain.experimental as gx
import numpy as np
from jaxtyping import Int

from nlpjax.data import transforms
from nlpjax.data.pipeline import read_options
from nlpjax.data.special_tokens import NUM_SPECIAL


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
