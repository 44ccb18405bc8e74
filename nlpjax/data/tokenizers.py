"""Tokenizers, saved as one JSON file in the workdir so eval, generate and resume reuse them.

Kinds: ``char`` (the sorted characters of the training text, no special ids), ``byte``
(UTF-8 bytes), ``word`` (``word_tokenizer.py``) and ``sentencepiece``
(``spm_tokenizer.py``); the last three share the id layout of ``special_tokens.py``.
A tokenizer's ``fingerprint`` (a hash of its saved form) goes into every checkpoint's
data state; restoring with a different vocabulary is a ``VocabularyMismatchError``.
"""

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from etils import epath
from jaxtyping import Int

from nlpjax.data.special_tokens import NUM_SPECIAL, ExtraIds, SpecialIdsMixin, decode_with_specials
from nlpjax.data.spm_tokenizer import SentencePieceTokenizer
from nlpjax.data.word_tokenizer import WordTokenizer
from nlpjax.errors import DataError, VocabularyMismatchError

logger = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """What every tokenizer provides."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> Int[np.ndarray, " L"]: ...

    def decode(self, ids) -> str: ...

    def count_unknown(self, text: str) -> tuple[int, int]:
        """(tokens, tokens outside the vocabulary) of ``text``."""

    def non_text_ids(self) -> list[int]:
        """Ids that stand for no text (padding, reserved ids); samplers never emit them."""

    def to_dict(self) -> dict: ...

    def spec(self) -> dict:
        """The settings that built it, compared with a config's ``TokenizerConfig``."""


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

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        return cls(data["chars"])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def _ids(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        in_range = codes < len(self._lookup)
        return np.where(in_range, self._lookup[np.minimum(codes, len(self._lookup) - 1)], -1)

    def encode(self, text: str) -> Int[np.ndarray, " L"]:
        """str -> int32 ids; characters outside the vocabulary raise ValueError."""
        ids = self._ids(text)
        if (ids < 0).any():
            unknown = sorted({text[i] for i in np.flatnonzero(ids < 0)})
            raise ValueError(
                f"characters not in the vocabulary: {''.join(unknown)!r} "
                f"(the vocabulary has {self.vocab_size} characters from the training text)"
            )
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def count_unknown(self, text: str) -> tuple[int, int]:
        return len(text), int((self._ids(text) < 0).sum())

    def non_text_ids(self) -> list[int]:
        return []  # every id is a character

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}

    def spec(self) -> dict:
        return {"kind": self.kind}

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars


class ByteTokenizer(SpecialIdsMixin):
    """UTF-8 bytes as ids 4..259 after pad/eos/unk/bos, then the reserved extra ids."""

    kind = "byte"

    def __init__(self, num_registers: int = 4, num_sentinels: int = 0):
        self.extra = ExtraIds(NUM_SPECIAL + 256, num_registers, num_sentinels)

    @classmethod
    def from_text(cls, text: str = "") -> "ByteTokenizer":
        return cls()

    @classmethod
    def from_dict(cls, data: dict) -> "ByteTokenizer":
        return cls(data["num_registers"], data["num_sentinels"])

    def encode(self, text: str) -> Int[np.ndarray, " L"]:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + NUM_SPECIAL

    def decode(self, ids) -> str:
        def body(run):
            return bytes(i - NUM_SPECIAL for i in run).decode("utf-8", errors="replace")

        flat = np.asarray(ids).reshape(-1)
        return decode_with_specials(
            flat, lambda i: NUM_SPECIAL <= i < self.extra.base, body, self.special_piece
        )

    def count_unknown(self, text: str) -> tuple[int, int]:
        return len(text.encode("utf-8")), 0

    def to_dict(self) -> dict:
        e = self.extra
        return {
            "kind": self.kind,
            "num_registers": e.num_registers,
            "num_sentinels": e.num_sentinels,
        }

    def spec(self) -> dict:
        return self.to_dict()

    def __eq__(self, other) -> bool:
        return isinstance(other, ByteTokenizer) and other.extra == self.extra


