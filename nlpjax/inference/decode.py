"""Autoregressive sampling with a KV cache: greedy, temperature, top-k and top-p.

Each new token costs one cached forward step, independent of the prompt length. When
the cache (the model's context) is full, the last half context is re-encoded into a
fresh cache and generation continues, so learned absolute positions stay in range (the
window slides by half a context at a time). Ids that stand for no text (padding,
``<unk>``, ``<s>``, pause, sink, register and sentinel ids) can be banned: their logits
are set to -inf before greedy or sampled choice, so they are never emitted.
"""

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from nlpjax.inference.kv_cache import broadcast_cache, init_cache, prefix_cache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable those filters."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits_BV: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Temperature scaling, then top-k and top-p (nucleus) masking with -inf."""
    logits_BV = logits_BV.astype(jnp.float32) / cfg.temperature
    if cfg.top_k:
        k = min(cfg.top_k, logits_BV.shape[-1])
        kth = jax.lax.top_k(logits_BV, k)[0][..., -1:]
        logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
    if cfg.top_p < 1.0:
        sorted_desc = jnp.sort(logits_BV, axis=-1)[..., ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_desc, axis=-1), axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cutoff_idx = jnp.sum(cum < cfg.top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_desc, cutoff_idx, axis=-1)
        logits_BV = jnp.where(logits_BV < cutoff, -jnp.inf, logits_BV)
    return logits_BV


def ban_ids(logits_BV: Float[Array, "B V"], banned_V: jax.Array | None) -> jax.Array:
    """Sets the logits of banned ids (a boolean mask over the vocabulary) to -inf."""
    if banned_V is None:
        return logits_BV
    return jnp.where(banned_V[None, :], -jnp.inf, logits_BV.astype(jnp.float32))


def banned_mask(vocab_size: int, banned_ids: Sequence[int]) -> np.ndarray | None:
    """A (V,) boolean mask of ``banned_ids``; None when nothing is banned."""
    banned_ids = [int(i) for i in banned_ids]
    if not banned_ids:
        return None
    if min(banned_ids) < 0 or max(banned_ids) >= vocab_size:
        raise ValueError(f"banned ids {banned_ids} outside the vocabulary of {vocab_size}")
    if len(set(banned_ids)) >= vocab_size:
        raise ValueError("every id of the vocabulary is banned: nothing could be generated")
    mask = np.zeros(vocab_size, bool)
    mask[banned_ids] = True
    return mask


def sample(
    logits_BV: jax.Array, rng: jax.Array, cfg: SamplingConfig, banned_V: jax.Array | None = None
) -> Int[Array, " B"]:
    """Greedy (``temperature=0``) or filtered sampling, never choosing a banned id."""
    logits_BV = ban_ids(logits_BV, banned_V)
    if cfg.temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits_BV, cfg)).astype(jnp.int32)


