"""Prompts for generation: text the vocabulary cannot represent is an error, not <unk>."""

import numpy as np
from jaxtyping import Int

from nlpjax.errors import DataError


def unknown_parts(tokenizer, text: str) -> list[str]:
    """The words (word vocabularies) or characters that ``tokenizer`` encodes as ``<unk>``."""
    unk = tokenizer.unk_id
    units = tokenizer.split(text) if tokenizer.kind == "word" else list(text)
    seen = dict.fromkeys(u for u in units if not u.isspace())
    return [u for u in seen if unk in tokenizer.encode(u)]


def encode_prompt(tokenizer, prompt: str, where: str) -> Int[np.ndarray, " L"]:
    """The prompt's ids; text the vocabulary can only encode as ``<unk>`` is an error."""
    ids = tokenizer.encode(prompt)  # the char tokenizer raises on unknown characters
    unk = getattr(tokenizer, "unk_id", None)
    if unk is not None and (ids == unk).any():
        parts = unknown_parts(tokenizer, prompt) or [prompt]
        listed = ", ".join(repr(p) for p in parts)
        raise DataError(
            f"the prompt has text that the vocabulary in {where} can only encode as <unk>: "
            f"{listed}; remove or replace it"
        )
    if len(ids) == 0:
        raise DataError(f"the prompt {prompt!r} encodes to no tokens; give some text")
    return ids