TOKENIZERS: dict[str, Any] = {
    "char": CharTokenizer,
    "byte": ByteTokenizer,
    "word": WordTokenizer,
    "sentencepiece": SentencePieceTokenizer,
}


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """How to build a tokenizer from a training split (fields a task's data config copies).

    Attributes:
      kind: char | byte | word | sentencepiece.
      vocab_size: sentencepiece: pieces in the model, including pad/eos/unk/bos.
      model_type: sentencepiece: unigram | bpe.
      character_coverage: sentencepiece: fraction of characters covered by the model.
      max_train_texts: sentencepiece: texts (sentences) used for training, at most.
      min_count: word: words seen fewer times become <unk>.
      max_size: word: keep only the most frequent words (0 = no limit).
      lowercase: word: lowercase before splitting on whitespace.
      num_registers: byte/word/sentencepiece: register ids reserved after <pause>, <sink>.
      num_sentinels: byte/word/sentencepiece: span-corruption sentinels (T5 uses 100).
    """

    kind: str = "char"
    vocab_size: int = 8000
    model_type: str = "unigram"
    character_coverage: float = 1.0
    max_train_texts: int = 2_000_000
    min_count: int = 1
    max_size: int = 0
    lowercase: bool = False
    num_registers: int = 4
    num_sentinels: int = 0

    def __post_init__(self):
        if self.kind not in TOKENIZERS:
            raise ValueError(f"tokenizer kind must be one of {tuple(TOKENIZERS)}: {self.kind!r}")
        if self.model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be unigram or bpe, got {self.model_type!r}")
        if self.vocab_size <= NUM_SPECIAL:
            raise ValueError(f"vocab_size must be > {NUM_SPECIAL}, got {self.vocab_size}")
        if not 0 < self.character_coverage <= 1:
            raise ValueError(f"character_coverage must be in (0, 1], got {self.character_coverage}")
        if self.max_train_texts <= 0 or self.min_count < 1 or self.max_size < 0:
            raise ValueError("need max_train_texts > 0, min_count >= 1 and max_size >= 0")
        if self.num_registers < 0 or self.num_sentinels < 0:
            raise ValueError("num_registers and num_sentinels must be >= 0")

    def spec(self) -> dict:
        """The fields that matter for this kind (compared with a saved tokenizer's spec)."""
        fields = {
            "char": (),
            "byte": ("num_registers", "num_sentinels"),
            "word": ("min_count", "max_size", "lowercase", "num_registers", "num_sentinels"),
            "sentencepiece": ("vocab_size", "model_type", "num_registers", "num_sentinels"),
        }[self.kind]
        return {"kind": self.kind} | {f: getattr(self, f) for f in fields}


def build_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]):
    """Builds the tokenizer ``cfg`` describes from the training ``texts``."""
    if cfg.kind == "char":  # the separator joins documents, so it is always a character
        return CharTokenizer.from_text("".join(texts) + DOCUMENT_SEPARATOR)
    if cfg.kind == "byte":
        return ByteTokenizer(cfg.num_registers, cfg.num_sentinels)
    if cfg.kind == "word":
        return WordTokenizer.from_texts(
            texts, cfg.min_count, cfg.max_size, cfg.lowercase, cfg.num_registers, cfg.num_sentinels
        )
    return SentencePieceTokenizer.train(
        texts,
        vocab_size=cfg.vocab_size,
        model_type=cfg.model_type,
        character_coverage=cfg.character_coverage,
        max_train_texts=cfg.max_train_texts,
        num_registers=cfg.num_registers,
        num_sentinels=cfg.num_sentinels,
    )


# Joins documents for tokenizers without an EOS id (char); always in a char vocabulary.
DOCUMENT_SEPARATOR = "\n"


