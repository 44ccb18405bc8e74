"""TrainState: everything a run carries from step to step (and checkpoints)."""

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Step counter, parameters, optimizer state, base RNG and task carry.

    ``rng`` is the run's base key; step ``s`` uses ``fold_in(rng, s)``, so randomness
    depends only on (seed, step) and a resumed run repeats it exactly. ``carry`` holds
    task state threaded through steps (e.g. RNN hidden state), empty for most tasks.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    carry: Any


def count_params(params: Any) -> int:
    """Number of parameters (scalars) in a tree of arrays or abstract arrays."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
