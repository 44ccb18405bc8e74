"""nlpjax.analysis.word_vectors: PCA map, dynamic-window pair counts, shifted PMI."""

import numpy as np
import pytest

from nlpjax.analysis import word_vectors as wva


def test_window_pair_counts_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, 40)
    segments = np.repeat([1, 2, 3], [15, 5, 20])
    window = 3
    want = np.zeros((6, 6))
    for i in range(40):
        for j in range(40):
            d = abs(i - j)
            if 1 <= d <= window and segments[i] == segments[j]:
                want[ids[i], ids[j]] += (window - d + 1) / window
    got = wva.window_pair_counts(ids, segments, 6, window)
    np.testing.assert_allclose(got, want)
    assert got.sum() == pytest.approx(want.sum()) and np.allclose(got, got.T)


def test_shifted_pmi_and_perfect_agreement():
    pairs = np.array([[0.0, 4.0, 2.0], [4.0, 0.0, 1.0], [2.0, 1.0, 6.0]])
    noise = np.array([0.2, 0.3, 0.5])
    target = wva.shifted_pmi(pairs, noise, negatives=5)
    assert target[0, 0] == -np.inf
    assert target[0, 1] == pytest.approx(np.log(4.0 / (6.0 * 0.3)) - np.log(5))
    report = wva.pmi_agreement(2 * target + 1, target, pairs, min_pairs=1.0)
    assert report["pairs"] == 7
    assert report["pearson"] == pytest.approx(1.0) and report["spearman"] == pytest.approx(1.0)
    assert report["slope"] == pytest.approx(2.0) and report["intercept"] == pytest.approx(1.0)
    assert wva.pmi_agreement(target, target, pairs, min_pairs=3.0)["pairs"] == 3


def test_pca_2d_keeps_the_distances_of_points_in_a_plane(tmp_path):
    rng = np.random.default_rng(1)
    plane = rng.normal(size=(12, 2)) * [5.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(8, 2)))
    vectors = plane @ basis.T + 3.0  # an offset 2-D plane in 8-D
    points = wva.pca_2d(vectors)
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    want = np.linalg.norm(plane[:, None] - plane[None], axis=-1)
    np.testing.assert_allclose(dist, want, atol=1e-9)
    path = wva.plot_words_pca([f"w{i}" for i in range(12)], vectors, tmp_path / "pca.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
