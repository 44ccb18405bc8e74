"""Decoding an encoder-decoder: the encoder runs once, cross-attention keys and values are
computed once, and the decoder steps against a self-attention KV cache.

Any model with the methods of ``nlpjax.models.t5.T5`` works: ``encode(source_BS)``,
``cross_keys_values(encoded_BSD)`` and ``decode(tokens_BT, cross_kv, source_segments_BS,
decode=True)`` with a ``cache`` collection, and ``config.max_target_len`` /
``config.vocab_size``. Source id ``pad_id`` is padding (never attended to). Another
encoder-decoder family (the recurrent one) passes its own ``search_start``: how a source
batch becomes the one-token ``step_fn`` the searches call and the cache it starts from.
"""

import logging
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from nlpjax.errors import DataError
from nlpjax.inference.decode import SamplingConfig, banned_mask, sample
from nlpjax.inference.prompt import encode_prompt
from nlpjax.inference.search import beam_search, sample_loop

GREEDY = SamplingConfig(temperature=0.0)
_log = logging.getLogger(__name__)


class Seq2SeqGenerator:
    """Greedy, sampled or beam-searched outputs for a batch of (padded) sources.

    Args:
      model: the encoder-decoder module.
      params: its parameters.
      eos_id: the id that ends an output.
      start_id: the decoder's first input (T5: 0, the padding id).
      pad_id: source padding, and what follows ``eos_id`` in the outputs.
      banned_ids: ids never to emit (``-inf`` logits, greedy included).
      search_start: ``(model, params, source_BS, pad_id, width) -> (step_fn, cache)`` for
        ``width`` rows per source (None: the T5 methods above).
      max_target_len: the longest output the model allows (None:
        ``model.config.max_target_len``; 0: no limit of its own).
    """

    def __init__(
        self,
        model,
        params,
        *,
        eos_id: int,
        start_id: int = 0,
        pad_id: int = 0,
        banned_ids: Sequence[int] = (),
        search_start: Callable | None = None,
        max_target_len: int | None = None,
    ):
        self.model, self.params = model, params
        self.search_start = search_start
        if max_target_len is None:
            max_target_len = model.config.max_target_len
        self.max_target_len = max_target_len
        self.ids = {"start_id": start_id, "eos_id": eos_id, "pad_id": pad_id}
        if eos_id in banned_ids:
            raise ValueError(f"the end id {eos_id} is banned: no output could ever end")
        mask = banned_mask(model.config.vocab_size, banned_ids)
        self.banned_V = None if mask is None else jnp.asarray(mask)
        self._sample = jax.jit(self._sample_fn, static_argnames=("max_len", "sampling"))
        self._beam = jax.jit(self._beam_fn, static_argnames=("max_len", "beam_size", "alpha"))

    def _step_fn(self, params, source_BS, width: int):
        """(step_fn, empty cache) for ``width`` decoder rows per source (beams)."""
        if self.search_start is not None:
            return self.search_start(self.model, params, source_BS, self.ids["pad_id"], width)
        model = self.model
        encoded = model.apply({"params": params}, source_BS, method="encode")
        cross_kv = model.apply({"params": params}, encoded, method="cross_keys_values")
        cross_kv = jax.tree_util.tree_map(lambda x: jnp.repeat(x, width, axis=0), cross_kv)
        segments = jnp.repeat((source_BS != self.ids["pad_id"]).astype(jnp.int32), width, axis=0)

        def step_fn(tokens_N1, cache):
            logits, updated = model.apply(
                {"params": params, "cache": cache},
                tokens_N1,
                cross_kv,
                segments,
                decode=True,
                method="decode",
                mutable=["cache"],
            )
            return logits, updated["cache"]

        def shapes():
            tokens = jnp.zeros((segments.shape[0], 1), jnp.int32)
            variables = model.init(
                jax.random.PRNGKey(0), tokens, cross_kv, segments, decode=True, method="decode"
            )
            return variables["cache"]

        cache = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes)
        )
        return step_fn, cache

    def _sample_fn(self, params, source_BS, rng, *, max_len, sampling):
        step_fn, cache = self._step_fn(params, source_BS, 1)
        return sample_loop(
            step_fn,
            cache,
            source_BS.shape[0],
            max_len,
            sampling=sampling,
            rng=rng,
            banned_V=self.banned_V,
            **self.ids,
        )

    def _beam_fn(self, params, source_BS, *, max_len, beam_size, alpha):
        step_fn, cache = self._step_fn(params, source_BS, beam_size)
        return beam_search(
            step_fn,
            cache,
            source_BS.shape[0],
            beam_size,
            max_len,
            alpha=alpha,
            banned_V=self.banned_V,
            **self.ids,
        )

    def _check(self, source_BS, max_len: int) -> np.ndarray:
        source_BS = np.atleast_2d(np.asarray(source_BS, np.int32))
        limit = self.max_target_len
        if max_len <= 0 or (limit and max_len > limit):
            raise ValueError(f"max_len must be in [1, model.max_target_len={limit}], got {max_len}")
        return source_BS

    def generate(
        self,
        source_BS: Int[np.ndarray, "B S"],
        max_len: int,
        sampling: SamplingConfig = GREEDY,
        seed: int = 0,
    ) -> Int[np.ndarray, "B T"]:
        """(B, max_len) outputs: greedy by default, else temperature/top-k/top-p sampled."""
        source_BS = self._check(source_BS, max_len)
        rng = jax.random.PRNGKey(seed)
        out = self._sample(self.params, source_BS, rng, max_len=max_len, sampling=sampling)
        return np.asarray(out)

    def beam_search(
        self,
        source_BS: Int[np.ndarray, "B S"],
        max_len: int,
        beam_size: int = 4,
        alpha: float = 0.6,
    ) -> tuple[Int[np.ndarray, "B W T"], Float[np.ndarray, "B W"]]:
        """The ``beam_size`` best outputs per source, best first, and their scores."""
        source_BS = self._check(source_BS, max_len)
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        seqs, scores = self._beam(
            self.params, source_BS, max_len=max_len, beam_size=beam_size, alpha=float(alpha)
        )
        return np.asarray(seqs), np.asarray(scores)


