"""Mixed-precision policy: named compute dtypes and the ``auto`` choice per backend.

Parameters are stored in ``param_dtype`` (float32 by default: the optimizer updates and
checkpoints float32 master weights) and cast to the compute ``dtype`` where they are
used. Norm statistics, softmax and the logits fed to the loss are float32 whatever the
compute dtype; the residual stream between blocks is float32 too (see README, "Mixed
precision and fused attention").
"""

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
RESIDUAL_DTYPE = jnp.float32


def resolve_dtype(name: str, backend: str | None = None) -> jnp.dtype:
    """``auto`` is bfloat16 on GPU/TPU and float32 on CPU; other names map directly.

    Args:
      name: one of ``DTYPE_CHOICES``.
      backend: jax backend name; default ``jax.default_backend()``.
    """
    if name == "auto":
        backend = backend or jax.default_backend()
        return jnp.dtype(jnp.float32 if backend == "cpu" else jnp.bfloat16)
    return jnp.dtype(DTYPES[name])


def f32_accumulation(dtype) -> jnp.dtype | None:
    """``preferred_element_type`` for a matmul whose result must be float32.

    None for float32 inputs, so the float32 path runs exactly the same ops as before
    mixed precision existed.
    """
    return None if jnp.dtype(dtype) == jnp.float32 else jnp.dtype(jnp.float32)
