"""Keys made on the host (``state.seed_key``) against jax's own."""

import jax
import numpy as np
import pytest

from nlpjax.training.state import seed_key


@pytest.mark.parametrize("seed", [0, 1, 42, 123_456_789, 2**31 - 1])
@pytest.mark.parametrize("data", [0, 1, 7, 2390, 2**31, 2**32 - 1])
def test_seed_key_is_jaxs_fold_in_of_prngkey(seed, data):
    want = jax.random.fold_in(jax.random.PRNGKey(seed), data)
    got = seed_key(seed, data)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_seed_key_outside_the_host_range_is_made_by_jax():
    want = jax.random.fold_in(jax.random.PRNGKey(-5), 3)
    np.testing.assert_array_equal(np.asarray(seed_key(-5, 3)), np.asarray(want))


def test_seed_key_outside_the_host_path_behaves_as_jax():
    for data in (-1, 2**32):  # jax refuses data outside uint32; so does seed_key
        with pytest.raises(OverflowError):
            jax.random.fold_in(jax.random.PRNGKey(1), data)
        with pytest.raises(OverflowError):
            seed_key(1, data)
    previous = jax.config.jax_enable_custom_prng
    jax.config.update("jax_enable_custom_prng", True)  # typed keys: jax's own
    try:
        want, got = jax.random.fold_in(jax.random.PRNGKey(1), 3), seed_key(1, 3)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    finally:
        jax.config.update("jax_enable_custom_prng", previous)
