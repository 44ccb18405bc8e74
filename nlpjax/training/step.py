"""Pure train and eval steps built from a Task, and their jitted multi-step drivers.

Several training steps run per dispatch: ``lax.scan`` over a stack of batches removes
per-step Python and dispatch overhead, which matters for small models (see
benchmarks/README.md). The scanned function is exactly the single step, so results do
not depend on how many steps are fused.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from nlpjax.tasks.base import Task
from nlpjax.training.state import TrainState


def make_train_step(
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    axis_name: str | None = None,
):
    """Returns ``train_step(state, batch) -> (state, metrics)`` (pure, unjitted).

    With ``axis_name`` (pmap), gradients and metrics are averaged over that axis and
    each device draws its own randomness.
    """

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        grad_fn = jax.value_and_grad(task.loss, has_aux=True)
        (loss, (metrics, carry)), grads = grad_fn(state.params, state.carry, batch, rng, True)
        if axis_name is not None:
            grads, loss, metrics = jax.lax.pmean((grads, loss, metrics), axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state.step),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, carry=carry
        )
        return new_state, metrics

    return train_step


def scan_steps(train_step: Callable) -> Callable:
    """``multi_step(state, batches)``: ``lax.scan`` of the step over a leading steps axis."""

    def multi_step(state, batches):
        return jax.lax.scan(train_step, state, batches)

    return multi_step


def make_multi_step(train_step: Callable, **jit_kwargs) -> Callable:
    """Single-device jit of ``scan_steps(train_step)`` with the state donated."""
    return jax.jit(scan_steps(train_step), donate_argnums=0, **jit_kwargs)


def make_eval_fn(task: Task, **jit_kwargs) -> Callable:
    """jit(params, stacked batches) -> weighted-mean metrics over all batches."""

    def eval_fn(params, batches):
        def one(_, batch):
            loss, (metrics, _carry) = task.loss(params, task.init_carry(), batch, None, False)
            weight = metrics.get("weight", jnp.asarray(1.0))
            summed = {k: v * weight for k, v in metrics.items() if k != "weight"}
            summed["loss"] = loss * weight
            summed["weight"] = weight
            return None, summed

        _, per_batch = jax.lax.scan(one, None, batches)
        totals = jax.tree_util.tree_map(jnp.sum, per_batch)
        weight = totals.pop("weight")
        return {k: v / weight for k, v in totals.items()} | {"weight": weight}

    return jax.jit(eval_fn, **jit_kwargs)
