"""Position encodings as pure functions: sinusoidal tables and rotary embeddings.

RoPE: Su et al., 2021, https://arxiv.org/abs/2104.09864. Sinusoidal: Vaswani et al.,
2017, https://arxiv.org/abs/1706.03762. Learned positions are an Embed in the model.
"""

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


def rope(
    x_BHLK: Float[Array, "B H L K"], positions_BL: Int[Array, "B L"], base: float = 10000.0
) -> Float[Array, "B H L K"]:
    """Rotates pairs (first half, second half) of the head dim by position-dependent angles."""
    k = x_BHLK.shape[-1]
    half = k // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BLk = positions_BL.astype(jnp.float32)[..., None] * freqs[None, None, :]
    cos = jnp.cos(angles_BLk)[:, None]  # B 1 L k
    sin = jnp.sin(angles_BLk)[:, None]
    x1, x2 = x_BHLK[..., :half], x_BHLK[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x_BHLK.dtype)
