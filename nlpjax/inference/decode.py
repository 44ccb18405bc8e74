"""Autoregressive sampling with a KV cache: greedy, temperature, top-k and top-p.

Each new token costs one cached forward step, independent of the prompt length. When
the cache (the model's context) is full, the last half context is re-encoded into a
fresh cache and generation continues, so learned absolute positions stay in range.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nlpjax.inference.kv_cache import init_cache


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


def sample(logits_BV: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
    if cfg.temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits_BV, cfg)).astype(jnp.int32)


class Generator:
    """Samples continuations from a decoder with a KV cache (batch of equal-length prompts)."""

    def __init__(self, model, params, sampling: SamplingConfig):
        self.model, self.params, self.sampling = model, params, sampling
        self.max_len = model.config.max_len

        def step(params, cache, tokens_BL, rng):
            logits_BLV, updated = model.apply(
                {"params": params, "cache": cache}, tokens_BL, decode=True, mutable=["cache"]
            )
            return sample(logits_BLV[:, -1], rng, sampling), updated["cache"]

        self._step = jax.jit(step)

    def _prefill(self, history_BL: np.ndarray, rng):
        cache = init_cache(self.model, history_BL.shape[0])
        return self._step(self.params, cache, jnp.asarray(history_BL), rng)

    def generate(self, prompt_BL: np.ndarray, max_new_tokens: int, seed: int = 0) -> np.ndarray:
        """Returns the (B, max_new_tokens) sampled ids following ``prompt_BL``."""
        prompt_BL = np.atleast_2d(np.asarray(prompt_BL, np.int32))
        if prompt_BL.shape[1] == 0:
            raise ValueError("the prompt is empty: give at least one token")
        key = jax.random.PRNGKey(seed)
        history = prompt_BL[:, -self.max_len :]
        next_B, cache = self._prefill(history, jax.random.fold_in(key, 0))
        filled = history.shape[1]
        out = []
        for i in range(max_new_tokens):
            token = np.asarray(next_B)[:, None]
            out.append(token)
            if i + 1 == max_new_tokens:
                break
            rng = jax.random.fold_in(key, i + 1)
            if filled == self.max_len:  # cache full: re-encode the last half context
                history = np.concatenate([prompt_BL, *out], axis=1)[:, -(self.max_len // 2) :]
                next_B, cache = self._prefill(history, rng)
                filled = history.shape[1]
            else:
                next_B, cache = self._step(self.params, cache, jnp.asarray(token), rng)
                filled += 1
        return np.concatenate(out, axis=1)


def generate_uncached(model, params, prompt_BL, max_new_tokens, sampling, seed=0) -> np.ndarray:
    """Reference sampler without a cache: re-runs the model on the whole window per token."""
    key = jax.random.PRNGKey(seed)
    apply = jax.jit(lambda p, t: model.apply({"params": p}, t)[:, -1])
    tokens = np.atleast_2d(np.asarray(prompt_BL, np.int32))
    out = []
    for i in range(max_new_tokens):
        window = tokens[:, -model.config.max_len :]
        nxt = np.asarray(
            sample(apply(params, jnp.asarray(window)), jax.random.fold_in(key, i), sampling)
        )
        out.append(nxt[:, None])
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
    return np.concatenate(out, axis=1)
