"""The id layout shared by the byte, word and SentencePiece tokenizers.

``0 <pad>, 1 </s> (eos), 2 <unk>, 3 <s> (bos)``, then the tokenizer's own tokens (the
body), then reserved ids ``<pause>``, ``<sink>``, ``<reg_0>..<reg_{R-1}>``, then the
span-corruption sentinels at the very top of the vocabulary, numbered like T5
(https://arxiv.org/abs/1910.10683): ``<extra_id_0>`` is the last id, ``<extra_id_1>``
the one before it, and so on.
"""

import dataclasses

PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, 3
SPECIAL_PIECES = ("<pad>", "</s>", "<unk>", "<s>")
NUM_SPECIAL = len(SPECIAL_PIECES)


@dataclasses.dataclass(frozen=True)
class ExtraIds:
    """Ids past a tokenizer's body: pause, sink, registers, then sentinels at the top.

    Attributes:
      base: the first id after the body (= body end).
      num_registers: register token ids reserved after ``<pause>`` and ``<sink>``.
      num_sentinels: span-corruption sentinel ids at the top of the vocabulary.
    """

    base: int
    num_registers: int = 0
    num_sentinels: int = 0

    def __post_init__(self):
        if self.num_registers < 0 or self.num_sentinels < 0:
            raise ValueError("num_registers and num_sentinels must be >= 0")

    @property
    def pause_id(self) -> int:
        return self.base

    @property
    def sink_id(self) -> int:
        return self.base + 1

    @property
    def register_ids(self) -> list[int]:
        return list(range(self.base + 2, self.base + 2 + self.num_registers))

    @property
    def vocab_size(self) -> int:
        return self.base + 2 + self.num_registers + self.num_sentinels

    def sentinel_id(self, i: int) -> int:
        """Id of ``<extra_id_i>``: the i-th span's sentinel, counting down from the top."""
        if not 0 <= i < self.num_sentinels:
            raise IndexError(f"sentinel {i} out of range: {self.num_sentinels} sentinels reserved")
        return self.vocab_size - 1 - i

    def piece(self, token_id: int) -> str | None:
        """The display name of an extra id, or None if ``token_id`` is not one."""
        if token_id == self.pause_id:
            return "<pause>"
        if token_id == self.sink_id:
            return "<sink>"
        if self.base + 2 <= token_id < self.base + 2 + self.num_registers:
            return f"<reg_{token_id - self.base - 2}>"
        if self.vocab_size - self.num_sentinels <= token_id < self.vocab_size:
            return f"<extra_id_{self.vocab_size - 1 - token_id}>"
        return None


class SpecialIdsMixin:
    """Properties for tokenizers that follow the shared layout (they define ``self.extra``)."""

    extra: ExtraIds
    pad_id, eos_id, unk_id, bos_id = PAD_ID, EOS_ID, UNK_ID, BOS_ID

    @property
    def vocab_size(self) -> int:
        return self.extra.vocab_size

    @property
    def pause_id(self) -> int:
        return self.extra.pause_id

    @property
    def sink_id(self) -> int:
        return self.extra.sink_id

    @property
    def register_ids(self) -> list[int]:
        return self.extra.register_ids

    @property
    def num_sentinels(self) -> int:
        return self.extra.num_sentinels

    def sentinel_id(self, i: int) -> int:
        return self.extra.sentinel_id(i)

    def non_text_ids(self) -> list[int]:
        """Ids that stand for no text: ``<pad>``, ``<unk>``, ``<s>``, pause, sink, registers,
        sentinels. ``</s>`` is not among them: it ends a document and is a real prediction.
        Samplers mask these so that generated text never contains them.
        """
        e = self.extra
        sentinels = range(e.vocab_size - e.num_sentinels, e.vocab_size)
        return [PAD_ID, UNK_ID, BOS_ID, e.pause_id, e.sink_id, *e.register_ids, *sentinels]

    def special_piece(self, token_id: int) -> str | None:
        """Name of a special or extra id (``<pad>``, ``</s>``, ``<pause>``, ...), else None."""
        if 0 <= token_id < NUM_SPECIAL:
            return SPECIAL_PIECES[token_id]
        return self.extra.piece(token_id)


def decode_with_specials(ids, is_body, decode_body, special_piece) -> str:
    """Decodes runs of body ids with ``decode_body``; other ids become their names.

    ``<pad>`` is dropped (masks show padding); unknown ids outside the vocabulary raise.
    """
    out, run = [], []
    for token_id in (int(i) for i in ids):
        if is_body(token_id):
            run.append(token_id)
            continue
        if run:
            out.append(decode_body(run))
            run = []
        if token_id == PAD_ID:
            continue
        piece = special_piece(token_id)
        if piece is None:
            raise ValueError(f"token id {token_id} is outside the vocabulary")
        out.append(piece)
    if run:
        out.append(decode_body(run))
    return "".join(out)