def join_documents(tokenizer, documents: Sequence[str]) -> Int[np.ndarray, " L"]:
    """The documents as one token stream, each boundary marked.

    Tokenizers with an EOS id put ``eos_id`` between documents (each document encoded on
    its own); ``char`` has no special ids and encodes the documents joined with
    ``DOCUMENT_SEPARATOR``. One document gives exactly its own encoding. A char vocabulary
    saved before the separator existed (without it) joins documents directly, as then.
    """
    eos_id = getattr(tokenizer, "eos_id", None)
    if eos_id is None:
        separator = DOCUMENT_SEPARATOR
        if len(documents) > 1 and tokenizer.count_unknown(separator)[1]:
            logger.warning(
                "the %s vocabulary has no %r (it was saved before documents were separated); "
                "joining documents without a separator, as when it was built",
                tokenizer.kind,
                separator,
            )
            separator = ""
        return tokenizer.encode(separator.join(documents))
    if hasattr(tokenizer, "encode_batch"):
        encoded = tokenizer.encode_batch(list(documents))
    else:
        encoded = [tokenizer.encode(doc) for doc in documents]
    eos = np.array([eos_id], np.int32)
    parts = [part for i, ids in enumerate(encoded) for part in ((eos, ids) if i else (ids,))]
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


def fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's saved form: equal iff the vocabularies are equal.

    Tokenizers whose saved form gained informational fields hash their ``identity()``
    (the earlier form) instead, so checkpoints written before still match.
    """
    identity = tokenizer.identity() if hasattr(tokenizer, "identity") else tokenizer.to_dict()
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def save_tokenizer(tokenizer, path: epath.PathLike) -> None:
    epath.Path(path).write_text(json.dumps(tokenizer.to_dict(), ensure_ascii=False))


def load_tokenizer(path: epath.PathLike, expected_fingerprint: str | None = None):
    """Reads a saved tokenizer; a fingerprint other than ``expected_fingerprint`` raises."""
    try:
        data = json.loads(epath.Path(path).read_text())
        kind = data["kind"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable tokenizer file ({e})") from None
    if kind not in TOKENIZERS:
        raise DataError(f"{path}: unknown tokenizer kind {kind!r}")
    tokenizer = TOKENIZERS[kind].from_dict(data)
    if expected_fingerprint is not None:
        check_fingerprint(tokenizer, expected_fingerprint, str(path))
    return tokenizer


def check_fingerprint(tokenizer, expected: str, where: str, expected_size: int = -1) -> None:
    """Raises ``VocabularyMismatchError`` naming ``where`` unless the fingerprints match."""
    got = fingerprint(tokenizer)
    if got != expected:
        size = f" ({expected_size} tokens)" if expected_size >= 0 else ""
        raise VocabularyMismatchError(
            f"{where}: vocabulary {got} ({tokenizer.kind}, {tokenizer.vocab_size} tokens) does "
            f"not match the checkpoint's vocabulary {expected}{size}. The tokenizer file was "
            "replaced or rebuilt; restore the original file or start a new --workdir."
        )


def check_config(tokenizer, cfg: TokenizerConfig, where: str) -> None:
    """Raises ``VocabularyMismatchError`` if a saved tokenizer was built with other settings."""
    saved, wanted = tokenizer.spec(), cfg.spec()
    if saved != wanted:
        diffs = [
            f"{k}: file has {saved.get(k, '<absent>')!r}, config has {wanted.get(k, '<absent>')!r}"
            for k in sorted(set(saved) | set(wanted))
            if saved.get(k) != wanted.get(k)
        ]
        raise VocabularyMismatchError(
            f"{where}: the saved tokenizer was built with other settings than the config's "
            f"({'; '.join(diffs)}); use the config that built it, or a new --workdir"
        )


def restore_or_build(
    path: epath.PathLike, cfg: TokenizerConfig, texts: Callable[[], Iterable[str]]
):
    """The tokenizer saved at ``path`` (checked against ``cfg``), else one built from texts()."""
    if epath.Path(path).is_file():
        tokenizer = load_tokenizer(path)
        check_config(tokenizer, cfg, str(path))
        return tokenizer
    return build_tokenizer(cfg, texts())
