"""Decoding an encoder-decoder: the encoder runs once, cross-attention keys and values are
computed once, and the decoder steps against a self-attention KV cache.

Any model with the methods of ``nlpjax.models.t5.T5`` works: ``encode(source_BS)``,
``cross_keys_values(encoded_BSD)`` and ``decode(tokens_BT, cross_kv, source_segments_BS,
decode=True)`` with a ``cache`` collection, and ``config.max_target_len`` /
``config.vocab_size``. Source id ``pad_id`` is padding (never attended to).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from nlpjax.inference.decode import SamplingConfig, banned_mask, sample
from nlpjax.inference.search import beam_search, sample_loop

GREEDY = SamplingConfig(temperature=0.0)


class Seq2SeqGenerator:
    """Greedy, sampled or beam-searched outputs for a batch of (padded) sources.

    Args:
      model: the encoder-decoder module.
      params: its parameters.
      eos_id: the id that ends an output.
      start_id: the decoder's first input (T5: 0, the padding id).
      pad_id: source padding, and what follows ``eos_id`` in the outputs.
      banned_ids: ids never to emit (``-inf`` logits, greedy included).
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
    ):
        self.model, self.params = model, params
        self.ids = {"start_id": start_id, "eos_id": eos_id, "pad_id": pad_id}
        if eos_id in banned_ids:
            raise ValueError(f"the end id {eos_id} is banned: no output could ever end")
        mask = banned_mask(model.config.vocab_size, banned_ids)
        self.banned_V = None if mask is None else jnp.asarray(mask)
        self._sample = jax.jit(self._sample_fn, static_argnames=("max_len", "sampling"))
        self._beam = jax.jit(self._beam_fn, static_argnames=("max_len", "beam_size", "alpha"))

    def _step_fn(self, params, source_BS, width: int):
        """(step_fn, empty cache) for ``width`` decoder rows per source (beams)."""
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
        limit = self.model.config.max_target_len
        if not 0 < max_len <= limit:
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
