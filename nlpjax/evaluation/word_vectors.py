"""Intrinsic evaluation of word vectors: nearest neighbours, word similarity, analogies.

Follows gensim's ``KeyedVectors.evaluate_word_pairs`` (Spearman against human scores,
e.g. WordSim-353, SimLex-999) and ``evaluate_word_analogies`` (Mikolov et al. 2013,
https://arxiv.org/abs/1301.3781, ``questions-words.txt``), including their choices: words
are matched case-insensitively to the most frequent casing among the ``restrict_vocab``
most frequent words, questions or pairs with a word outside that set are left out and
counted, and an analogy's answer is the best word other than its three question words.
3CosMul is Levy and Goldberg 2014 (https://aclanthology.org/W14-1618). Pure numpy.
"""

import dataclasses
import functools
from pathlib import Path

import numpy as np
from jaxtyping import Float

SIMILARITY_RESTRICT = 300_000  # gensim's evaluate_word_pairs default
ANALOGY_RESTRICT = 30_000  # gensim's evaluate_word_analogies default
ANALOGY_METHODS = ("add", "mul")


@dataclasses.dataclass(frozen=True)
class WordVectors:
    """Words (most frequent first) and their vectors, one row per word."""

    words: list[str]
    vectors: Float[np.ndarray, "W E"]

    def __post_init__(self):
        if len(self.words) != len(self.vectors):
            raise ValueError(f"{len(self.words)} words but {len(self.vectors)} vectors")

    def unit(self, limit: int | None = None) -> np.ndarray:
        """The first ``limit`` vectors scaled to unit length (zero vectors stay zero)."""
        rows = np.asarray(self.vectors[:limit], np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.maximum(norms, 1e-12)

    def lookup(self, limit: int | None = None) -> dict[str, int]:
        """Upper-cased word -> row, among the first ``limit`` words; the most frequent
        casing wins (gensim's ``case_insensitive=True``)."""
        index: dict[str, int] = {}
        for row, word in enumerate(self.words[:limit]):
            index.setdefault(word.upper(), row)
        return index


def nearest_neighbors(
    wv: WordVectors, word: str, k: int = 10, restrict: int | None = None
) -> list[tuple[str, float]]:
    """The ``k`` words with the highest cosine to ``word`` (itself excluded).

    Raises:
      KeyError: ``word`` is not in the vocabulary (exact match first, then any casing).
    """
    exact = {w: i for i, w in enumerate(wv.words)}
    row = exact.get(word, wv.lookup().get(word.upper()))
    if row is None:
        raise KeyError(f"{word!r} is not in the vocabulary ({len(wv.words)} words)")
    unit = wv.unit(restrict)
    query = wv.unit()[row]
    cosines = unit @ query
    if row < len(cosines):
        cosines[row] = -np.inf
    top = np.argsort(-cosines, kind="stable")[:k]
    return [(wv.words[i], float(cosines[i])) for i in top]


# -- reading the evaluation files -------------------------------------------------------


def read_similarity_pairs(path: str | Path) -> tuple[list[tuple[str, str, float]], int]:
    """(word1, word2, human score) per line of a tab- or space-separated file, and how
    many lines were malformed (skipped). Lines starting with ``#`` are comments."""
    pairs, skipped = [], 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        try:
            if len(fields) != 3:
                raise ValueError(line)
            score = float(fields[2])
            if not np.isfinite(score):
                raise ValueError(line)
        except ValueError:
            skipped += 1
            continue
        pairs.append((fields[0].strip(), fields[1].strip(), score))
    return pairs, skipped


def read_analogies(path: str | Path) -> tuple[dict[str, list[tuple[str, ...]]], int]:
    """Sections (``: name`` lines) of 4-word questions ``a b c d`` (a:b = c:d), and how
    many lines were malformed (skipped, e.g. a question before any section). A file is
    parsed once while it is unchanged (a run evaluates at every ``eval.every``)."""
    stat = Path(path).stat()
    sections, skipped = _parse_analogies(str(path), stat.st_mtime_ns, stat.st_size)
    return {name: list(questions) for name, questions in sections.items()}, skipped


@functools.lru_cache(maxsize=8)
def _parse_analogies(path: str, _mtime_ns: int, _size: int):
    sections: dict[str, list[tuple[str, ...]]] = {}
    current, skipped = None, 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        if line.startswith(":"):
            current = line[1:].strip()
            sections.setdefault(current, [])
            continue
        words = tuple(line.split())
        if current is None or len(words) != 4:
            skipped += 1
            continue
        sections[current].append(words)
    return sections, skipped


# -- similarity -------------------------------------------------------------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's of the average ranks); nan if undefined."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def word_similarity(
    wv: WordVectors, path: str | Path, restrict: int = SIMILARITY_RESTRICT
) -> dict[str, float]:
    """Spearman between cosine similarities and human scores, gensim's way.

    Returns:
      ``spearman``, ``pairs`` (in the file), ``evaluated`` (both words known),
      ``coverage`` (evaluated / pairs), ``oov_pairs`` and ``skipped_lines`` (malformed).
    """
    pairs, skipped = read_similarity_pairs(path)
    lookup, unit = wv.lookup(restrict), wv.unit(restrict)
    found = [(lookup.get(a.upper()), lookup.get(b.upper()), s) for a, b, s in pairs]
    known = [(i, j, s) for i, j, s in found if i is not None and j is not None]
    rho = float("nan")
    if len(known) >= 2:
        rows_a, rows_b, human = (np.array(column) for column in zip(*known, strict=True))
        rho = spearman(np.sum(unit[rows_a] * unit[rows_b], 1), human)
    return {
        "spearman": rho,
        "pairs": len(pairs),
        "evaluated": len(known),
        "coverage": len(known) / max(len(pairs), 1),
        "oov_pairs": len(pairs) - len(known),
        "skipped_lines": skipped,
    }


