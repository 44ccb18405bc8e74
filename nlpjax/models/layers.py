"""Shared layers: Dense and Embed with logical axis names, norms, the MLP block.

Dense layers work on 2-D (tokens, features) matrices: XLA:CPU runs one large 2-D matmul
(and its weight gradient) much faster than the same contraction over (B, L, D).
Every layer stores parameters in ``param_dtype`` and computes in ``dtype`` (see
``nlpjax.precision``); norms compute their statistics in float32.
"""

from collections.abc import Callable
from typing import Any

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


def param_with_axes(
    module: nn.Module, name: str, init, shape, axes: tuple, dtype: Any = jnp.float32
) -> jax.Array:
    """A parameter of ``dtype`` annotated with logical axis names (mapped to mesh axes)."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class Dense(nn.Module):
    """``y = x @ W + b`` on the last axis, computed as one 2-D matmul.

    Attributes:
      features: output width.
      axes: logical names of the kernel's (in, out) axes.
      use_bias: add a bias vector.
      kernel_init: initializer of the kernel.
      dtype: compute dtype (inputs and parameters are cast to it).
      param_dtype: storage dtype of the parameters.
      out_dtype: dtype of the matmul result (None: ``dtype``); float32 for logits.
    """

    features: int
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    use_bias: bool = True
    kernel_init: Callable = default_kernel_init
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    out_dtype: Any = None

    @nn.compact
    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... F"]:
        d_in = x.shape[-1]
        kernel = param_with_axes(
            self, "kernel", self.kernel_init, (d_in, self.features), self.axes, self.param_dtype
        )
        x_ND = x.reshape(-1, d_in).astype(self.dtype)
        y = jnp.dot(x_ND, kernel.astype(self.dtype), preferred_element_type=self.out_dtype)
        if self.use_bias:
            bias = param_with_axes(
                self,
                "bias",
                nn.initializers.zeros,
                (self.features,),
                (self.axes[1],),
                self.param_dtype,
            )
            y = y + bias[None, :].astype(y.dtype)
        return y.reshape(*x.shape[:-1], self.features)


class Norm(nn.Module):
    """LayerNorm or RMSNorm, chosen by ``kind``; computed in float32, returned in ``dtype``."""

    kind: str = "layernorm"
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
        d = x.shape[-1]
        x_ND = x.reshape(-1, d).astype(jnp.float32)
        scale = param_with_axes(
            self, "scale", nn.initializers.ones, (d,), ("embed",), self.param_dtype
        )[None, :].astype(jnp.float32)
        if self.kind == "rmsnorm":
            var = jnp.mean(jnp.square(x_ND), axis=-1, keepdims=True)
            y_ND = x_ND * jax.lax.rsqrt(var + self.epsilon) * scale
            return y_ND.reshape(x.shape).astype(self.dtype)
        bias = param_with_axes(
            self, "bias", nn.initializers.zeros, (d,), ("embed",), self.param_dtype
        )[None, :].astype(jnp.float32)
        mean = jnp.mean(x_ND, axis=-1, keepdims=True)
        centered = x_ND - mean
        var = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
        y_ND = centered * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y_ND.reshape(x.shape).astype(self.dtype)


class MLP(nn.Module):
    """Two-layer feed-forward block: Dense(F) -> activation -> Dense(D)."""

    d_ff: int
    activation: str = "gelu_tanh"
    use_bias: bool = True
    out_init: Callable = default_kernel_init
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_ND: Float[Array, "N D"]) -> Float[Array, "N D"]:
        d = x_ND.shape[-1]
        types = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        h_NF = Dense(self.d_ff, ("embed", "mlp"), self.use_bias, name="wi", **types)(x_ND)
        h_NF = ACTIVATIONS[self.activation](h_NF)
        return Dense(d, ("mlp", "embed"), self.use_bias, self.out_init, name="wo", **types)(h_NF)
