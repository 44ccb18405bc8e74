"""Multi-head dot-product attention and pure mask builders.

Masks are boolean arrays broadcastable to (B, H, Lq, Lk): True means "may attend".
Attention is written as batched 2-D matmuls over (B, H, L, K) with explicit transposes,
the formulation that XLA:CPU runs fastest (see benchmarks/README.md). With
``decode=True`` keys and values are written into a dense KV cache (the ``cache``
collection) at ``cache_index``, so one call can prefill a prompt or add one token.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from nlpjax.models import positions as pos_lib
from nlpjax.models.layers import default_kernel_init, param_with_axes
from nlpjax.types import Array, Bool, Float, Int

NEG_INF = -1e30


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


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the given masks (None entries are ignored)."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = jnp.logical_and(out, m)
    return out


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
    """

    num_heads: int
    head_dim: int
    max_len: int
    use_rope: bool = False
    rope_base: float = 10000.0
    dropout: float = 0.0
    use_bias: bool = True
    out_init: Callable = default_kernel_init

    @nn.compact
    def __call__(
        self,
        x_BLD: Float[Array, "B L D"],
        mask: Bool[Array, "#B 1 L Lk"],
        positions_BL: Int[Array, "B L"],
        *,
        train: bool = False,
        decode: bool = False,
        cache_index: jax.Array | None = None,
    ) -> Float[Array, "B L D"]:
        B, L, D = x_BLD.shape
        H, K = self.num_heads, self.head_dim
        w_qkv = param_with_axes(
            self, "qkv_kernel", default_kernel_init, (D, 3, H, K), ("embed", None, "heads", "kv")
        )
        qkv = jnp.dot(x_BLD.reshape(B * L, D), w_qkv.reshape(D, 3 * H * K))
        if self.use_bias:
            b_qkv = param_with_axes(
                self, "qkv_bias", nn.initializers.zeros, (3, H, K), (None, "heads", "kv")
            )
            qkv = qkv + b_qkv.reshape(1, -1)
        qkv = qkv.reshape(B, L, 3, H, K).transpose(2, 0, 3, 1, 4)  # 3 B H L K
        q_BHLK, k_BHLK, v_BHLK = qkv[0], qkv[1], qkv[2]
        if self.use_rope:
            q_BHLK = pos_lib.rope(q_BHLK, positions_BL, self.rope_base)
            k_BHLK = pos_lib.rope(k_BHLK, positions_BL, self.rope_base)
        if decode:
            k_BHLK, v_BHLK = self._update_cache(k_BHLK, v_BHLK, cache_index)
        q_BHLK = q_BHLK * (K**-0.5)
        scores = jnp.matmul(q_BHLK, k_BHLK.swapaxes(-1, -2))  # B H L Lk
        scores = jnp.where(mask, scores, NEG_INF)
        weights = jax.nn.softmax(scores, axis=-1)
        self.sow("intermediates", "attention_weights", weights)
        weights = nn.Dropout(self.dropout)(weights, deterministic=not train)
        out_BHLK = jnp.matmul(weights, v_BHLK)
        out = out_BHLK.transpose(0, 2, 1, 3).reshape(B * L, H * K)
        w_o = param_with_axes(
            self, "out_kernel", self.out_init, (H, K, D), ("heads", "kv", "embed")
        )
        y = jnp.dot(out, w_o.reshape(H * K, D))
        if self.use_bias:
            y = y + param_with_axes(self, "out_bias", nn.initializers.zeros, (D,), ("embed",))[None]
        return y.reshape(B, L, D)

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
