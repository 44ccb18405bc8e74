"""Looking at trained word vectors: a 2-D PCA map of chosen words, and SGNS against PMI.

Levy and Goldberg 2014 (https://papers.nips.cc/paper/5477) show that skip-gram with k
negatives from a noise distribution P_n is, at its optimum, an implicit factorisation of
the shifted PMI matrix: u_o . v_c = PMI(c, o) - log k, with PMI(c, o) = log(#(c, o) /
(#(c) P_n(o))) over the training pairs. ``window_pair_counts`` gives the expected pair
counts of word2vec's dynamic window on a token stream and ``shifted_pmi`` the matrix, so
a trained model's scores can be set against it (``pmi_agreement``). Pure numpy and
matplotlib.
"""

import matplotlib
import numpy as np
from etils import epath
from jaxtyping import Float, Int

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nlpjax.analysis.curves import save_png  # noqa: E402


def pca_2d(vectors_WE: Float[np.ndarray, "W E"]) -> Float[np.ndarray, "W 2"]:
    """The rows projected on their two principal axes (centred; SVD)."""
    centred = np.asarray(vectors_WE, np.float64)
    centred = centred - centred.mean(0)
    _, _, axes_KE = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes_KE[:2].T


def plot_words_pca(
    words: list[str], vectors_WE: Float[np.ndarray, "W E"], output: epath.PathLike, title=""
) -> epath.Path:
    """A labelled scatter plot of ``words`` on the 2-D PCA of their vectors."""
    points = pca_2d(vectors_WE)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    ax.scatter(points[:, 0], points[:, 1], s=12)
    for word, (x, y) in zip(words, points, strict=True):
        ax.annotate(word, (x, y), fontsize=9, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.set_title(title or f"PCA of {len(words)} word vectors")
    ax.grid(alpha=0.3)
    return save_png(fig, output)


def window_pair_counts(
    ids_L: Int[np.ndarray, " L"],
    segments_L: Int[np.ndarray, " L"],
    vocab: int,
    window: int,
) -> Float[np.ndarray, "V V"]:
    """Expected (center, context) pair counts of word2vec's dynamic window over a stream.

    A context at distance d (1..window, same segment) is used with probability
    (window - d + 1) / window, so each occurrence adds that weight to count[c, o]. Dense
    (V, V): small vocabularies only.
    """
    ids, segments = np.asarray(ids_L, np.int64), np.asarray(segments_L)
    counts = np.zeros(vocab * vocab, np.float64)
    for distance in range(1, window + 1):
        weight = (window - distance + 1) / window
        same = segments[distance:] == segments[:-distance]
        left, right = ids[:-distance][same], ids[distance:][same]
        for center, context in ((left, right), (right, left)):
            counts += weight * np.bincount(center * vocab + context, minlength=vocab * vocab)
    return counts.reshape(vocab, vocab)


def shifted_pmi(
    pairs_VV: Float[np.ndarray, "V V"], noise_V: Float[np.ndarray, " V"], negatives: int
) -> Float[np.ndarray, "V V"]:
    """log(#(c, o) / (#(c) P_n(o))) - log k: the score SGNS's optimum gives a pair (-inf
    where the pair never occurs). ``noise_V`` is P_n, e.g. count^0.75 normalised."""
    per_center = pairs_VV.sum(1, keepdims=True)
    noise = np.asarray(noise_V, np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(pairs_VV) - np.log(per_center) - np.log(noise)
    return pmi - np.log(negatives)


def pmi_agreement(
    scores_VV: Float[np.ndarray, "V V"],
    target_VV: Float[np.ndarray, "V V"],
    pairs_VV: Float[np.ndarray, "V V"],
    min_pairs: float,
) -> dict:
    """Pearson and Spearman correlation of the model's u_o . v_c with the shifted PMI over
    the pairs seen at least ``min_pairs`` times (rarer pairs' PMI is mostly noise), the
    least-squares slope and intercept, and the mean difference."""
    from nlpjax.evaluation.word_vectors import spearman

    chosen = (pairs_VV >= min_pairs) & np.isfinite(target_VV)
    x, y = target_VV[chosen], scores_VV[chosen]
    slope, intercept = np.polyfit(x, y, 1) if len(x) > 1 else (float("nan"),) * 2
    return {
        "pairs": int(chosen.sum()),
        "pearson": float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 else float("nan"),
        "spearman": float(spearman(x, y)) if len(x) > 1 else float("nan"),
        "slope": float(slope),
        "intercept": float(intercept),
        "mean_score_minus_target": float(np.mean(y - x)) if len(x) else float("nan"),
    }


def plot_pmi_scatter(
    scores: Float[np.ndarray, " P"],
    targets: Float[np.ndarray, " P"],
    output: epath.PathLike,
    title: str = "",
) -> epath.Path:
    """u_o . v_c against PMI(c, o) - log k, one dot per pair, with the line y = x."""
    fig, ax = plt.subplots(figsize=(6.5, 6), dpi=120)
    ax.scatter(targets, scores, s=2, alpha=0.25, linewidths=0)
    low = float(min(np.min(targets), np.min(scores)))
    high = float(max(np.max(targets), np.max(scores)))
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="y = x (SGNS's optimum)")
    ax.set_xlabel("PMI(c, o) - log k")
    ax.set_ylabel("u_o . v_c (trained)")
    ax.set_title(title or "skip-gram scores against shifted PMI")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, output)
