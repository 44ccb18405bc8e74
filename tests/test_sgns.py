"""word2vec on the device (models/sgns.py) and word-vector evaluation (evaluation/)."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.data import transforms
from nlpjax.errors import ConfigError
from nlpjax.evaluation import word_vectors as wvec
from nlpjax.models import sgns

KEY = jax.random.PRNGKey(0)
# Jitted once per shape: one compilation instead of one per operation.
WINDOW = jax.jit(sgns.dynamic_window, static_argnums=1)
SUBSAMPLE = jax.jit(sgns.subsample, static_argnums=4)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -- model and config -------------------------------------------------------------------


def test_tables_have_word2vec_init_and_logical_axes():
    variables = sgns.SGNS(sgns.SGNSConfig(vocab_size=300, embed_dim=40)).init(KEY)
    center, context = variables["params"]["center"], variables["params"]["context"]
    assert center.names == context.names == ("vocab", "embed")
    center, context = np.asarray(center.value), np.asarray(context.value)
    assert center.shape == context.shape == (300, 40)
    assert (context == 0).all()
    assert np.abs(center).max() <= 0.5 / 40 and center.std() > 0.25 / 40 / np.sqrt(3)
    assert abs(center.mean()) < 1e-3


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"objective": "glove"}, "model.objective"),
        ({"window": 0}, "model.window"),
        ({"negative_sharing": "all"}, "model.negative_sharing"),
        ({"objective": "cbow", "negative_sharing": "pair"}, "model.negative_sharing"),
    ],
)
def test_config_refuses_bad_values_naming_the_key(fields, key):
    with pytest.raises(ConfigError, match=key):
        sgns.SGNSConfig(**fields)


# -- the token stream on the device -----------------------------------------------------


def test_dynamic_window_counts_per_distance_match_word2vec():
    length, window = 20_000, 5
    mask_LC, position_LC = WINDOW(jnp.ones(length, bool), window, KEY)
    mask_LC, position_LC = np.asarray(mask_LC), np.asarray(position_LC)
    offsets = sgns.window_offsets(window)
    for k, offset in enumerate(offsets):
        p = (window - abs(offset) + 1) / window  # reach uniform in 1..window
        n = length - abs(offset)  # centers whose context is inside the chunk
        count = mask_LC[:, k].sum()
        assert abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p) + 1), (offset, count, n * p)
        np.testing.assert_array_equal(
            position_LC[mask_LC[:, k], k], np.flatnonzero(mask_LC[:, k]) + offset
        )
    # a center's window is symmetric: as many pairs on the left as on the right at each distance
    np.testing.assert_array_equal(
        mask_LC[window:-window, :window][:, ::-1], mask_LC[window:-window, window:]
    )
    # no pair leaves the chunk
    assert not mask_LC[0, :window].any() and not mask_LC[-1, window:].any()


def test_dynamic_window_respects_validity_and_segments_and_is_seeded():
    valid = jnp.arange(12) < 10
    segments = jnp.array([1] * 5 + [2] * 7)
    mask, position = WINDOW(valid, 3, KEY, segments)
    mask, position = np.asarray(mask), np.asarray(position)
    centers = np.repeat(np.arange(12)[:, None], 6, 1)
    assert (segments[position[mask]] == segments[centers[mask]]).all()
    assert position[mask].max() < 10 and centers[mask].max() < 10
    again, _ = WINDOW(valid, 3, KEY, segments)
    other, _ = WINDOW(jnp.ones(200, bool), 3, jax.random.PRNGKey(1))
    same_seed, _ = WINDOW(jnp.ones(200, bool), 3, jax.random.PRNGKey(1))
    assert (np.asarray(again) == mask).all() and (np.asarray(other) == np.asarray(same_seed)).all()


def test_subsampling_keep_rate_matches_word2vec_formula():
    counts = np.array([0, 0, 0, 0, 500_000, 100_000, 10_000, 1_000, 100], np.int64)
    keep_V = transforms.keep_probabilities(counts, 1e-3)
    freq = counts[4:] / counts.sum()
    np.testing.assert_allclose(
        keep_V[4:], np.minimum((np.sqrt(freq / 1e-3) + 1) * 1e-3 / freq, 1), rtol=1e-6
    )
    ids = np.tile(np.arange(9, dtype=np.int32), 4000)
    packed, valid, _, overflow = SUBSAMPLE(jnp.asarray(ids), jnp.asarray(keep_V), KEY)
    packed, valid = np.asarray(packed), np.asarray(valid)
    kept = packed[valid]
    rate = np.bincount(kept, minlength=9) / 4000
    assert (rate[:4] == 0).all()  # special ids (count 0) never kept
    np.testing.assert_allclose(rate[4:], keep_V[4:], atol=4 * np.sqrt(0.25 / 4000))
    assert (packed[~valid] == 0).all() and valid[: valid.sum()].all()  # survivors packed left
    assert int(overflow) == 0


def test_subsampling_keeps_order_and_segments():
    ids = jnp.arange(4, 104, dtype=jnp.int32)
    segments = jnp.repeat(jnp.arange(1, 11), 10)
    keep_V = jnp.full(104, 0.5)
    packed, valid, packed_segments, _ = SUBSAMPLE(ids, keep_V, KEY, segments)
    n = int(valid.sum())
    assert 20 < n < 80
    kept = np.asarray(packed[:n])
    assert (np.diff(kept) > 0).all()  # order preserved
    np.testing.assert_array_equal(np.asarray(packed_segments[:n]), (kept - 4) // 10 + 1)


def test_subsampling_into_a_capacity_counts_the_overflow():
    counts = np.r_[np.zeros(4), np.full(20, 1000.0)]
    keep_V = np.r_[np.zeros(4), np.full(20, 0.5)].astype(np.float32)
    capacity = sgns.kept_capacity(keep_V, counts, 2000)
    assert 1000 < capacity < 1300  # 1000 expected survivors, with a margin
    ids = jnp.asarray(np.tile(np.arange(4, 24, dtype=np.int32), 100))
    full, valid_full, _, _ = SUBSAMPLE(ids, jnp.asarray(keep_V), KEY, None, None)
    packed, valid, _, overflow = SUBSAMPLE(ids, jnp.asarray(keep_V), KEY, None, capacity)
    assert packed.shape == (capacity,) and int(overflow) == 0
    np.testing.assert_array_equal(packed, full[:capacity])
    assert int(valid.sum()) == int(valid_full.sum())
    small, valid_small, _, overflow = SUBSAMPLE(ids, jnp.asarray(keep_V), KEY, None, 100)
    assert int(overflow) == int(valid_full.sum()) - 100 and bool(valid_small.all())
    np.testing.assert_array_equal(small, full[:100])


# -- negatives --------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["key", "bits"])
def test_negative_sampler_matches_unigram_to_the_075_chi_square(source):
    counts = np.r_[np.zeros(4), 1000.0 / np.arange(1, 61) ** 1.1, 0.0]  # Zipf, zeros at ends
    accept, alias = sgns.negative_table(counts, 0.75)
    expected = counts**0.75 / (counts**0.75).sum()
    implied = accept / len(counts)
    np.add.at(implied, alias, (1 - accept) / len(counts))
    np.testing.assert_allclose(implied, expected, atol=1e-7)
    n = 400_000
    if source == "key":
        sample = jax.jit(sgns.sample_negatives, static_argnums=3)
        draws = sample(KEY, jnp.asarray(accept), jnp.asarray(alias), (n // 8, 8))
    else:  # one call's bits, as the benchmark's epoch dispatch draws them
        bits = jax.random.bits(KEY, (2, n // 8, 8), jnp.uint32)
        draws = jax.jit(sgns.negatives_from_bits)(bits, jnp.asarray(accept), jnp.asarray(alias))
    observed = np.bincount(np.asarray(draws).ravel(), minlength=len(counts))
    assert observed[counts == 0].sum() == 0
    support = counts > 0
    chi2 = (((observed - n * expected) ** 2)[support] / (n * expected[support])).sum()
    dof = support.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2  # mean dof, sd sqrt(2 dof)


def test_alias_table_refuses_bad_weights():
    with pytest.raises(ValueError, match="positive weight"):
        sgns.alias_table(np.zeros(5))
    with pytest.raises(ValueError, match="non-negative"):
        sgns.alias_table(np.array([1.0, -1.0]))


# -- losses against numpy references ----------------------------------------------------

L, E, W, N = 14, 6, 3, 4


@pytest.fixture(scope="module")
def chunk():
    rng = np.random.default_rng(0)
    mask, _ = WINDOW(jnp.arange(L) < L - 2, W, KEY)
    return {
        "center": rng.normal(size=(L, E)).astype(np.float32) * 0.5,
        "context": rng.normal(size=(L, E)).astype(np.float32) * 0.5,
        "mask": np.asarray(mask),
        "neg": {
            "pair": rng.normal(size=(L, 2 * W, N, E)).astype(np.float32) * 0.5,
            "center": rng.normal(size=(L, N, E)).astype(np.float32) * 0.5,
            "batch": rng.normal(size=(N, E)).astype(np.float32) * 0.5,
            "block": rng.normal(size=(-(-L // (2 * W)), N, E)).astype(np.float32) * 0.5,
        },
    }


def _negatives_for(neg, sharing, i, k):
    return {
        "pair": lambda: neg[i, k],
        "center": lambda: neg[i],
        "block": lambda: neg[i // -(-L // len(neg))],  # groups of ceil(L / K) centers
        "batch": lambda: neg,
    }[sharing]()


def _skipgram_reference(chunk, sharing, scale=1.0):
    """Loop over explicit pairs: loss and analytic gradients (word2vec's update rule);
    each negative term weighted ``scale``."""
    v, u, neg = chunk["center"], chunk["context"], chunk["neg"][sharing]
    grads = [np.zeros_like(v), np.zeros_like(u), np.zeros_like(neg)]
    loss = 0.0
    for i, k in zip(*np.nonzero(chunk["mask"]), strict=True):
        j = i + sgns.window_offsets(W)[k]
        s = v[i] @ u[j]
        loss -= np.log(_sigmoid(s))
        grads[0][i] -= (1 - _sigmoid(s)) * u[j]
        grads[1][j] -= (1 - _sigmoid(s)) * v[i]
        negs = _negatives_for(neg, sharing, i, k)
        for n_index, u_n in enumerate(negs):
            t = v[i] @ u_n
            loss -= scale * np.log(_sigmoid(-t))
            grads[0][i] += scale * _sigmoid(t) * u_n
            g = scale * _sigmoid(t) * v[i]
            if sharing == "pair":
                grads[2][i, k, n_index] += g
            elif sharing == "center":
                grads[2][i, n_index] += g
            elif sharing == "block":
                grads[2][i // -(-L // len(neg)), n_index] += g
            else:
                grads[2][n_index] += g
    return loss, grads


@pytest.mark.parametrize("length, window", [(14, 3), (17, 2), (5, 4), (1, 1)])
def test_positive_scores_equal_explicit_dot_products(length, window):
    rng = np.random.default_rng(4)
    v, u = (rng.normal(size=(length, E)).astype(np.float32) for _ in range(2))
    scores = np.asarray(jax.jit(sgns.positive_scores, static_argnums=2)(v, u, window))
    assert scores.shape == (length, 2 * window)
    for i in range(length):
        for k, offset in enumerate(sgns.window_offsets(window)):
            j = i + offset
            want = v[i] @ u[j] if 0 <= j < length else 0.0
            assert scores[i, k] == pytest.approx(want, abs=1e-4), (i, offset)


@pytest.mark.parametrize(
    "sharing, num_negatives",
    [("pair", None), ("center", None), ("block", None), ("batch", None), ("batch", 2)],
)
def test_skipgram_ns_loss_and_gradients_equal_numpy_reference(chunk, sharing, num_negatives):
    def loss_fn(v, u, neg):
        mask = jnp.asarray(chunk["mask"])
        return sgns.skipgram_ns_loss(v, u, neg, mask, W, sharing, num_negatives)

    args = (chunk["center"], chunk["context"], chunk["neg"][sharing])
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True))
    (loss, pairs), grads = value_and_grad(*args)
    scale = 1.0 if num_negatives is None else num_negatives / N  # N / D of batch sharing
    ref_loss, ref_grads = _skipgram_reference(chunk, sharing, scale)
    assert int(pairs) == chunk["mask"].sum() > 0
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_softplus_and_its_gradient_are_stable_and_exact():
    x = jnp.array([-200.0, -30.0, -1.5, 0.0, 0.7, 25.0, 200.0])
    value, grad = jax.value_and_grad(lambda x: jnp.sum(sgns.softplus(x) * jnp.arange(7.0)))(x)
    want = jax.value_and_grad(lambda x: jnp.sum(jax.nn.softplus(x) * jnp.arange(7.0)))(x)
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(float(value), float(want[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want[1]), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("length, window", [(37, 3), (40, 5), (3, 2)])
def test_blocked_pair_mask_holds_the_same_pairs_and_loss(length, window):
    rng = np.random.default_rng(length)
    valid = jnp.asarray(rng.random(length) < 0.8)
    reach = jnp.asarray(rng.integers(1, window + 1, length).astype(np.int32))
    segments = jnp.asarray(np.sort(rng.integers(1, 4, length)).astype(np.int32))
    mask_LC, _ = jax.jit(sgns.window_pairs, static_argnums=2)(valid, reach, window, segments)
    blocked = jax.jit(sgns.window_pairs_blocked, static_argnums=2)(valid, reach, window, segments)
    assert blocked.shape == (-(-length // (2 * window)), 2 * window, 4 * window)
    np.testing.assert_array_equal(
        np.asarray(blocked), np.asarray(sgns._blocked_mask(mask_LC, window))
    )
    v, u = (jnp.asarray(rng.normal(size=(length, E)).astype(np.float32)) for _ in range(2))
    neg = jnp.asarray(rng.normal(size=(N, E)).astype(np.float32))

    def loss(mask):
        def f(*rows):
            return sgns.skipgram_ns_loss(*rows, mask, window, "batch", 5)

        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(v, u, neg)

    (want, pairs_want), grads_want = loss(mask_LC)
    (got, pairs_got), grads_got = loss(blocked)
    assert float(pairs_got) == float(pairs_want) == float(np.asarray(mask_LC).sum())
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    for g, w in zip(grads_got, grads_want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sharing", ["center", "block", "batch"])
def test_cbow_ns_loss_equals_numpy_reference(chunk, sharing):
    v, u, neg, mask = chunk["center"], chunk["context"], chunk["neg"][sharing], chunk["mask"]
    cbow = jax.jit(sgns.cbow_ns_loss, static_argnums=(4, 5))
    loss, examples = cbow(v, u, neg, jnp.asarray(mask), W, sharing)
    ref, count = 0.0, 0
    for i in range(L):
        js = i + sgns.window_offsets(W)[mask[i]]
        if len(js) == 0:
            continue
        h = v[js].mean(0)
        count += 1
        ref -= np.log(_sigmoid(h @ u[i]))
        ref -= sum(np.log(_sigmoid(-(h @ u_n))) for u_n in _negatives_for(neg, sharing, i, 0))
    assert int(examples) == count
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_softmax_skipgram_loss_equals_numpy_reference(chunk):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(9, E)).astype(np.float32)
    ids = rng.integers(0, 9, L).astype(np.int32)
    mask, position = WINDOW(jnp.ones(L, bool), W, KEY)
    loss, pairs = jax.jit(sgns.skipgram_softmax_loss)(chunk["center"], table, ids, mask, position)
    ref = 0.0
    for i, k in zip(*np.nonzero(np.asarray(mask)), strict=True):
        logits = table @ chunk["center"][i]
        logp = logits - np.log(np.exp(logits).sum())
        ref -= logp[ids[i + sgns.window_offsets(W)[k]]]
    assert int(pairs) == int(np.asarray(mask).sum())
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


# -- sparse updates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tables():
    """A 12-word vocabulary and a 30-token chunk with repeated ids."""
    rng = np.random.default_rng(2)
    center = jnp.asarray(rng.normal(size=(12, E)).astype(np.float32) * 0.3)
    context = jnp.asarray(rng.normal(size=(12, E)).astype(np.float32) * 0.3)
    ids = jnp.asarray(rng.integers(4, 12, 30).astype(np.int32))
    negatives = jnp.asarray(rng.integers(4, 12, (30, N)).astype(np.int32))
    mask, _ = WINDOW(jnp.ones(30, bool), W, KEY)
    return center, context, ids, negatives, mask


def _dense_loss(tables, ids, negatives, mask):
    center, context = tables
    return sgns.skipgram_ns_loss(center[ids], context[ids], context[negatives], mask, W)[0]


def _row_grads(center, context, ids, negatives, mask):
    """Gradients with respect to the gathered rows (what the sparse path computes)."""
    rows = (center[ids], context[ids], context[negatives])

    def loss(v, u, neg):
        return sgns.skipgram_ns_loss(v, u, neg, mask, W)[0]

    return jax.grad(loss, argnums=(0, 1, 2))(*rows)


@jax.jit
def _sparse_and_dense_steps(center, context, ids, negatives, mask, lr):
    dense = jax.grad(_dense_loss)((center, context), ids, negatives, mask)
    g_v, g_u, g_neg = _row_grads(center, context, ids, negatives, mask)
    new_center = sgns.sparse_sgd(center, ids, g_v, lr)
    new_context = sgns.sparse_sgd(sgns.sparse_sgd(context, ids, g_u, lr), negatives, g_neg, lr)
    return dense, new_center, new_context


def test_sparse_sgd_equals_dense_gradient_step(tiny_tables):
    center, context, ids, negatives, mask = tiny_tables
    lr = 0.05
    dense, new_center, new_context = _sparse_and_dense_steps(
        center, context, ids, negatives, mask, lr
    )
    np.testing.assert_allclose(new_center, center - lr * dense[0], atol=1e-6)
    np.testing.assert_allclose(new_context, context - lr * dense[1], atol=1e-6)
    untouched = np.setdiff1d(np.arange(12), np.asarray(ids))
    np.testing.assert_array_equal(new_center[untouched], center[untouched])


def test_sparse_adagrad_equals_dense_rowwise_adagrad(tiny_tables):
    center, _, ids, _, _ = tiny_tables
    rng = np.random.default_rng(3)
    grads = jnp.asarray(rng.normal(size=(30, E)).astype(np.float32))
    accum = jnp.asarray(rng.uniform(0.1, 1.0, 12).astype(np.float32))
    table, new_accum = jax.jit(sgns.sparse_adagrad)(center, accum, ids, grads, 0.1)
    dense_g = np.zeros((12, E), np.float32)  # per row: summed gradient, summed mean squares
    dense_sq = np.zeros(12, np.float32)
    np.add.at(dense_g, np.asarray(ids), np.asarray(grads))
    np.add.at(dense_sq, np.asarray(ids), (np.asarray(grads) ** 2).mean(1))
    want_accum = np.asarray(accum) + dense_sq
    want = np.asarray(center) - 0.1 * dense_g / np.sqrt(want_accum + 1e-8)[:, None]
    np.testing.assert_allclose(new_accum, want_accum, rtol=1e-6)
    np.testing.assert_allclose(table, want, atol=1e-6)
    untouched = np.setdiff1d(np.arange(12), np.asarray(ids))
    np.testing.assert_array_equal(table[untouched], center[untouched])


@pytest.mark.parametrize("sharing", sgns.NEGATIVE_SHARING)
def test_row_uses_count_the_pair_terms_reading_each_row(chunk, sharing):
    mask = chunk["mask"]
    negatives_shape = chunk["neg"][sharing].shape[:-1]
    fn = jax.jit(sgns.row_uses, static_argnums=(1, 2, 3, 4))
    center, context, negative = fn(jnp.asarray(mask), W, negatives_shape, sharing, 5)
    want_center, want_context = np.zeros(L), np.zeros(L)
    want_negative = np.zeros(negatives_shape)
    draws = negatives_shape[-1]
    for i, k in zip(*np.nonzero(mask), strict=True):
        want_center[i] += 1 + 5
        want_context[i + sgns.window_offsets(W)[k]] += 1
        if sharing == "pair":
            want_negative[i, k] += 1
        elif sharing == "center":
            want_negative[i] += 1
        elif sharing == "block":
            want_negative[i // -(-L // negatives_shape[0])] += 1
        else:
            want_negative += 5 / draws
    np.testing.assert_allclose(center, want_center)
    np.testing.assert_allclose(context, want_context)
    np.testing.assert_allclose(negative, want_negative, rtol=1e-6)


def test_capped_sgd_scales_each_rows_summed_step(tiny_tables):
    center, _, ids, _, _ = tiny_tables
    rng = np.random.default_rng(5)
    grads = rng.normal(size=(30, E)).astype(np.float32)
    uses = rng.uniform(1.0, 20.0, 30).astype(np.float32)
    scratch = jnp.zeros(12)
    fn = jax.jit(sgns.sparse_sgd_capped)
    table, scratch_after = fn(
        center, scratch, ids, jnp.asarray(grads), jnp.asarray(uses), 0.1, 25.0
    )
    total_g, total_uses = np.zeros((12, E), np.float32), np.zeros(12, np.float32)
    np.add.at(total_g, np.asarray(ids), grads)
    np.add.at(total_uses, np.asarray(ids), uses)
    scale = np.minimum(1.0, 25.0 / np.maximum(total_uses, 1e-6))
    np.testing.assert_allclose(
        table, np.asarray(center) - 0.1 * scale[:, None] * total_g, atol=1e-5
    )
    assert (np.asarray(scratch_after) == 0).all()
    assert (scale < 1).any() and (scale[total_uses > 0] == 1).any()  # both regimes tested


def test_linear_lr_decays_from_0025_to_00001():
    schedule = sgns.linear_lr(100)
    assert float(schedule(0)) == pytest.approx(0.025)
    assert float(schedule(50)) == pytest.approx((0.025 + 0.0001) / 2)
    assert float(schedule(100)) == pytest.approx(0.0001)
    assert float(schedule(1000)) == pytest.approx(0.0001)


# -- evaluation -------------------------------------------------------------------------


@pytest.fixture
def toy_vectors():
    """king - man + woman = queen exactly; Paris/France, Rome/Italy likewise."""
    base = {
        "the": [0, 0, 0, 0, 0, 1.0],
        "man": [1.0, 0, 0, 0, 0, 0.1],
        "woman": [1.0, 1.0, 0, 0, 0, 0.1],
        "king": [1.0, 0, 1.0, 0, 0, 0.1],
        "queen": [1.0, 1.0, 1.0, 0, 0, 0.1],
        "France": [0, 0, 0, 1.0, 0, 0.2],
        "Paris": [0, 0, 0, 1.0, 1.0, 0.2],
        "Italy": [0, 0, 0, 1.0, 0.1, -0.5],
        "Rome": [0, 0, 0, 1.0, 1.1, -0.5],
        "King": [0, 0, 0, 0, 1.0, 0],  # a rarer casing: never the one looked up
        "rare": [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
    }
    return wvec.WordVectors(list(base), np.array(list(base.values()), np.float32))


def test_analogies_3cosadd_and_3cosmul_on_hand_made_vectors(toy_vectors, tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text(
        "this line comes before any section\n"
        ": family\nman woman king queen\nMan Woman King Queen\nman woman rare queen\n"
        ": capitals\nFrance Paris Italy Rome\nFrance Paris Italy Athens\nbroken line\n"
    )
    for method in wvec.ANALOGY_METHODS:
        report = wvec.word_analogies(toy_vectors, path, restrict=10, method=method)
        assert report["skipped_lines"] == 2
        assert report["questions"] == 5
        assert report["evaluated"] == 3  # "rare" is outside the top 10; Athens unknown
        assert report["oov_questions"] == 2 and report["coverage"] == pytest.approx(3 / 5)
        assert report["accuracy"] == 1.0, method
        assert report["sections"]["family"] == {"accuracy": 1.0, "evaluated": 2, "questions": 3}


def test_analogy_answer_excludes_the_question_words(toy_vectors, tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(": self\nman man king king\n")  # the answer would be "king" itself
    assert wvec.word_analogies(toy_vectors, path)["accuracy"] == 0.0


def test_analogy_file_is_parsed_once_while_unchanged(tmp_path):
    """A run evaluates at every eval.every: the questions file is parsed once, and again
    only when it changes; callers get their own lists."""
    import os

    path = tmp_path / "q.txt"
    path.write_text(": family\nman woman king queen\n")
    first, _ = wvec.read_analogies(path)
    first["family"].append(("x", "y", "z", "w"))  # the caller's copy, not the cache's
    hits = wvec._parse_analogies.cache_info().hits
    assert wvec.read_analogies(path)[0] == {"family": [("man", "woman", "king", "queen")]}
    assert wvec._parse_analogies.cache_info().hits == hits + 1
    path.write_text(": family\nman woman king queen\nking queen man woman\n")
    os.utime(path, ns=(1, 1))  # a new modification time even on coarse clocks
    assert len(wvec.read_analogies(path)[0]["family"]) == 2


def test_3cosadd_scores_are_the_sum_of_the_three_cosines(toy_vectors):
    unit = toy_vectors.unit()
    a, b, c = unit[[0, 2, 4]], unit[[1, 3, 5]], unit[[2, 0, 6]]
    want = b @ unit.T - a @ unit.T + c @ unit.T
    got = wvec.analogy_scores(unit, a, b, c, "add")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_word_similarity_spearman_with_coverage_and_bad_lines(toy_vectors, tmp_path):
    path = tmp_path / "sim.tsv"
    cos = lambda a, b: float(  # noqa: E731
        toy_vectors.unit()[toy_vectors.words.index(a)]
        @ toy_vectors.unit()[toy_vectors.words.index(b)]
    )
    pairs = [("king", "queen"), ("man", "woman"), ("France", "Italy"), ("king", "Paris")]
    order = np.argsort([cos(a, b) for a, b in pairs])
    human = np.empty(4)
    human[order] = [1.0, 2.0, 3.0, 4.0]  # same ranking as the cosines
    lines = [f"{a}\t{b}\t{h}" for (a, b), h in zip(pairs, human, strict=True)]
    path.write_text(
        "# comment\n" + "\n".join(lines) + "\nking\tunicorn\t5.0\nqueen\tking\n"
        "man\twoman\tnot-a-number\nMAN KING 2.5\n"
    )
    report = wvec.word_similarity(toy_vectors, path)
    assert report["skipped_lines"] == 2
    assert report["pairs"] == 6 and report["evaluated"] == 5 and report["oov_pairs"] == 1
    assert report["coverage"] == pytest.approx(5 / 6)
    want = wvec.spearman(
        np.r_[[cos(a, b) for a, b in pairs], cos("man", "king")], np.r_[human, 2.5]
    )
    assert report["spearman"] == pytest.approx(want)
    path.write_text("\n".join(lines) + "\n")
    assert wvec.word_similarity(toy_vectors, path)["spearman"] == pytest.approx(1.0)


def test_spearman_averages_tied_ranks():
    np.testing.assert_array_equal(
        wvec.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2]
    )
    # hand computation: ranks x (1, 2, 3.5, 3.5), y (1, 3, 2, 4)
    rx, ry = np.array([1, 2, 3.5, 3.5]), np.array([1, 3, 2, 4.0])
    want = np.corrcoef(rx, ry)[0, 1]
    assert wvec.spearman(np.array([1, 2, 5, 5.0]), np.array([10, 30, 20, 40.0])) == pytest.approx(
        want
    )


def test_nearest_neighbors_by_cosine(toy_vectors):
    neighbors = wvec.nearest_neighbors(toy_vectors, "king", k=2)
    assert [w for w, _ in neighbors] == ["queen", "man"]
    assert neighbors[0][1] == pytest.approx(toy_vectors.unit()[3] @ toy_vectors.unit()[4])
    with pytest.raises(KeyError, match="unicorn"):
        wvec.nearest_neighbors(toy_vectors, "unicorn")


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_export_format(toy_vectors, tmp_path, binary):
    path = wvec.save_word2vec(tmp_path / "vectors", toy_vectors, binary=binary)
    data = path.read_bytes()
    header, rest = data.split(b"\n", 1)
    assert header == b"11 6"
    words, rows = [], []
    for _ in range(11):
        word, rest = rest.split(b" ", 1)
        words.append(word.decode())
        if binary:
            rows.append(np.frombuffer(rest[:24], "<f4"))
            assert rest[24:25] == b"\n"
            rest = rest[25:]
        else:
            line, rest = rest.split(b"\n", 1)
            rows.append(np.array(line.split(), np.float32))
    assert rest == b"" and words == toy_vectors.words
    np.testing.assert_allclose(np.array(rows), toy_vectors.vectors, rtol=1e-5)


def test_the_shared_evaluation_files_parse_completely():
    word_eval = Path(os.environ["NLPJAX_DATA_DIR"]) / "word_eval"
    wordsim, skipped_wordsim = wvec.read_similarity_pairs(word_eval / "wordsim353.tsv")
    simlex, skipped_simlex = wvec.read_similarity_pairs(word_eval / "simlex999.txt")
    sections, skipped_analogies = wvec.read_analogies(word_eval / "questions-words.txt")
    assert (len(wordsim), len(simlex)) == (353, 999)
    assert len(sections) == 14 and sum(len(q) for q in sections.values()) == 19_544
    assert skipped_wordsim == skipped_simlex == skipped_analogies == 0
