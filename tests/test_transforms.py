"""Pure transforms: T5 span corruption, pause tokens, word2vec skip-gram pairs."""

import numpy as np
import pytest

from nlpjax.data import transforms
from nlpjax.data.word_tokenizer import WordTokenizer

SENTENCE = "Thank you for inviting me to your party last week."


def test_span_corruption_golden_example():
    tok = WordTokenizer.from_text(SENTENCE)
    tok = WordTokenizer(tok.words, tok.counts, num_sentinels=100)
    tokens = tok.encode(SENTENCE)
    noise = np.zeros(len(tokens), bool)
    noise[[2, 3, 8]] = True  # "for inviting", "last"
    sentinels = np.array([tok.sentinel_id(i) for i in range(100)])
    inputs, targets = transforms.span_corruption(tokens, noise, sentinels, tok.eos_id)
    assert tok.decode(inputs) == "Thank you <extra_id_0> me to your party <extra_id_1> week. </s>"
    assert tok.decode(targets) == "<extra_id_0> for inviting <extra_id_1> last <extra_id_2> </s>"
    top = tok.vocab_size - 1  # T5: <extra_id_0> is the last id, then counting down
    ids = dict(zip(tok.split(SENTENCE), tokens.tolist(), strict=True))
    assert inputs.tolist() == [
        ids["Thank"], ids["you"], top, ids["me"], ids["to"], ids["your"], ids["party"],
        top - 1, ids["week."], tok.eos_id,
    ]  # fmt: skip
    assert targets.tolist() == [
        top, ids["for"], ids["inviting"], top - 1, ids["last"], top - 2, tok.eos_id
    ]  # fmt: skip


def test_span_corruption_lengths_match_t5():
    assert transforms.span_corruption_lengths(512) == (568, 114)  # T5's C4 numbers
    raw, targets = transforms.span_corruption_lengths(128)
    rng = np.random.default_rng(0)
    mask = transforms.random_spans_noise_mask(raw, rng)
    inputs, tgt = transforms.span_corruption(np.arange(raw) + 10, mask, np.arange(100) + 1000, 1)
    assert len(inputs) == 128 and len(tgt) == targets


def test_noise_density_and_span_length_over_a_large_batch():
    rng = np.random.default_rng(0)
    masks = np.stack([transforms.random_spans_noise_mask(568, rng) for _ in range(2000)])
    starts = masks & ~np.concatenate([np.zeros((2000, 1), bool), masks[:, :-1]], axis=1)
    assert abs(masks.mean() - 0.15) <= 0.01
    assert abs(masks.sum() / starts.sum() - 3.0) <= 0.2
    # T5's structure: non-noise first, noise last, exact counts per sequence
    assert not masks[:, 0].any() and masks[:, -1].all()
    assert (masks.sum(1) == round(568 * 0.15)).all()
    # measured on the corrupted outputs too: one sentinel per span in the inputs
    tokens = np.arange(568) + 10
    inputs, _ = transforms.span_corruption(tokens, masks[0], np.arange(100) + 1000, 1)
    assert (inputs >= 1000).sum() == starts[0].sum()


def test_span_corruption_keeps_every_token_once():
    rng = np.random.default_rng(3)
    tokens = np.arange(200) + 10
    mask = transforms.random_spans_noise_mask(200, rng, 0.3, 2.0)
    sentinels = np.arange(100) + 1000
    inputs, targets = transforms.span_corruption(tokens, mask, sentinels, 1)
    # replace each sentinel in the inputs by the span that follows it in the targets
    spans, current = {}, None
    for t in targets[:-1].tolist():
        if t >= 1000:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    rebuilt = [x for t in inputs[:-1].tolist() for x in (spans[t] if t >= 1000 else [t])]
    assert rebuilt == tokens.tolist()
    with pytest.raises(ValueError, match="sentinel ids"):
        transforms.span_corruption(tokens, mask, sentinels[:2], 1)


