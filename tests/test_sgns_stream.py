"""word2vec's training stream (data/skipgram_pipeline.py): subsampled anew each epoch,
cut into chunks of kept words, resumable from a grain iterator state. Host-only, fast."""

import numpy as np
import pytest

from nlpjax.data import pipeline
from nlpjax.data.skipgram_pipeline import SubsampledStream, chunk_batches

VOCAB = 50


@pytest.fixture(scope="module")
def stream():
    rng = np.random.default_rng(0)
    ids = rng.integers(4, VOCAB, 1000).astype(np.int32)
    sentences = np.repeat(np.arange(1, 101), 10).astype(np.int32)  # 100 sentences of 10
    keep_V = np.linspace(0.2, 1.0, VOCAB).astype(np.float32)
    return SubsampledStream(ids, sentences, keep_V, seed=3)


def test_an_epoch_keeps_each_word_with_its_probability(stream):
    kept, total = np.zeros(VOCAB), np.zeros(VOCAB)
    for e in range(40):
        rng = np.random.default_rng([3, e])  # the epoch's own draws, as documented
        mask = rng.random(len(stream.ids)) < stream.keep_V[stream.ids]
        np.testing.assert_array_equal(stream.epoch(e)[0], stream.ids[mask])
        np.add.at(kept, stream.ids[mask], 1)
        np.add.at(total, stream.ids, 1)
    seen = total > 0
    rate = kept[seen] / total[seen]
    # 40 epochs x ~20 occurrences per id: the rate is within 5 standard deviations
    std = np.sqrt(stream.keep_V[seen] * (1 - stream.keep_V[seen]) / total[seen])
    assert np.all(np.abs(rate - stream.keep_V[seen]) <= 5 * std + 1e-9)
    assert stream.expected_words_per_epoch() == pytest.approx(
        float(np.sum(stream.keep_V[stream.ids])), rel=1e-6
    )


def test_the_stream_is_the_epochs_one_after_another(stream):
    epochs = [stream.epoch(e) for e in range(3)]
    ids = np.concatenate([e[0] for e in epochs])
    sentences = np.concatenate([e[1] for e in epochs])
    first = len(epochs[0][0])
    # a read across the boundary of epochs 0 and 1, then one inside epoch 2
    got = stream.words(first - 7, 20)
    np.testing.assert_array_equal(got[0], ids[first - 7 : first + 13])
    np.testing.assert_array_equal(got[1], sentences[first - 7 : first + 13])
    start = first + len(epochs[1][0]) + 5
    np.testing.assert_array_equal(stream.words(start, 9)[0], ids[start : start + 9])
    # the last sentence of an epoch never continues into the first of the next
    assert got[1][6] != got[1][7]
    assert set(epochs[1][1]).isdisjoint(epochs[0][1]) and set(epochs[2][1]) <= set(epochs[0][1])


def test_hosts_split_each_batch_and_an_iterator_resumes_at_its_step(stream):
    one = chunk_batches(stream, chunk=64, batch_size=4, shard=pipeline.Shard(0, 1))
    halves = [chunk_batches(stream, 64, 4, pipeline.Shard(i, 2)) for i in range(2)]
    for step in (0, 13, 40):  # step 40 is past the fourth epoch's start (~60 words a step)
        batch = one[step]
        assert batch["ids"].shape == (4, 64) and batch["ids"].dtype == np.int32
        np.testing.assert_array_equal(batch["ids"][0], stream.words(step * 256, 64)[0])
        np.testing.assert_array_equal(halves[0][step]["ids"], batch["ids"][0::2])
        np.testing.assert_array_equal(halves[1][step]["ids"], batch["ids"][1::2])
    it = pipeline.iterator(one)
    for _ in range(7):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    again = pipeline.iterator(one)
    again.set_state(state)
    for batch in want:
        np.testing.assert_array_equal(next(again)["ids"], batch["ids"])


def test_batch_size_must_split_over_hosts(stream):
    with pytest.raises(ValueError, match="does not split over 3 hosts"):
        chunk_batches(stream, 64, 4, pipeline.Shard(0, 3))
