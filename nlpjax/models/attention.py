"""Multi-head dot-product attention, its implementations, and pure mask builders.

Masks are boolean arrays broadcastable to (B, H, Lq, Lk): True means "may attend".
Three implementations compute the same function (``model.attention``):

* ``reference``: batched 2-D matmuls over (B, H, L, K) with explicit transposes, the
  formulation XLA:CPU runs fastest (see benchmarks/README.md). It materialises the
  attention weights and is the only one that ``sow``s them (probes need it).
* ``xla``: ``jax.nn.dot_product_attention(implementation="xla")`` on (B, L, H, K).
* ``cudnn``: the same function with ``implementation="cudnn"`` (cuDNN flash attention:
  no (L, L) tensor in memory, causal blocks skipped). It needs a GPU, bfloat16/float16,
  a head dim that is a multiple of 8 and <= 128, no extra mask (segments, padding) and no
  attention dropout; the public jax API would turn any extra mask into a dense bias.
  Where one of these fails, ``choose_implementation`` falls back to ``xla`` (or to
  ``reference`` for dropout), and says so once in the log.

``auto`` picks ``cudnn`` on a GPU where it is supported, else ``reference``. With
``decode=True`` keys and values are written into a dense KV cache (the ``cache``
collection, layout (B, H, max_len, K)) at ``cache_index``, so one call can prefill a
prompt or add one token. A streaming cache (``key_positions_BS``) keeps the keys before
RoPE and rotates them by their current positions in the cache at every call.
"""

import logging
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nlpjax.models import positions as pos_lib
from nlpjax.models.layers import default_kernel_init, param_with_axes
from nlpjax.precision import f32_accumulation
from nlpjax.types import Array, Bool, Float, Int

NEG_INF = -1e30
IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn")
CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every cuDNN-flash GPU

_log = logging.getLogger(__name__)
_reported: set[tuple[str, str, str]] = set()


def causal_mask(length: int) -> Bool[Array, "1 1 L L"]:
    """Position i may attend to positions j <= i."""
    idx = jnp.arange(length)
    return (idx[None, :] <= idx[:, None])[None, None]


def position_causal_mask(
    q_positions_BL: Int[Array, "B Lq"], k_positions_BL: Int[Array, "B Lk"]
) -> Bool[Array, "B 1 Lq Lk"]:
    """Causal mask from explicit positions (used with a KV cache and offsets)."""
    return k_positions_BL[:, None, None, :] <= q_positions_BL[:, None, :, None]


def padding_mask(valid_BL: Bool[Array, "B L"]) -> Bool[Array, "B 1 1 L"]:
    """Keys that are real tokens (not padding) may be attended to."""
    return valid_BL[:, None, None, :]


def segment_mask(
    q_segments_BL: Int[Array, "B Lq"], k_segments_BL: Int[Array, "B Lk"]
) -> Bool[Array, "B 1 Lq Lk"]:
    """Packed sequences: attend only within the same segment id."""
    return q_segments_BL[:, None, :, None] == k_segments_BL[:, None, None, :]


def prefix_segment_mask(
    segments_BL: Int[Array, "B L"], num_prefix: int
) -> Bool[Array, "B 1 Lp Lp"]:
    """Packed sequences behind ``num_prefix`` shared positions (sink, registers): a token
    attends within its segment and to every prefix position; a prefix position attends
    only to prefix positions. Lp = P + L; combine with the causal mask."""
    B, L = segments_BL.shape
    P = num_prefix
    is_prefix = jnp.arange(P + L) < P
    same = segment_mask(segments_BL, segments_BL)  # B 1 L L
    tokens_to_all = jnp.concatenate([jnp.ones((B, 1, L, P), bool), same], axis=-1)
    prefix_rows = jnp.broadcast_to(is_prefix[None, None, None, :], (B, 1, P, P + L))
    return jnp.concatenate([prefix_rows, tokens_to_all], axis=2)


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the given masks (None entries are ignored)."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = jnp.logical_and(out, m)
    return out


def reference_attention(
    q_BHLK: Float[Array, "B H L K"],
    k_BHSK: Float[Array, "B H S K"],
    v_BHSK: Float[Array, "B H S K"],
    mask: Bool[Array, "#B #H L S"] | None,
    *,
    bias: Float[Array, "#B H L S"] | None = None,
    scale: float = 1.0,
    dtype: Any = jnp.float32,
    on_weights: Callable[[jax.Array], jax.Array] | None = None,
) -> Float[Array, "B H L K"]:
    """softmax(scale * q k^T + bias, masked) v: the ``reference`` attention, shared by the
    decoder's self-attention and T5's self- and cross-attention.

    Scores, bias and softmax are float32 whatever ``dtype``; ``on_weights`` sees the
    (B, H, L, S) weights before they multiply the values (probes sow them, training
    drops them out) and returns the weights to use.
    """
    if scale != 1.0:
        q_BHLK = q_BHLK * scale
    f32 = f32_accumulation(dtype)
    scores = jnp.matmul(q_BHLK, k_BHSK.swapaxes(-1, -2), preferred_element_type=f32)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = jnp.where(mask, scores, NEG_INF)  # B H L S
    weights = jax.nn.softmax(scores, axis=-1)
    if on_weights is not None:
        weights = on_weights(weights)
    return jnp.matmul(weights.astype(dtype), v_BHSK)


