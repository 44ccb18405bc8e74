"""Incremental decoding of generated ids into text, for printing while generating.

Decoding one id at a time is wrong for tokenizers whose pieces are not whole
characters (a UTF-8 byte of a multi-byte character) or depend on their neighbours
(SentencePiece drops the space in front of the first piece). ``TextStream`` decodes
each new chunk together with the few ids before it and emits only the added text,
holding back a chunk that ends in an incomplete character, so the concatenated chunks
equal ``tokenizer.decode(all_ids)``.
"""

from collections.abc import Iterable

REPLACEMENT = "\ufffd"  # what an incomplete UTF-8 sequence decodes to
_CONTEXT = 8  # ids decoded in front of a new chunk (covers a 4-byte UTF-8 character)


class TextStream:
    """Turns ids arriving one by one into text pieces whose concatenation is exact."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._context: list[int] = []  # the last committed ids
        self._context_text = ""  # their decoded text
        self._pending: list[int] = []  # ids whose text is not out yet

    def _added_text(self) -> str:
        text = self.tokenizer.decode(self._context + self._pending)
        return text[len(self._context_text) :]

    def _commit(self, text: str) -> str:
        self._context = (self._context + self._pending)[-_CONTEXT:]
        self._context_text = self.tokenizer.decode(self._context) if self._context else ""
        self._pending = []
        return text

    def push(self, ids: Iterable[int]) -> str:
        """Adds ids; returns the text that is now final ('' while a character is incomplete)."""
        self._pending.extend(int(i) for i in ids)
        text = self._added_text()
        if text.endswith(REPLACEMENT):
            return ""  # maybe the first bytes of a character: wait for the rest
        return self._commit(text)

    def flush(self) -> str:
        """The text of whatever is still held back (call once at the end)."""
        return self._commit(self._added_text()) if self._pending else ""
