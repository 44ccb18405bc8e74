"""Dynamic loss scaling for float16 compute, as an optax transformation around the optimizer.

float16 has 5 exponent bits: gradients of an unscaled loss underflow to zero. The train
step multiplies the loss by ``scale`` before differentiating (``make_train_step`` does
this when the optimizer state is a ``LossScaleState``); this transformation divides the
gradients by ``scale``, and if any is not finite skips the update (parameters and the
inner optimizer state stay as they were) and halves ``scale``; after ``period``
finite steps in a row it doubles ``scale``. The scale lives in the optimizer state, so
it is checkpointed and resumes exactly. bfloat16 and float32 runs do not use it.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LossScaleState(NamedTuple):
    scale: jax.Array  # float32 scalar: the loss is multiplied by it
    good_steps: jax.Array  # int32: finite steps since the scale last changed
    inner: optax.OptState


def dynamic_loss_scale(
    inner: optax.GradientTransformation,
    init_scale: float = 2.0**15,
    period: int = 2000,
    factor: float = 2.0,
    min_scale: float = 1.0,
) -> optax.GradientTransformation:
    """Wraps ``inner``: its ``update`` takes gradients of ``loss * state.scale``."""

    def init(params):
        return LossScaleState(
            jnp.asarray(init_scale, jnp.float32), jnp.zeros((), jnp.int32), inner.init(params)
        )

    def update(scaled_grads, state: LossScaleState, params=None):
        grads = jax.tree_util.tree_map(lambda g: g / state.scale.astype(g.dtype), scaled_grads)
        finite = jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)])
        )
        updates, new_inner = inner.update(grads, state.inner, params)
        updates = jax.tree_util.tree_map(lambda u: jnp.where(finite, u, 0).astype(u.dtype), updates)
        new_inner = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), new_inner, state.inner
        )
        grow = finite & (state.good_steps + 1 >= period)
        scale = jnp.where(
            finite,
            jnp.where(grow, state.scale * factor, state.scale),
            jnp.maximum(state.scale / factor, min_scale),
        )
        good_steps = jnp.where(finite & ~grow, state.good_steps + 1, 0).astype(jnp.int32)
        return updates, LossScaleState(scale, good_steps, new_inner)

    return optax.GradientTransformation(init, update)
