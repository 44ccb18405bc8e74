"""Shared layers: Dense and Embed with logical axis names, norms, the MLP block.

Dense layers work on 2-D (tokens, features) matrices: XLA:CPU runs one large 2-D matmul
(and its weight gradient) much faster than the same contraction over (B, L, D).
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from nlpjax.types import Array, Float

default_kernel_init = nn.initializers.normal(stddev=0.02)

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def param_with_axes(module: nn.Module, name: str, init, shape, axes: tuple) -> jax.Array:
    """A parameter annotated with logical axis names (mapped to mesh axes elsewhere)."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape)


class Dense(nn.Module):
    """``y = x @ W + b`` on the last axis, computed as one 2-D matmul.

    Attributes:
      features: output width.
      axes: logical names of the kernel's (in, out) axes.
      use_bias: add a bias vector.
    """

    features: int
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    use_bias: bool = True
    kernel_init: Callable = default_kernel_init

    @nn.compact
    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... F"]:
        d_in = x.shape[-1]
        kernel = param_with_axes(self, "kernel", self.kernel_init, (d_in, self.features), self.axes)
        y = jnp.dot(x.reshape(-1, d_in), kernel)
        if self.use_bias:
            bias = param_with_axes(
                self, "bias", nn.initializers.zeros, (self.features,), (self.axes[1],)
            )
            y = y + bias[None, :]
        return y.reshape(*x.shape[:-1], self.features)


class Norm(nn.Module):
    """LayerNorm or RMSNorm, chosen by ``kind``."""

    kind: str = "layernorm"
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
        d = x.shape[-1]
        x_ND = x.reshape(-1, d)
        scale = param_with_axes(self, "scale", nn.initializers.ones, (d,), ("embed",))[None, :]
        if self.kind == "rmsnorm":
            var = jnp.mean(jnp.square(x_ND), axis=-1, keepdims=True)
            return (x_ND * jax.lax.rsqrt(var + self.epsilon) * scale).reshape(x.shape)
        bias = param_with_axes(self, "bias", nn.initializers.zeros, (d,), ("embed",))[None, :]
        mean = jnp.mean(x_ND, axis=-1, keepdims=True)
        centered = x_ND - mean
        var = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
        return (centered * jax.lax.rsqrt(var + self.epsilon) * scale + bias).reshape(x.shape)


class MLP(nn.Module):
    """Two-layer feed-forward block: Dense(F) -> activation -> Dense(D)."""

    d_ff: int
    activation: str = "gelu_tanh"
    use_bias: bool = True
    out_init: Callable = default_kernel_init

    @nn.compact
    def __call__(self, x_ND: Float[Array, "N D"]) -> Float[Array, "N D"]:
        d = x_ND.shape[-1]
        h_NF = Dense(self.d_ff, ("embed", "mlp"), self.use_bias, name="wi")(x_ND)
        h_NF = ACTIVATIONS[self.activation](h_NF)
        return Dense(d, ("mlp", "embed"), self.use_bias, self.out_init, name="wo")(h_NF)
