"""grain pipelines that turn token streams into training and evaluation batches.

Every batch is a pure function of (seed, batch index): grain's ``random_map`` derives a
per-element generator from the seed and the element's index, so an iterator restored
from its checkpointed state continues with exactly the batches an uninterrupted run
would have seen.
"""

import grain
import numpy as np

# Effectively endless: windows are sampled with replacement, there are no epochs.
_NUM_ELEMENTS = 2**40


def lm_windows(tokens: np.ndarray, length: int, batch_size: int, seed: int) -> grain.MapDataset:
    """Random windows of ``length`` tokens (inputs + shifted targets = context + 1).

    Returns a MapDataset whose i-th element is {"tokens": int32 (batch_size, length)}.
    """
    if len(tokens) <= length:
        raise ValueError(f"token stream of {len(tokens)} is too short for windows of {length}")
    max_start = len(tokens) - length

    def window(_, rng: np.random.Generator):
        start = int(rng.integers(0, max_start + 1))
        return tokens[start : start + length]

    ds = grain.MapDataset.range(_NUM_ELEMENTS).random_map(window, seed=seed)
    return ds.batch(batch_size, drop_remainder=True).map(lambda x: {"tokens": x})


def iterator(ds: grain.MapDataset, prefetch: int = 0) -> grain.DatasetIterator:
    """A checkpointable iterator (``get_state``/``set_state``) over ``ds``."""
    read = grain.ReadOptions(num_threads=1 if prefetch else 0, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(read_options=read))


def take_stacked(ds: grain.MapDataset, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` elements of ``ds`` stacked on a new leading axis."""
    items = [ds[i] for i in range(n)]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}
