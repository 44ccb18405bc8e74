"""float16 training: dynamic loss scaling (skip non-finite steps, halve, grow back)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nlpjax.api import build_run
from nlpjax.data.pipeline import stack_batches
from nlpjax.training.loss_scale import LossScaleState, dynamic_loss_scale
from nlpjax.training.step import make_multi_step, make_train_step


def test_scaling_unscales_skips_non_finite_steps_and_adapts_the_scale():
    params = {"w": jnp.array([1.0, 2.0])}
    tx = dynamic_loss_scale(optax.adam(0.1), init_scale=8.0, period=2)
    state = tx.init(params)
    grads = {"w": jnp.array([0.5, -0.25])}
    updates, state = tx.update(jax.tree_util.tree_map(lambda g: g * 8.0, grads), state, params)
    expected, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)
    assert (float(state.scale), int(state.good_steps)) == (8.0, 1)
    inner_before = state.inner
    updates, state = tx.update({"w": jnp.array([jnp.inf, 1.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], [0.0, 0.0])  # overflow: the step is skipped
    assert (float(state.scale), int(state.good_steps)) == (4.0, 0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.inner, inner_before)
    for _ in range(2):  # `period` finite steps in a row double the scale
        _, state = tx.update({"w": jnp.array([4.0, 4.0])}, state, params)
    assert (float(state.scale), int(state.good_steps)) == (8.0, 0)


@pytest.fixture(scope="module")
def float16_and_float32_losses(tiny_config_module):
    out = {}
    for dtype in ("float16", "float32"):
        run = build_run(tiny_config_module(model__dtype=dtype), None)
        it = run.task.train_iterator()
        batches = stack_batches([next(it) for _ in range(5)])
        initial = np.asarray(run.state.params["embedding"])
        multi = make_multi_step(make_train_step(run.task, run.tx, run.schedule))
        state, metrics = multi(run.state, batches)  # donates run.state
        out[dtype] = (initial, state, metrics)
    return out


@pytest.fixture(scope="module")
def tiny_config_module():
    from nlpjax.api import load_config
    from tests.conftest import TINY

    return lambda **kw: load_config(TINY, {k.replace("__", "."): str(v) for k, v in kw.items()})


def test_float16_runs_train_with_a_loss_scale_and_float32_master_weights(
    float16_and_float32_losses,
):
    initial16, state16, m16 = float16_and_float32_losses["float16"]
    run32, state32, m32 = float16_and_float32_losses["float32"]
    assert isinstance(state16.opt_state, LossScaleState)
    assert not isinstance(state32.opt_state, LossScaleState)  # only float16 is scaled
    assert "loss_scale" in m16 and "loss_scale" not in m32
    np.testing.assert_array_equal(m16["loss_scale"], 2.0**15)
    leaves = jax.tree_util.tree_leaves(state16.params)
    assert {x.dtype for x in leaves} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=5e-3)  # unscaled losses
    np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=5e-2)
    moved = np.asarray(state16.params["embedding"]) - initial16
    assert float(jnp.abs(moved).max()) > 0  # the updates were applied, not skipped
