"""Dense KV caches for the decoder's ``decode=True`` mode.

A decoder with registers or a sink token (``model.config.num_prefix`` > 0) keeps their
keys and values in the cache's first slots. They depend on the parameters only, so
``prefix_cache`` computes them once (batch 1) and ``broadcast_cache`` copies them into
every fresh cache instead of recomputing them for each prompt.
"""

import jax
import jax.numpy as jnp


def init_cache(model, batch_size: int):
    """A zeroed ``cache`` collection for ``model`` (shapes from its config's max_len).

    A model with registers or a sink needs their keys and values in it before the first
    token: start from ``broadcast_cache(prefix_cache(model, params), batch_size)``.
    """

    def shapes():
        tokens = jnp.zeros((batch_size, 1), jnp.int32)
        return model.init(jax.random.PRNGKey(0), tokens, decode=True)["cache"]

    abstract = jax.eval_shape(shapes)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)


def prefix_cache(model, params):
    """A batch-1 cache holding the registers' and sink's keys/values (index 0).

    Returns the zeroed cache when the model has neither. Jit it (the ``Generator``
    does) and call it once per parameter state.
    """
    cache = init_cache(model, 1)
    if model.config.num_prefix == 0:
        return cache
    empty = jnp.zeros((1, 0), jnp.int32)
    _, updated = model.apply(
        {"params": params, "cache": cache}, empty, decode=True, fill_prefix=True, mutable=["cache"]
    )
    return updated["cache"]


def broadcast_cache(cache, batch_size: int):
    """``cache`` (batch 1) repeated over ``batch_size`` rows; the scalar index is kept."""

    def grow(x):
        return jnp.broadcast_to(x, (batch_size, *x.shape[1:])) if x.ndim else x

    return jax.tree_util.tree_map(grow, cache)
