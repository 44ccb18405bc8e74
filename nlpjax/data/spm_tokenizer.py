"""SentencePiece subwords, unigram or BPE (https://arxiv.org/abs/1808.06226), T5-style ids.

Trained in memory from a split's text; the model proto is stored inside the tokenizer's
JSON file (base64), so the workdir holds the exact vocabulary. Pieces 0..3 are
pad/eos/unk/bos (or, in T5's own models, pad/eos/unk and no bos: piece 3 is text);
the reserved ids (pause, sink, registers) and the span-corruption
sentinels follow the model's pieces, sentinels at the top like T5's ``extra_ids``.
"""

import base64
import io
import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import sentencepiece as spm
from jaxtyping import Int

from nlpjax.data.special_tokens import (
    BOS_ID,
    EOS_ID,
    NUM_SPECIAL,
    PAD_ID,
    UNK_ID,
    ExtraIds,
    SpecialIdsMixin,
    decode_with_specials,
)
from nlpjax.errors import DataError

_MAX_SENTENCE_BYTES = 1 << 14  # longer training lines are cut, not skipped


def _training_lines(texts: Iterable[str], limit: int) -> Iterator[str]:
    """Non-blank lines of ``texts`` (documents may be long), at most ``limit``."""
    lines = (
        line[: _MAX_SENTENCE_BYTES // 4]
        for text in texts
        for line in text.splitlines()
        if line.strip()
    )
    return itertools.islice(lines, limit)


class SentencePieceTokenizer(SpecialIdsMixin):
    """A SentencePiece model plus reserved and sentinel ids past its pieces."""

    kind = "sentencepiece"

    def __init__(
        self,
        model: bytes,
        vocab_size: int = 0,
        model_type: str = "unigram",
        num_registers: int = 4,
        num_sentinels: int = 0,
    ):
        self.model, self.requested_size, self.model_type = model, vocab_size, model_type
        self._sp = spm.SentencePieceProcessor(model_proto=model)
        ids = (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id(), self._sp.bos_id())
        if ids not in ((PAD_ID, EOS_ID, UNK_ID, BOS_ID), (PAD_ID, EOS_ID, UNK_ID, -1)):
            raise DataError(
                f"SentencePiece model has pad/eos/unk/bos ids {ids}, expected 0,1,2,3 "
                "(or 0,1,2 and no bos, as T5's spiece.model)"
            )
        # T5's models have no <s>: their piece 3 is text, and "bos" means nothing.
        self.first_text_id = NUM_SPECIAL if ids[3] == BOS_ID else BOS_ID
        self.extra = ExtraIds(self._sp.get_piece_size(), num_registers, num_sentinels)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        max_train_texts: int = 2_000_000,
        num_registers: int = 4,
        num_sentinels: int = 0,
    ) -> "SentencePieceTokenizer":
        """Trains on the non-blank lines of ``texts`` (a training split)."""
        lines = _training_lines(texts, max_train_texts)
        first = next(lines, None)
        if first is None:
            raise DataError("cannot train SentencePiece: the training text is empty")
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=itertools.chain([first], lines),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            hard_vocab_limit=False,  # small corpora get a smaller model instead of an error
            max_sentence_length=_MAX_SENTENCE_BYTES,
            minloglevel=2,
        )
        return cls(buffer.getvalue(), vocab_size, model_type, num_registers, num_sentinels)

    @classmethod
    def from_text(cls, text: str) -> "SentencePieceTokenizer":
        return cls.train([text])

    @classmethod
    def from_dict(cls, data: dict) -> "SentencePieceTokenizer":
        # Files written before ``requested_vocab_size`` existed kept the request in vocab_size.
        return cls(
            base64.b64decode(data["model"]),
            data.get("requested_vocab_size", data["vocab_size"]),
            data["model_type"],
            data["num_registers"],
            data["num_sentinels"],
        )

    @property
    def num_pieces(self) -> int:
        """Pieces in the SentencePiece model (ids below this are SentencePiece's)."""
        return self.extra.base

    def encode(self, text: str) -> Int[np.ndarray, " L"]:
        return np.asarray(self._sp.encode(text), np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, np.int32) for ids in self._sp.encode(texts)]

    def decode(self, ids) -> str:
        def body(run):
            return "".join(self._sp.id_to_piece(run)).replace("\u2581", " ")

        flat = np.asarray(ids).reshape(-1)
        text = decode_with_specials(
            flat, lambda i: self.first_text_id <= i < self.num_pieces, body, self.special_piece
        )
        return text.removeprefix(" ")

    def non_text_ids(self) -> list[int]:
        ids = super().non_text_ids()
        return ids if self.first_text_id == NUM_SPECIAL else [i for i in ids if i != BOS_ID]

    def count_unknown(self, text: str) -> tuple[int, int]:
        ids = self.encode(text)
        return len(ids), int((ids == UNK_ID).sum())

    def to_dict(self) -> dict:
        """The saved form: the model, what was built (ids, pieces) and what was asked for.

        ``vocab_size`` is the number of ids the model embeds (pieces + reserved +
        sentinels); a small corpus gives fewer pieces than ``requested_vocab_size``.
        """
        return {
            "kind": self.kind,
            "model": base64.b64encode(self.model).decode("ascii"),
            "vocab_size": self.vocab_size,
            "num_pieces": self.num_pieces,
            "requested_vocab_size": self.requested_size,
            "model_type": self.model_type,
            "num_registers": self.extra.num_registers,
            "num_sentinels": self.extra.num_sentinels,
        }

    def identity(self) -> dict:
        """What the fingerprint hashes: the saved form before it recorded the built sizes."""
        saved = self.to_dict()
        keys = ("kind", "model", "model_type", "num_registers", "num_sentinels")
        return {k: saved[k] for k in keys} | {"vocab_size": self.requested_size}

    def spec(self) -> dict:
        """The settings that built it (``vocab_size`` is the requested size, as in a config)."""
        keys = ("kind", "vocab_size", "model_type", "num_registers", "num_sentinels")
        identity = self.identity()
        return {k: identity[k] for k in keys}

    def __eq__(self, other) -> bool:
        return isinstance(other, SentencePieceTokenizer) and other.to_dict() == self.to_dict()