class Generator:
    """Samples continuations from a decoder with a KV cache (batch of equal-length prompts).

    Args:
      model: a decoder with a ``decode=True`` mode and ``config.max_len``.
      params: its parameters.
      sampling: temperature, top-k and top-p.
      banned_ids: ids never to emit (their logits are set to -inf, greedy included).
      append_ids: ids put after every prompt (pause-inference: M_inf pauses); the output
        starts after the last of them.
    """

    def __init__(
        self,
        model,
        params,
        sampling: SamplingConfig,
        banned_ids: Sequence[int] = (),
        append_ids: Sequence[int] = (),
    ):
        self.model, self.params, self.sampling = model, params, sampling
        self.append_ids = np.asarray(append_ids, np.int32).reshape(-1)
        self.banned_ids = tuple(int(i) for i in banned_ids)
        self.max_len = model.config.max_len
        mask = banned_mask(model.config.vocab_size, banned_ids)
        banned_V = None if mask is None else jnp.asarray(mask)

        def step(params, cache, tokens_BL, rng):
            logits_BLV, updated = model.apply(
                {"params": params, "cache": cache}, tokens_BL, decode=True, mutable=["cache"]
            )
            return sample(logits_BLV[:, -1], rng, sampling, banned_V), updated["cache"]

        self._step = jax.jit(step)
        # Registers' and sink's keys/values: computed once for these params, then copied.
        self._prefix = None
        if model.config.num_prefix:
            self._prefix = jax.jit(lambda p: prefix_cache(model, p))(params)

    def _prefill(self, history_BL: np.ndarray, rng):
        if self._prefix is None:
            cache = init_cache(self.model, history_BL.shape[0])
        else:
            cache = broadcast_cache(self._prefix, history_BL.shape[0])
        return self._step(self.params, cache, jnp.asarray(history_BL), rng)

    def stream(
        self, prompt_BL: np.ndarray, max_new_tokens: int, seed: int = 0
    ) -> Iterator[Int[np.ndarray, " B"]]:
        """Yields the (B,) sampled ids one position at a time, ``max_new_tokens`` times.

        Past the context, the window slides: when the cache is full, the last
        ``max_len // 2`` tokens are re-encoded into a fresh cache.
        """
        prompt_BL = np.atleast_2d(np.asarray(prompt_BL, np.int32))
        if prompt_BL.shape[1] == 0:
            raise ValueError("the prompt is empty: give at least one token")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if max_new_tokens == 0:
            return
        if self.append_ids.size:
            suffix = np.broadcast_to(self.append_ids, (prompt_BL.shape[0], self.append_ids.size))
            prompt_BL = np.concatenate([prompt_BL, suffix], axis=1)
        key = jax.random.PRNGKey(seed)
        history = prompt_BL[:, -self.max_len :]
        next_B, cache = self._prefill(history, jax.random.fold_in(key, 0))
        filled = history.shape[1]
        out = []
        for i in range(max_new_tokens):
            token = np.asarray(next_B)
            out.append(token[:, None])
            if len(out) > self.max_len:  # only the last half context is ever re-encoded
                del out[0]
            yield token
            if i + 1 == max_new_tokens:
                break
            rng = jax.random.fold_in(key, i + 1)
            if filled == self.max_len:  # cache full: re-encode the last half context
                tail = max(self.max_len // 2, 1)
                history = np.concatenate([prompt_BL[:, -tail:], *out[-tail:]], axis=1)
                history = history[:, -tail:]
                next_B, cache = self._prefill(history, rng)
                filled = history.shape[1]
            else:
                next_B, cache = self._step(self.params, cache, jnp.asarray(token[:, None]), rng)
                filled += 1

    def generate(self, prompt_BL: np.ndarray, max_new_tokens: int, seed: int = 0) -> np.ndarray:
        """Returns the (B, max_new_tokens) sampled ids following ``prompt_BL``."""
        return collect_stream(self.stream, prompt_BL, max_new_tokens, seed)


def collect_stream(stream: Callable, prompt_BL, max_new_tokens: int, seed: int) -> np.ndarray:
    """The (B, max_new_tokens) ids a token generator's ``stream(prompt_BL, n, seed)``
    yields one (B,) step at a time, as one array (every generator's ``generate``)."""
    prompt_BL = np.atleast_2d(np.asarray(prompt_BL, np.int32))
    tokens = [t[:, None] for t in stream(prompt_BL, max_new_tokens, seed)]
    if not tokens:
        return np.zeros((prompt_BL.shape[0], 0), np.int32)
    return np.concatenate(tokens, axis=1)


def generate_uncached(
    model, params, prompt_BL, max_new_tokens, sampling, seed=0, banned_ids=()
) -> np.ndarray:
    """Reference sampler without a cache: re-runs the model on the last max_len tokens."""
    key = jax.random.PRNGKey(seed)
    mask = banned_mask(model.config.vocab_size, banned_ids)
    banned_V = None if mask is None else jnp.asarray(mask)
    apply = jax.jit(lambda p, t: model.apply({"params": p}, t)[:, -1])
    tokens = np.atleast_2d(np.asarray(prompt_BL, np.int32))
    out = [np.zeros((tokens.shape[0], 0), np.int32)]
    for i in range(max_new_tokens):
        window = tokens[:, -model.config.max_len :]
        logits = apply(params, jnp.asarray(window))
        nxt = np.asarray(sample(logits, jax.random.fold_in(key, i), sampling, banned_V))
        out.append(nxt[:, None])
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
    return np.concatenate(out, axis=1)