def test_insert_pauses_keeps_length_order_and_segments():
    rng = np.random.default_rng(0)
    tokens = np.arange(1, 41, dtype=np.int32)
    segments = np.array([1] * 15 + [2] * 20 + [0] * 5, np.int32)
    out, seg = transforms.insert_pauses(tokens, 8, 99, rng, segments)
    assert out.shape == tokens.shape and seg.shape == segments.shape
    real = out[:35][out[:35] != 99]
    assert real.tolist() == list(range(1, len(real) + 1))  # original order, tail trimmed
    assert 0 < (out == 99).sum() <= 8
    np.testing.assert_array_equal(out[35:], tokens[35:])  # padding untouched
    assert (np.diff(seg[:35]) >= 0).all() and (seg[35:] == 0).all()
    # a pause belongs to the segment of the token after it
    for i in np.flatnonzero(out[:34] == 99):
        nxt = i + np.argmax(out[i:35] != 99)
        if out[nxt] != 99:
            assert seg[i] == seg[nxt]
    weights = transforms.pause_loss_weights(out, 99, seg)
    np.testing.assert_array_equal(weights, ((out != 99) & (seg > 0)).astype(np.float32))


def test_pauses_are_uniformly_placed():
    rng = np.random.default_rng(1)
    counts = np.zeros(20)
    for _ in range(4000):
        out, _ = transforms.insert_pauses(np.arange(1, 21), 2, 0, rng)
        counts += out == 0
    # every position gets a pause equally often (trimming takes them from the tail evenly)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_pause_appending_for_finetuning():
    prompt, answer = np.array([5, 6, 7]), np.array([8, 9])
    np.testing.assert_array_equal(transforms.append_pauses(prompt, 2, 50), [5, 6, 7, 50, 50])
    tokens, weights = transforms.pause_finetune_example(prompt, answer, 2, 50, eos_id=1)
    np.testing.assert_array_equal(tokens, [5, 6, 7, 50, 50, 8, 9, 1])
    np.testing.assert_array_equal(weights, [0, 0, 0, 0, 0, 1, 1, 1])


def test_segment_positions():
    seg = np.array([[1, 1, 2, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(
        transforms.segment_positions(seg), [[0, 1, 0, 1, 2, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7]]
    )


def test_dynamic_window_uses_distance_d_with_probability_w_minus_d_plus_1_over_w():
    rng = np.random.default_rng(0)
    n, window = 20000, 4
    centers, contexts = transforms.skipgram_pairs(np.arange(n), window, rng)
    distance = np.abs(contexts - centers)
    assert distance.min() == 1 and distance.max() == window
    for d in range(1, window + 1):
        expected = 2 * n * (window - d + 1) / window
        assert abs((distance == d).sum() / expected - 1) < 0.03


def test_skipgram_pairs_stay_inside_segments():
    rng = np.random.default_rng(0)
    ids = np.arange(10)
    seg = np.array([1, 1, 1, 2, 2, 2, 2, 3, 0, 0])
    centers, contexts = transforms.skipgram_pairs(ids, 5, rng, seg)
    assert len(centers) > 0
    assert (seg[centers] == seg[contexts]).all() and (seg[centers] > 0).all()
    assert not np.isin(centers, [7, 8, 9]).any()  # a one-word segment and padding: no pairs


def test_subsampling_follows_word2vec():
    counts = np.array([0, 0, 0, 0, 900_000, 90_000, 9_000, 1_000])  # 4 special ids first
    keep = transforms.keep_probabilities(counts, 1e-3)
    f = counts[4:] / counts.sum()
    np.testing.assert_allclose(keep[4:], np.minimum((np.sqrt(f / 1e-3) + 1) * 1e-3 / f, 1), 1e-6)
    assert (keep[:4] == 0).all() and keep[7] == 1.0 and keep[4] < 0.05
    rng = np.random.default_rng(0)
    ids = np.full(100_000, 4)
    assert abs(len(transforms.subsample(ids, keep, rng)) / 100_000 - keep[4]) < 0.005
    assert (transforms.keep_probabilities(counts, 0) == (counts > 0)).all()


def test_noise_distribution_is_unigram_to_the_three_quarters():
    dist = transforms.noise_distribution(np.array([0, 16, 1]))
    np.testing.assert_allclose(dist, [0, 8 / 9, 1 / 9], rtol=1e-6)
