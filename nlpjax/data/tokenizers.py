"""Tokenizers, saved as JSON in the workdir so eval, generate and resume reuse them."""

import json
from pathlib import Path

import numpy as np

from nlpjax.data.raw import DataError


class CharTokenizer:
    """Character-level vocabulary: the sorted set of characters in the training text."""

    kind = "char"

    def __init__(self, chars: str):
        if not chars:
            raise DataError("cannot build a character vocabulary from empty text")
        self.chars = chars
        codes = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)
        self._lookup = np.full(int(codes.max()) + 1, -1, dtype=np.int32)
        self._lookup[codes] = np.arange(len(chars), dtype=np.int32)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """str -> int32 ids; characters outside the vocabulary raise ValueError."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        in_range = codes < len(self._lookup)
        ids = np.where(in_range, self._lookup[np.minimum(codes, len(self._lookup) - 1)], -1)
        if (ids < 0).any():
            unknown = sorted({text[i] for i in np.flatnonzero(ids < 0)})
            raise ValueError(
                f"characters not in the vocabulary: {''.join(unknown)!r} "
                f"(the vocabulary has {self.vocab_size} characters from the training text)"
            )
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars


TOKENIZERS = {"char": CharTokenizer}


def save_tokenizer(tokenizer, path: Path) -> None:
    Path(path).write_text(json.dumps(tokenizer.to_dict(), ensure_ascii=False))


def load_tokenizer(path: Path):
    data = json.loads(Path(path).read_text())
    kind = data.pop("kind")
    if kind not in TOKENIZERS:
        raise DataError(f"{path}: unknown tokenizer kind {kind!r}")
    return TOKENIZERS[kind](**data)
