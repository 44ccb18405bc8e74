"""Dense KV caches for the decoder's ``decode=True`` mode."""

import jax
import jax.numpy as jnp


def init_cache(model, batch_size: int):
    """A zeroed ``cache`` collection for ``model`` (shapes from its config's max_len)."""

    def shapes():
        tokens = jnp.zeros((batch_size, 1), jnp.int32)
        return model.init(jax.random.PRNGKey(0), tokens, decode=True)["cache"]

    abstract = jax.eval_shape(shapes)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
