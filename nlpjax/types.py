"""Array aliases and the dimension-letter legend used in names and einsum strings.

Legend (DESIGN section 7): B batch, L length, S source length, T target length,
D model width, H heads, K head dim, F feed-forward width, V vocabulary, R registers,
E embedding dim (SGNS), N negatives, C window contexts. A name like ``logits_BLV``
is a (batch, length, vocab) array.
"""

from typing import Any

import jax
from jaxtyping import Array, Bool, Float, Int

PRNGKey = jax.Array
Params = Any  # a pytree of parameters
Batch = dict[str, Any]  # a dict of host or device arrays
Metrics = dict[str, Any]

__all__ = ["Array", "Batch", "Bool", "Float", "Int", "Metrics", "PRNGKey", "Params"]
