"""Position encodings as pure functions: sinusoidal tables, rotary embeddings, T5 buckets.

RoPE: Su et al., 2021, https://arxiv.org/abs/2104.09864. Sinusoidal: Vaswani et al.,
2017, https://arxiv.org/abs/1706.03762. Relative position buckets: Raffel et al., 2020
(T5), https://arxiv.org/abs/1910.10683. Learned positions are an Embed in the model.
"""

import math

import jax.numpy as jnp

from nlpjax.types import Array, Float, Int


def sinusoidal(
    positions: Int[Array, "..."], d: int, base: float = 10000.0
) -> Float[Array, "... D"]:
    """Sin/cos position features of width ``d`` (even) for integer positions."""
    half = d // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None] * freqs.reshape((1,) * positions.ndim + (-1,))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def _angles(positions_BL, k: int, base: float):
    half = k // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BLk = positions_BL.astype(jnp.float32)[..., None] * freqs[None, None, :]
    return jnp.cos(angles_BLk), jnp.sin(angles_BLk)


def rope(
    x_BHLK: Float[Array, "B H L K"], positions_BL: Int[Array, "B L"], base: float = 10000.0
) -> Float[Array, "B H L K"]:
    """Rotates pairs (first half, second half) of the head dim by position-dependent angles."""
    cos_BLk, sin_BLk = _angles(positions_BL, x_BHLK.shape[-1], base)
    return _rotate(x_BHLK, cos_BLk[:, None], sin_BLk[:, None])  # B 1 L k


def rope_blhk(
    x_BLHK: Float[Array, "B L H K"], positions_BL: Int[Array, "B L"], base: float = 10000.0
) -> Float[Array, "B L H K"]:
    """``rope`` for the (B, L, H, K) layout of the fused attention kernels."""
    cos_BLk, sin_BLk = _angles(positions_BL, x_BLHK.shape[-1], base)
    return _rotate(x_BLHK, cos_BLk[:, :, None], sin_BLk[:, :, None])  # B L 1 k


def relative_position_bucket(
    relative_position: Int[Array, "..."],
    *,
    bidirectional: bool,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> Int[Array, "..."]:
    """T5's bucket of ``relative_position = key position - query position``.

    Bidirectional (encoder): half the buckets for keys after the query, half for keys at
    or before it. Causal (decoder): keys after the query all share bucket 0. Within a
    direction, distances below half its buckets get a bucket each; larger distances share
    logarithmically wider buckets up to ``max_distance``, beyond which all share the last.
    Computed in float32 as Hugging Face's ``T5Attention._relative_position_bucket`` does,
    so imported checkpoints bucket identically.
    """
    offset = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        offset = (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    ratio = jnp.maximum(distance, 1).astype(jnp.float32) / max_exact  # no log(0): masked
    log_bucket = jnp.log(ratio) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = jnp.minimum(max_exact + log_bucket.astype(distance.dtype), num_buckets - 1)
    return offset + jnp.where(distance < max_exact, distance, large)
