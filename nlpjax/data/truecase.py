"""Truecasing as a tagging task: restore the capitals of lowercased text, one tag a character.

Every non-blank line of a corpus is one example: its input is the line lowercased
character by character, its tags say which characters were capitals (``upper``) and which
stay as they are (``keep``). A character whose lowercase is not one character (e.g. the
dotted ``İ``) is kept unchanged and tagged ``keep``, so input and tags have the line's
length. ``apply_tags`` inverts the mapping.
"""

from collections.abc import Callable, Sequence

import numpy as np

from nlpjax.data import labelled
from nlpjax.errors import DataError

TAGS = ("keep", "upper")
UPPER = TAGS.index("upper")


def _lower(char: str) -> str:
    low = char.lower()
    return low if len(low) == 1 else char


def lowercase(line: str) -> str:
    """``line`` lowercased one character at a time (same length)."""
    return "".join(_lower(c) for c in line)


def tags(line: str) -> np.ndarray:
    """(len(line),) int32: ``UPPER`` where the character is a capital the lowercasing
    changed, else 0 (``keep``)."""
    return np.array([UPPER if _lower(c) != c else 0 for c in line], np.int32)


def apply_tags(lower: str, tag_ids: Sequence[int]) -> str:
    """The text with every character tagged ``upper`` capitalised."""
    return "".join(c.upper() if t == UPPER else c for c, t in zip(lower, tag_ids, strict=True))


def lines(documents: Sequence[str]) -> list[str]:
    """The non-blank lines of the documents (trailing spaces removed), in order."""
    return [line.rstrip() for doc in documents for line in doc.split("\n") if line.strip()]


def tag_arrays(
    texts: Sequence[str],
    encode: Callable[[str], np.ndarray],
    max_length: int,
    overflow: str = "error",
    where: str = "",
) -> dict[str, np.ndarray]:
    """Right-padded ``inputs`` (lowercased lines as ids), ``inputs_mask`` and tag
    ``labels``, all (N, max_length). A line over ``max_length`` characters is an error
    (``overflow="error"``) or keeps its first ``max_length`` (``truncate``, count logged),
    as ``labelled.classification_arrays``."""
    if not texts:
        raise DataError(f"{where}: no non-blank lines to tag")
    examples = [{"text": lowercase(t), "label": "x"} for t in texts]
    arrays, _ = labelled.classification_arrays(
        examples, encode, ("x",), max_length, overflow, where=where
    )
    tag_rows = np.zeros(arrays["inputs"].shape, np.int32)
    for i, text in enumerate(texts):
        row = tags(text)[:max_length]
        tag_rows[i, : len(row)] = row
    return {"inputs": arrays["inputs"], "inputs_mask": arrays["inputs_mask"], "labels": tag_rows}
