"""TrainState: everything a run carries from step to step (and checkpoints)."""

from typing import Any

import flax.struct
import jax
import numpy as np


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


# -- keys made on the host ----------------------------------------------------------------

_MASK = 0xFFFFFFFF
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(key: tuple[int, int], x: tuple[int, int]) -> tuple[int, int]:
    """Threefry-2x32 (20 rounds, Salmon et al. 2011) of one pair of words, as jax's
    default PRNG computes it."""
    ks = (key[0], key[1], key[0] ^ key[1] ^ 0x1BD11BDA)
    x0, x1 = (x[0] + ks[0]) & _MASK, (x[1] + ks[1]) & _MASK
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = (x0 + x1) & _MASK
            x1 = ((x1 << r) | (x1 >> (32 - r))) & _MASK
            x1 ^= x0
        x0 = (x0 + ks[(i + 1) % 3]) & _MASK
        x1 = (x1 + ks[(i + 2) % 3] + i + 1) & _MASK
    return x0, x1


def seed_key(seed: int, data: int) -> jax.Array:
    """``fold_in(PRNGKey(seed), data)`` (raw uint32[2] key) computed on the host.

    Bitwise jax's key (test: tests/test_train_state.py), without the two small programs
    jax compiles to make it on the device, which a command's first run would otherwise
    compile on its way to the first step. With another default PRNG implementation
    (``jax_default_prng_impl``), typed keys (``jax_enable_custom_prng``), a seed outside
    0 .. 2**31 - 1 or data outside 0 .. 2**32 - 1, jax makes it.
    """
    config = jax.config
    if (
        config.jax_default_prng_impl != "threefry2x32"
        or config.jax_enable_custom_prng
        or not 0 <= seed < 2**31
        or not 0 <= data < 2**32
    ):
        return jax.random.fold_in(jax.random.PRNGKey(seed), data)
    words = _threefry2x32((0, seed), (0, int(data)))
    return jax.device_put(np.array(words, np.uint32))