def cudnn_unsupported_reason(
    *, backend: str, dtype: Any, head_dim: int, decode: bool, extra_mask: bool
) -> str | None:
    """Why cuDNN flash attention cannot run this call, or None if it can."""
    if backend != "gpu":
        return f"it needs a GPU (backend is {backend})"
    if jnp.dtype(dtype) not in CUDNN_DTYPES:
        return f"it needs model.dtype bfloat16 or float16 (got {jnp.dtype(dtype).name})"
    if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
        return f"it needs a head dim that is a multiple of 8 and <= 128 (got {head_dim})"
    if decode:
        return "KV-cache decoding uses an explicit position mask"
    if extra_mask:
        return "segment or padding masks would become a dense bias"
    return None


def choose_implementation(
    requested: str,
    *,
    dtype: Any,
    head_dim: int,
    decode: bool = False,
    extra_mask: bool = False,
    dropout: bool = False,
    backend: str | None = None,
) -> str:
    """The implementation that runs: ``reference``, ``xla`` or ``cudnn``.

    Args:
      requested: ``model.attention`` (one of ``IMPLEMENTATIONS``).
      dtype: compute dtype of queries and keys.
      head_dim: K.
      decode: a KV-cache call.
      extra_mask: a mask beyond causal (segments, padding) is given.
      dropout: attention-weight dropout is active (training with ``model.dropout > 0``).
      backend: jax backend name; default ``jax.default_backend()``.
    """
    backend = backend or jax.default_backend()
    if requested == "reference":
        return "reference"
    if dropout:  # the fused functions have no dropout on the attention weights
        if requested == "auto":
            return "reference"
        return _fallback(requested, "reference", "attention dropout needs the weights")
    if requested == "xla":
        return "xla"
    reason = cudnn_unsupported_reason(
        backend=backend,
        dtype=dtype,
        head_dim=head_dim,
        decode=decode,
        extra_mask=extra_mask,
    )
    if reason is None:
        return "cudnn"
    if requested == "auto":
        return "reference"
    return _fallback("cudnn", "xla", reason)


def _fallback(requested: str, chosen: str, reason: str) -> str:
    if (requested, chosen, reason) not in _reported:
        _reported.add((requested, chosen, reason))
        _log.warning("model.attention=%s: using %s here, because %s", requested, chosen, reason)
    return chosen