# -- analogies --------------------------------------------------------------------------


def analogy_scores(
    unit_RE: np.ndarray, a_QE: np.ndarray, b_QE: np.ndarray, c_QE: np.ndarray, method: str
) -> np.ndarray:
    """Scores (Q, R) of every candidate for a:b = c:?.

    "add" (3CosAdd): cos(x, b) - cos(x, a) + cos(x, c). "mul" (3CosMul): cosines mapped
    to [0, 1], cos'(x, b) * cos'(x, c) / (cos'(x, a) + 1e-6) (Levy and Goldberg, with
    gensim's ``most_similar_cosmul`` epsilon).
    """
    if method == "add":  # cos(x, b) - cos(x, a) + cos(x, c) as one product
        return (b_QE - a_QE + c_QE) @ unit_RE.T
    cos_a, cos_b, cos_c = (q @ unit_RE.T for q in (a_QE, b_QE, c_QE))
    if method == "mul":
        shift = [(1.0 + cos) / 2.0 for cos in (cos_a, cos_b, cos_c)]
        return shift[1] * shift[2] / (shift[0] + 1e-6)
    raise ValueError(f"analogy method must be one of {ANALOGY_METHODS}, not {method!r}")


def _answer_questions(
    unit: np.ndarray, canonical_R: np.ndarray, rows_Q4: np.ndarray, method: str, chunk: int
) -> list:
    """Whether each question's best candidate is its d, up to case; candidates that are
    a, b or c in any casing are excluded (``canonical_R``: each row's most frequent casing)."""
    correct = []
    for start in range(0, len(rows_Q4), chunk):
        rows = rows_Q4[start : start + chunk]
        scores = analogy_scores(unit, *(unit[rows[:, k]] for k in range(3)), method)
        for k in range(3):
            scores[canonical_R[None, :] == rows[:, k : k + 1]] = -np.inf
        correct.extend(canonical_R[np.argmax(scores, axis=1)] == rows[:, 3])
    return correct


def word_analogies(
    wv: WordVectors,
    path: str | Path,
    restrict: int = ANALOGY_RESTRICT,
    method: str = "add",
    chunk: int = 1024,
) -> dict:
    """Analogy accuracy over questions whose four words are among the ``restrict`` most
    frequent (gensim's ``evaluate_word_analogies``; its "Total accuracy").

    Returns:
      ``accuracy`` (in [0, 1], over evaluated questions; nan if none), ``questions``,
      ``evaluated``, ``coverage``, ``oov_questions``, ``skipped_lines`` and ``sections``
      (name -> {"accuracy", "evaluated", "questions"}).
    """
    if method not in ANALOGY_METHODS:
        raise ValueError(f"analogy method must be one of {ANALOGY_METHODS}, not {method!r}")
    sections, skipped = read_analogies(path)
    lookup, unit = wv.lookup(restrict), wv.unit(restrict)
    canonical_R = np.array([lookup[w.upper()] for w in wv.words[:restrict]], np.int64)
    report, total, all_correct = {}, 0, []
    for name, questions in sections.items():
        rows = [[lookup.get(w.upper()) for w in q] for q in questions]
        rows = np.array([r for r in rows if None not in r], np.int64).reshape(-1, 4)
        correct = _answer_questions(unit, canonical_R, rows, method, chunk) if len(rows) else []
        total += len(questions)
        all_correct.extend(correct)
        accuracy = float(np.mean(correct)) if correct else float("nan")
        report[name] = {
            "accuracy": accuracy,
            "evaluated": len(correct),
            "questions": len(questions),
        }
    evaluated = len(all_correct)
    return {
        "accuracy": float(np.mean(all_correct)) if evaluated else float("nan"),
        "questions": total,
        "evaluated": evaluated,
        "coverage": evaluated / max(total, 1),
        "oov_questions": total - evaluated,
        "skipped_lines": skipped,
        "sections": report,
    }


# -- export -----------------------------------------------------------------------------


def save_word2vec(path: str | Path, wv: WordVectors, binary: bool = False) -> Path:
    """Writes the word2vec C format (``KeyedVectors.load_word2vec_format`` reads it):
    a ``count dim`` header line, then per word ``word v1 .. vE`` (text) or ``word `` and
    E little-endian float32 values followed by a newline (binary)."""
    path = Path(path)
    vectors = np.asarray(wv.vectors, "<f4")
    with path.open("wb") as out:
        out.write(f"{len(wv.words)} {vectors.shape[1]}\n".encode())
        for word, row in zip(wv.words, vectors, strict=True):
            if binary:
                out.write(word.encode() + b" " + row.tobytes() + b"\n")
            else:
                out.write((word + " " + " ".join(f"{x:.6g}" for x in row) + "\n").encode())
    return path