def output_ids(ids_T: np.ndarray, eos_id: int) -> np.ndarray:
    """An output's ids before its first ``eos_id`` (all of them if it never ended)."""
    ids_T = np.asarray(ids_T)
    ends = np.flatnonzero(ids_T == eos_id)
    return ids_T[: ends[0]] if ends.size else ids_T


class Seq2SeqTextGenerator:
    """Text in, text out for an encoder-decoder: what a seq2seq task's ``generator``
    returns (``encode``, ``generate``, ``stream``, ``num_generated``, as
    ``TextGenerator``), plus ``translate`` for many inputs at once.

    Args:
      generator: the token-level ``Seq2SeqGenerator`` (its ``eos_id`` ends an output).
      tokenizer: encodes inputs and decodes outputs.
      vocab_file: named in errors about an input.
      max_source_len: the longest input in tokens (end id included) the model takes.
      prefix: text put in front of every input (``"translate German to English: "``).
      sampling: greedy (default) or sampled decoding, when ``beam_size`` is 1.
      beam_size: > 1 decodes by beam search and returns the best hypothesis.
      alpha: beam search's length-penalty exponent.
      too_long: an input over ``max_source_len`` is cut to it, end id kept, and counted in
        the log (``"truncate"``), or is a ``DataError`` (``"error"``).
    """

    def __init__(
        self,
        generator: Seq2SeqGenerator,
        tokenizer,
        vocab_file: str,
        *,
        max_source_len: int,
        prefix: str = "",
        sampling: SamplingConfig = GREEDY,
        beam_size: int = 1,
        alpha: float = 0.6,
        too_long: str = "error",
    ):
        self.generator, self.tokenizer, self.vocab_file = generator, tokenizer, vocab_file
        self.max_source_len, self.prefix = max_source_len, prefix
        self.sampling, self.beam_size, self.alpha = sampling, beam_size, alpha
        self.too_long = too_long
        self.eos_id = generator.ids["eos_id"]
        self.num_generated = 0

    @property
    def max_output_len(self) -> int | None:
        """The longest output the model decodes (T5: its KV cache, ``model.max_target_len``);
        None where the model has no limit of its own (a recurrent decoder)."""
        return self.generator.max_target_len or None

    def _with_eos(self, ids: np.ndarray, text: str) -> tuple[np.ndarray, bool]:
        """(ids + end id, whether they were cut to ``max_source_len``)."""
        ids = np.concatenate([ids, [self.eos_id]]).astype(np.int32)
        if len(ids) <= self.max_source_len:
            return ids, False
        if self.too_long == "error":
            raise DataError(
                f"the input {text[:40]!r}... has {len(ids)} tokens (end included), more "
                f"than the {self.max_source_len} the model takes (data.source_length); "
                "shorten it (or train with data.too_long=truncate to cut such inputs)"
            )
        return np.concatenate([ids[: self.max_source_len - 1], [self.eos_id]]), True

    def _log_cut(self, cut: int, total: int) -> None:
        if cut:
            _log.warning(
                "%d of %d inputs were over %d tokens (data.source_length) and were cut",
                cut,
                total,
                self.max_source_len,
            )

    def _encode(self, text: str) -> tuple[np.ndarray, bool]:
        ids = encode_prompt(self.tokenizer, self.prefix + text, self.vocab_file)
        return self._with_eos(ids, text)

    def check(self, text: str) -> None:
        """Raises the ``DataError`` that ``encode`` would for ``text`` (logs nothing)."""
        self._encode(text)

    def encode(self, text: str) -> Int[np.ndarray, "1 S"]:
        """The input's ids with the prefix and the end id; text the vocabulary can only
        encode as ``<unk>`` is a ``DataError``, and so is an input that is too long unless
        ``too_long="truncate"`` (then it is cut, with a warning)."""
        ids, cut = self._encode(text)
        self._log_cut(int(cut), 1)
        return ids[None]

    def _decode_batch(self, sources_BS: np.ndarray, max_len: int, seed: int) -> np.ndarray:
        if self.beam_size > 1:
            beams, _ = self.generator.beam_search(sources_BS, max_len, self.beam_size, self.alpha)
            return beams[:, 0]
        return self.generator.generate(sources_BS, max_len, self.sampling, seed)

    def generate(self, text: str, max_new_tokens: int, seed: int = 0) -> str:
        """The output text for ``text`` (at most ``max_new_tokens`` tokens, end excluded)."""
        if max_new_tokens == 0:
            self.num_generated = 0
            return ""
        out = output_ids(
            self._decode_batch(self.encode(text), max_new_tokens, seed)[0], self.eos_id
        )
        self.num_generated = len(out)
        return self.tokenizer.decode(out)

    def stream(self, text: str, max_new_tokens: int, seed: int = 0) -> Iterator[str]:
        """``generate``'s text in one piece: the search runs as one compiled loop."""
        yield self.generate(text, max_new_tokens, seed)

    def translate(
        self,
        texts: Sequence[str],
        max_len: int,
        batch_size: int = 64,
        seed: int = 0,
        report_cuts: bool = True,
    ) -> list[str]:
        """Outputs for many inputs, ``batch_size`` at a time (padded to a multiple of 8
        tokens, so few shapes compile). Unknown text is encoded as ``<unk>`` here; an
        input longer than ``max_source_len`` follows ``too_long`` (cut, end id kept, and
        counted in the log unless not ``report_cuts``; or a ``DataError``)."""
        outputs, cut = [], 0
        for lo in range(0, len(texts), batch_size):
            chunk = texts[lo : lo + batch_size]
            rows = []
            for text in chunk:
                ids, was_cut = self._with_eos(self.tokenizer.encode(self.prefix + text), text)
                cut += was_cut
                rows.append(ids)
            width = -(-max(len(r) for r in rows) // 8) * 8
            sources = np.zeros((batch_size, width), np.int32)  # full batches: one shape
            for i, row in enumerate(rows):
                sources[i, : len(row)] = row
            decoded = self._decode_batch(sources, max_len, seed + lo)
            outputs += [
                self.tokenizer.decode(output_ids(o, self.eos_id)) for o in decoded[: len(rows)]
            ]
        if report_cuts:
            self._log_cut(cut, len(texts))
        return outputs


def generate_uncached(
    model, params, source_BS, max_len: int, *, eos_id: int, start_id: int = 0, pad_id: int = 0
) -> Int[np.ndarray, "B T"]:
    """Reference greedy decoding without caches: the whole model reruns on every prefix
    (held in a fixed (B, max_len) buffer: the decoder is causal, so the unfilled tail
    cannot change the logits read at position t)."""
    logits_at = jax.jit(lambda p, s, t, i: model.apply({"params": p}, s, t)[:, i])
    source_BS = jnp.asarray(np.atleast_2d(source_BS), jnp.int32)
    B = source_BS.shape[0]
    inputs = np.full((B, max_len), pad_id, np.int32)
    inputs[:, 0] = start_id
    out = np.full((B, max_len), pad_id, np.int32)
    done = np.zeros(B, bool)
    for t in range(max_len):
        logits = logits_at(params, source_BS, jnp.asarray(inputs), t)
        nxt = np.where(done, pad_id, np.asarray(sample(logits, None, GREEDY)))
        out[:, t] = nxt
        done |= nxt == eos_id
        if done.all() or t + 1 == max_len:
            break
        inputs[:, t + 1] = nxt
    return out


def sequence_log_prob(
    model, params, source_BS, outputs_BT, *, eos_id: int, start_id: int = 0
) -> Float[Array, " B"]:
    """Log-probability of each output (up to and including its ``eos_id``) under the
    model, by one teacher-forced pass: what beam search's scores are made of."""
    outputs_BT = jnp.asarray(outputs_BT, jnp.int32)
    inputs = jnp.concatenate([jnp.full_like(outputs_BT[:, :1], start_id), outputs_BT[:, :-1]], 1)
    logits = jax.jit(model.apply)({"params": params}, jnp.asarray(source_BS), inputs)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    token_lp = jnp.take_along_axis(log_probs, outputs_BT[..., None], axis=-1)[..., 0]
    ended_before = jnp.cumsum(outputs_BT == eos_id, axis=1) - (outputs_BT == eos_id)
    return jnp.sum(jnp.where(ended_before == 0, token_lp, 0.0), axis=1)
