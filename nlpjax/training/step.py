"""Pure train and eval steps built from a Task, and their jitted multi-step drivers.

Several training steps run per dispatch: ``lax.scan`` over a stack of batches removes
per-step Python and dispatch overhead, which matters for small models (see
benchmarks/README.md). The scanned function is exactly the single step, so results do
not depend on how many steps are fused. With ``microbatches=k`` (gradient
accumulation) a step splits its batch into k equal parts, runs them one after the other
under ``lax.scan`` and averages their gradients (weighted by each part's ``weight``
metric) before the one optimizer update: the same update as the whole batch at once,
with the activation memory of one part.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from nlpjax.errors import ConfigError
from nlpjax.tasks.base import Task
from nlpjax.training.loss_scale import LossScaleState
from nlpjax.training.state import TrainState


def check_microbatches(batch_size: int, data_parallel: int, microbatches: int) -> None:
    """Each device's share of the batch must split into ``microbatches`` equal parts."""
    if batch_size % (data_parallel * microbatches):
        raise ConfigError(
            f"data.batch_size={batch_size} cannot be split into train.microbatches="
            f"{microbatches} equal parts on each of {data_parallel} data-parallel devices: "
            f"use a batch size that is a multiple of {data_parallel * microbatches}, or "
            "another train.microbatches"
        )


def split_microbatches(batch, k: int):
    """(N, ...) leaves -> (k, N / k, ...): part j holds rows j, j + k, j + 2k, ...

    Interleaved rows keep each device's shard of the batch axis on that device.
    """

    def split(x):
        n = x.shape[0]
        if n % k:
            raise ConfigError(
                f"a batch of {n} examples cannot be split into train.microbatches={k} equal "
                "parts; choose a divisor of data.batch_size (per device with pmap)"
            )
        return x.reshape(n // k, k, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree_util.tree_map(split, batch)


def accumulate_gradients(grad_fn: Callable, params, carry, batch, rng, k: int):
    """``grad_fn`` over k microbatches in sequence; weighted means of loss, metrics, grads.

    Args:
      grad_fn: ``value_and_grad(task.loss, has_aux=True)``.
      params, carry, batch, rng: as for ``task.loss`` (``batch`` is the whole batch).
      k: number of microbatches.

    Returns:
      ``((loss, (metrics, carry)), grads)`` like ``grad_fn`` on the whole batch;
      ``metrics["weight"]`` is the total weight.
    """
    parts = split_microbatches(batch, k)
    first = jax.tree_util.tree_map(lambda x: x[0], parts)
    shapes = jax.eval_shape(lambda p, c, b, r: grad_fn(p, c, b, r, True), params, carry, first, rng)
    (_, (metrics_shape, _)), grads_shape = shapes
    zeros = jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype), (metrics_shape, grads_shape)
    )

    def one(acc, xs):
        i, part = xs
        carry, loss_sum, metric_sums, grad_sums, weight_sum = acc
        part_rng = None if rng is None else jax.random.fold_in(rng, i)
        (loss, (metrics, carry)), grads = grad_fn(params, carry, part, part_rng, True)
        w = metrics.get("weight", jnp.asarray(1.0, jnp.float32))
        metric_sums = jax.tree_util.tree_map(lambda s, m: s + w * m, metric_sums, metrics)
        grad_sums = jax.tree_util.tree_map(
            lambda s, g: s + (w * g).astype(s.dtype), grad_sums, grads
        )
        return (carry, loss_sum + w * loss, metric_sums, grad_sums, weight_sum + w), None

    init = (carry, jnp.zeros((), jnp.float32), *zeros, jnp.zeros((), jnp.float32))
    (carry, loss_sum, metric_sums, grad_sums, total), _ = jax.lax.scan(
        one, init, (jnp.arange(k), parts)
    )
    metrics = jax.tree_util.tree_map(lambda s: s / total, metric_sums)
    if "weight" in metrics:
        metrics["weight"] = total
    grads = jax.tree_util.tree_map(lambda g: (g / total).astype(g.dtype), grad_sums)
    return (loss_sum / total, (metrics, carry)), grads


def make_train_step(
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    axis_name: str | None = None,
    microbatches: int = 1,
):
    """Returns ``train_step(state, batch) -> (state, metrics)`` (pure, unjitted).

    With ``axis_name`` (pmap), gradients and metrics are averaged over that axis and
    each device draws its own randomness. With ``microbatches=k > 1`` the batch is split
    into k sequential parts (gradient accumulation, ``accumulate_gradients``). When the
    optimizer state is a ``LossScaleState`` (float16), the loss is multiplied by its
    scale before differentiating; the optimizer unscales (``loss_scale.py``).
    """

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        scaled = isinstance(state.opt_state, LossScaleState)
        scale = state.opt_state.scale if scaled else None
        loss_fn = _scaled_loss(task.loss, scale) if scaled else task.loss
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        if microbatches == 1:
            (loss, (metrics, carry)), grads = grad_fn(state.params, state.carry, batch, rng, True)
        else:
            (loss, (metrics, carry)), grads = accumulate_gradients(
                grad_fn, state.params, state.carry, batch, rng, microbatches
            )
        if axis_name is not None:
            grads, loss, metrics = jax.lax.pmean((grads, loss, metrics), axis_name)
        grad_norm = optax.tree.norm(grads)
        if scaled:  # report the loss and gradient norm of the unscaled loss
            loss, grad_norm = loss / scale, grad_norm / scale
            metrics = {**metrics, "loss_scale": scale}
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": schedule(state.step),
        }
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, carry=carry
        )
        return new_state, metrics

    return train_step


def _scaled_loss(loss_fn: Callable, scale: jax.Array) -> Callable:
    """``loss_fn`` with its loss multiplied by ``scale`` (aux unchanged)."""

    def scaled(*args):
        loss, aux = loss_fn(*args)
        return loss * scale, aux

    return scaled


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