class MultiHeadAttention(nn.Module):
    """Self-attention with a fused QKV projection and optional RoPE and KV cache.

    Attributes:
      num_heads: H.
      head_dim: K.
      max_len: cache length (only used with ``decode=True``).
      use_rope: rotate queries and keys by their positions.
      rope_base: RoPE frequency base.
      dropout: dropout rate on attention weights.
      use_bias: biases on the projections.
      out_init: initializer for the output projection.
      implementation: ``model.attention``: auto | reference | xla | cudnn.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
    """

    num_heads: int
    head_dim: int
    max_len: int
    use_rope: bool = False
    rope_base: float = 10000.0
    dropout: float = 0.0
    use_bias: bool = True
    out_init: Callable = default_kernel_init
    implementation: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_BLD: Float[Array, "B L D"],
        mask: Bool[Array, "#B 1 L Lk"] | None,
        positions_BL: Int[Array, "B L"],
        *,
        causal: bool = True,
        train: bool = False,
        decode: bool = False,
        cache_index: jax.Array | None = None,
        key_positions_BS: Int[Array, "B S"] | None = None,
    ) -> Float[Array, "B L D"]:
        """Attends within ``causal`` (positions j <= i) AND ``mask`` (None: no extra mask).

        With ``decode=True`` pass ``causal=False`` and the position mask over the cache.
        ``key_positions_BS`` (decoding only): the cache holds keys before RoPE and every
        slot's key is rotated by these positions at each call (a streaming cache, whose
        positions change as tokens are evicted); None rotates keys once, when written.
        """
        B, L, D = x_BLD.shape
        H, K, dtype = self.num_heads, self.head_dim, self.dtype
        impl = choose_implementation(
            self.implementation,
            dtype=dtype,
            head_dim=K,
            decode=decode,
            extra_mask=mask is not None and not decode,
            dropout=train and self.dropout > 0,
        )
        w_qkv = param_with_axes(
            self,
            "qkv_kernel",
            default_kernel_init,
            (D, 3, H, K),
            ("embed", None, "heads", "kv"),
            self.param_dtype,
        )
        x_ND = x_BLD.reshape(B * L, D).astype(dtype)
        qkv = jnp.dot(x_ND, w_qkv.reshape(D, 3 * H * K).astype(dtype))
        if self.use_bias:
            b_qkv = param_with_axes(
                self,
                "qkv_bias",
                nn.initializers.zeros,
                (3, H, K),
                (None, "heads", "kv"),
                self.param_dtype,
            )
            qkv = qkv + b_qkv.reshape(1, -1).astype(dtype)
        if causal:
            mask = combine_masks(causal_mask(L), mask) if impl == "reference" else mask
        cache = (cache_index, key_positions_BS) if decode else None
        if impl == "reference":
            out = self._reference(qkv.reshape(B, L, 3, H, K), mask, positions_BL, train, cache)
        else:
            out = self._fused(qkv.reshape(B, L, 3, H, K), mask, positions_BL, causal, cache, impl)
        w_o = param_with_axes(
            self, "out_kernel", self.out_init, (H, K, D), ("heads", "kv", "embed"), self.param_dtype
        )
        y = jnp.dot(out, w_o.reshape(H * K, D).astype(dtype))
        if self.use_bias:
            b_o = param_with_axes(
                self, "out_bias", nn.initializers.zeros, (D,), ("embed",), self.param_dtype
            )
            y = y + b_o[None].astype(dtype)
        return y.reshape(B, L, D)

    def _reference(self, qkv_BL3HK, mask, positions_BL, train, cache):
        """Explicit (B, H, L, Lk) scores and weights; softmax in float32. Returns (B*L, H*K).

        ``cache``: None, or (write index, streaming key positions or None) when decoding.
        """
        B, L, _, H, K = qkv_BL3HK.shape
        qkv = qkv_BL3HK.transpose(2, 0, 3, 1, 4)  # 3 B H L K
        q_BHLK, k_BHLK, v_BHLK = qkv[0], qkv[1], qkv[2]
        if self.use_rope:
            q_BHLK = pos_lib.rope(q_BHLK, positions_BL, self.rope_base)
        if cache is not None:
            k_BHLK, v_BHLK = self._cached_keys_values(k_BHLK, v_BHLK, positions_BL, cache)
        elif self.use_rope:
            k_BHLK = pos_lib.rope(k_BHLK, positions_BL, self.rope_base)

        def on_weights(weights):
            self.sow("intermediates", "attention_weights", weights)
            return nn.Dropout(self.dropout)(weights, deterministic=not train)

        out_BHLK = reference_attention(
            q_BHLK, k_BHLK, v_BHLK, mask, scale=K**-0.5, dtype=self.dtype, on_weights=on_weights
        )
        return out_BHLK.transpose(0, 2, 1, 3).reshape(B * L, H * K)

    def _fused(self, qkv_BL3HK, mask, positions_BL, causal, cache, impl):
        """``jax.nn.dot_product_attention`` on (B, L, H, K). Returns (B*L, H*K)."""
        B, L, _, H, K = qkv_BL3HK.shape
        q_BLHK, k_BLHK, v_BLHK = qkv_BL3HK[:, :, 0], qkv_BL3HK[:, :, 1], qkv_BL3HK[:, :, 2]
        if self.use_rope:
            q_BLHK = pos_lib.rope_blhk(q_BLHK, positions_BL, self.rope_base)
        if cache is not None:  # the cache keeps the reference layout (B, H, max_len, K)
            k_BHSK, v_BHSK = self._cached_keys_values(
                k_BLHK.transpose(0, 2, 1, 3), v_BLHK.transpose(0, 2, 1, 3), positions_BL, cache
            )
            k_BLHK, v_BLHK = k_BHSK.transpose(0, 2, 1, 3), v_BHSK.transpose(0, 2, 1, 3)
        elif self.use_rope:
            k_BLHK = pos_lib.rope_blhk(k_BLHK, positions_BL, self.rope_base)
        out_BLHK = jax.nn.dot_product_attention(
            q_BLHK, k_BLHK, v_BLHK, mask=mask, is_causal=causal, implementation=impl
        )
        return out_BLHK.reshape(B * L, H * K)

    def _cached_keys_values(self, k_BHLK, v_BHLK, positions_BL, cache):
        """The whole cache's keys (rotated) and values after writing this call's.

        Without streaming positions, keys are rotated by their own positions and cached
        so; with them, the cache keeps unrotated keys and rotates every slot's by its
        current position (``key_positions_BS``) at each call.
        """
        index, key_positions_BS = cache
        if key_positions_BS is None:
            if self.use_rope:
                k_BHLK = pos_lib.rope(k_BHLK, positions_BL, self.rope_base)
            return self._update_cache(k_BHLK, v_BHLK, index)
        k_BHSK, v_BHSK = self._update_cache(k_BHLK, v_BHLK, index)
        if self.use_rope:
            k_BHSK = pos_lib.rope(k_BHSK, key_positions_BS, self.rope_base)
        return k_BHSK, v_BHSK

    def _update_cache(self, k_BHLK, v_BHLK, index):
        """Writes this call's keys/values at ``index``; returns the whole cache."""
        B, H, _, K = k_BHLK.shape
        shape = (B, H, self.max_len, K)
        cached_k = self.variable("cache", "k", jnp.zeros, shape, k_BHLK.dtype)
        cached_v = self.variable("cache", "v", jnp.zeros, shape, v_BHLK.dtype)
        start = (0, 0, index, 0)
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BHLK, start)
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BHLK, start)
        return cached_k.value, cached_v.value
