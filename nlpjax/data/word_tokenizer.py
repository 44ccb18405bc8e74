"""Word vocabulary: whitespace-separated words with min_count, max_size and ``<unk>``.

The word counts are kept: word2vec (https://arxiv.org/abs/1310.4546) computes its
frequent-word subsampling and its unigram^0.75 noise distribution from them
(``transforms.keep_probabilities``, ``transforms.noise_distribution``).
"""

import collections
import itertools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from jaxtyping import Int

from nlpjax.data.special_tokens import NUM_SPECIAL, UNK_ID, ExtraIds, SpecialIdsMixin
from nlpjax.errors import DataError


class WordTokenizer(SpecialIdsMixin):
    """Words sorted by count (ties alphabetically) as ids 4.., after pad/eos/unk/bos.

    Attributes:
      words: the vocabulary words, most frequent first.
      counts: training-text count of each word (same order).
      unk_count: occurrences of the words left out (they encode as ``<unk>``).
    """

    kind = "word"

    def __init__(
        self,
        words: list[str],
        counts: list[int],
        unk_count: int = 0,
        lowercase: bool = False,
        num_registers: int = 4,
        num_sentinels: int = 0,
        min_count: int = 1,
        max_size: int = 0,
    ):
        if len(words) != len(counts):
            raise ValueError("words and counts must have the same length")
        self.words, self.counts, self.unk_count = list(words), [int(c) for c in counts], unk_count
        self.lowercase, self.min_count, self.max_size = lowercase, min_count, max_size
        self._index = {w: i + NUM_SPECIAL for i, w in enumerate(self.words)}
        self.extra = ExtraIds(NUM_SPECIAL + len(self.words), num_registers, num_sentinels)

    @classmethod
    def from_counts(
        cls,
        counter: Mapping[str, int],
        min_count: int = 1,
        max_size: int = 0,
        lowercase: bool = False,
        num_registers: int = 4,
        num_sentinels: int = 0,
    ) -> "WordTokenizer":
        """Keeps words seen >= ``min_count`` times, at most ``max_size`` (0: all) of them."""
        kept = sorted(((w, c) for w, c in counter.items() if c >= min_count), key=_by_count)
        if max_size > 0:
            kept = kept[:max_size]
        if not kept:
            raise DataError(
                f"empty word vocabulary: no word occurs min_count={min_count} times "
                f"(the text has {len(counter)} distinct words); is the corpus empty?"
            )
        unk = sum(counter.values()) - sum(c for _, c in kept)
        words, counts = zip(*kept, strict=True)
        extras = {"num_registers": num_registers, "num_sentinels": num_sentinels}
        return cls(
            list(words),
            list(counts),
            unk,
            lowercase,
            **extras,
            min_count=min_count,
            max_size=max_size,
        )

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        min_count: int = 1,
        max_size: int = 0,
        lowercase: bool = False,
        num_registers: int = 4,
        num_sentinels: int = 0,
    ) -> "WordTokenizer":
        counter: collections.Counter = collections.Counter()
        for text in texts:
            counter.update(text.lower().split() if lowercase else text.split())
        extras = {"num_registers": num_registers, "num_sentinels": num_sentinels}
        return cls.from_counts(counter, min_count, max_size, lowercase, **extras)

    @classmethod
    def from_text(cls, text: str) -> "WordTokenizer":
        return cls.from_texts([text])

    @classmethod
    def from_dict(cls, data: dict) -> "WordTokenizer":
        return cls(**{k: v for k, v in data.items() if k != "kind"})

    def split(self, text: str) -> list[str]:
        return (text.lower() if self.lowercase else text).split()

    def encode(self, text: str) -> Int[np.ndarray, " L"]:
        """Words -> ids; words outside the vocabulary become ``<unk>`` (id 2)."""
        words, get = self.split(text), self._index.get
        return np.fromiter((get(w, UNK_ID) for w in words), dtype=np.int32, count=len(words))

    def encode_lines(self, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, words per line) of many lines at once: the concatenation of ``encode``
        of each line (int32) and each line's length (int64), without a numpy call per
        line."""
        split = [self.split(line) for line in lines]
        lengths = np.fromiter(map(len, split), np.int64, len(split))
        words = itertools.chain.from_iterable(split)
        get, unk = self._index.get, itertools.repeat(UNK_ID)
        return np.fromiter(map(get, words, unk), np.int32, int(lengths.sum())), lengths

    def decode(self, ids) -> str:
        pieces = []
        for token_id in (int(i) for i in np.asarray(ids).reshape(-1)):
            if NUM_SPECIAL <= token_id < self.extra.base:
                pieces.append(self.words[token_id - NUM_SPECIAL])
            elif token_id != 0:  # <pad> is dropped
                piece = self.special_piece(token_id)
                if piece is None:
                    raise ValueError(f"token id {token_id} is outside the vocabulary")
                pieces.append(piece)
        return " ".join(pieces)

    def count_unknown(self, text: str) -> tuple[int, int]:
        words = self.split(text)
        return len(words), sum(w not in self._index for w in words)

    def counts_array(self) -> Int[np.ndarray, " V"]:
        """Training count per id (int64, vocab_size): words, ``<unk>``'s total, 0 elsewhere."""
        counts = np.zeros(self.vocab_size, np.int64)
        counts[NUM_SPECIAL : self.extra.base] = self.counts
        counts[UNK_ID] = self.unk_count
        return counts

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "words": self.words,
            "counts": self.counts,
            "unk_count": self.unk_count,
            "lowercase": self.lowercase,
            "num_registers": self.extra.num_registers,
            "num_sentinels": self.extra.num_sentinels,
            "min_count": self.min_count,
            "max_size": self.max_size,
        }

    def spec(self) -> dict:
        keys = ("min_count", "max_size", "lowercase", "num_registers", "num_sentinels")
        return {"kind": self.kind} | {k: self.to_dict()[k] for k in keys}

    def __eq__(self, other) -> bool:
        return isinstance(other, WordTokenizer) and other.to_dict() == self.to_dict()


def _by_count(word_count: tuple[str, int]) -> tuple[int, str]:
    return -word_count[1], word_count[0]
