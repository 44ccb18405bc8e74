"""Text in, text out: a tokenizer and a token ``Generator`` behind one object.

A task's ``generator(params, sampling)`` returns one of these, so the CLI and the
Python API sample text without knowing the model class or the tokenizer.
"""

from collections.abc import Iterator

import numpy as np

from nlpjax.inference.prompt import encode_prompt
from nlpjax.inference.text_stream import TextStream


class TextGenerator:
    """Continues text prompts; ``num_generated`` is the last call's token count."""

    def __init__(self, token_generator, tokenizer, vocab_file: str):
        self.token_generator = token_generator
        self.tokenizer = tokenizer
        self.vocab_file = vocab_file  # named in errors about the prompt
        self.num_generated = 0

    def encode(self, prompt: str) -> np.ndarray:
        """The prompt's ids (1, L); text the vocabulary cannot encode is a ``DataError``."""
        return encode_prompt(self.tokenizer, prompt, self.vocab_file)[None]

    def generate(self, prompt: str, max_new_tokens: int, seed: int = 0) -> str:
        """The text of ``max_new_tokens`` tokens sampled after ``prompt`` (prompt excluded)."""
        ids_BL = self.token_generator.generate(self.encode(prompt), max_new_tokens, seed=seed)
        self.num_generated = int(ids_BL.shape[1])
        return self.tokenizer.decode(ids_BL[0])

    def stream(self, prompt: str, max_new_tokens: int, seed: int = 0) -> Iterator[str]:
        """Like ``generate`` (the same text for the same seed), piece by piece as sampled."""
        text = TextStream(self.tokenizer)
        self.num_generated = 0
        prompt_BL = self.encode(prompt)
        for token_B in self.token_generator.stream(prompt_BL, max_new_tokens, seed=seed):
            self.num_generated += 1
            yield text.push(token_B)
        yield text.flush()
