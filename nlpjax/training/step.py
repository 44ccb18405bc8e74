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
from flax import traverse_util

from nlpjax.errors import ConfigError
from nlpjax.tasks.base import Rows, Task
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
      params, carry, batch, rng: as for ``task.loss`` (``batch`` is the whole batch; the
        carry's leading axis is the batch, so it is split into parts like the batch and
        put back together in the same order).
      k: number of microbatches.

    Returns:
      ``((loss, (metrics, carry)), grads)`` like ``grad_fn`` on the whole batch;
      ``metrics["weight"]`` is the total weight.
    """
    parts = split_microbatches(batch, k)
    carries = split_microbatches(carry, k)
    first = jax.tree_util.tree_map(lambda x: x[0], (parts, carries))
    shapes = jax.eval_shape(
        lambda p, c, b, r: grad_fn(p, c, b, r, True), params, first[1], first[0], rng
    )
    (_, (metrics_shape, _)), grads_shape = shapes
    zeros = jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype), (metrics_shape, grads_shape)
    )

    def one(acc, xs):
        i, part, part_carry = xs
        loss_sum, metric_sums, grad_sums, weight_sum = acc
        part_rng = None if rng is None else jax.random.fold_in(rng, i)
        (loss, (metrics, part_carry)), grads = grad_fn(params, part_carry, part, part_rng, True)
        w = metrics.get("weight", jnp.asarray(1.0, jnp.float32))
        metric_sums = jax.tree_util.tree_map(lambda s, m: s + w * m, metric_sums, metrics)
        grad_sums = jax.tree_util.tree_map(
            lambda s, g: s + (w * g).astype(s.dtype), grad_sums, grads
        )
        return (loss_sum + w * loss, metric_sums, grad_sums, weight_sum + w), part_carry

    init = (jnp.zeros((), jnp.float32), *zeros, jnp.zeros((), jnp.float32))
    (loss_sum, metric_sums, grad_sums, total), new_carries = jax.lax.scan(
        one, init, (jnp.arange(k), parts, carries)
    )
    metrics = jax.tree_util.tree_map(lambda s: s / total, metric_sums)
    if "weight" in metrics:
        metrics["weight"] = total
    grads = jax.tree_util.tree_map(lambda g: (g / total).astype(g.dtype), grad_sums)
    return (loss_sum / total, (metrics, merge_microbatches(new_carries))), grads


def merge_microbatches(parts):
    """The inverse of ``split_microbatches``: (k, N / k, ...) -> (N, ...)."""

    def merge(x):
        return x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    return jax.tree_util.tree_map(merge, parts)


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

    The task's optional hooks (``tasks/base.py``) change two parts: with ``sparse_rows``
    the loss is differentiated with respect to the gathered rows (``sparse_gradients``),
    and ``apply_update`` replaces the optax update.
    """
    sparse = getattr(task, "sparse_rows", None) is not None
    apply_update = getattr(task, "apply_update", None)
    if sparse and apply_update is None:
        raise TypeError(f"{type(task).__name__} has sparse_rows but no apply_update")
    if sparse and microbatches > 1:
        raise ConfigError(
            f"train.microbatches={microbatches}: the {type(task).__name__} task updates "
            "sparse rows, whose gradients cannot be accumulated over microbatches; use "
            "train.microbatches=1"
        )
    if apply_update is None:

        def apply_update(params, grads, opt_state, _batch):
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        scaled = isinstance(state.opt_state, LossScaleState)
        scale = state.opt_state.scale if scaled else None
        loss_fn = _scaled_loss(task.loss, scale) if scaled else task.loss
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        if sparse:
            (loss, (metrics, carry)), grads = sparse_gradients(
                loss_fn, task.sparse_rows(batch, rng), state.params, state.carry, batch, rng
            )
        elif microbatches == 1:
            (loss, (metrics, carry)), grads = grad_fn(state.params, state.carry, batch, rng, True)
        else:
            (loss, (metrics, carry)), grads = accumulate_gradients(
                grad_fn, state.params, state.carry, batch, rng, microbatches
            )
        if axis_name is not None:
            loss, metrics, grads = mean_over_devices(loss, metrics, grads, axis_name)
            if sparse:  # the update reads the ids of every device's batch
                batch = jax.lax.all_gather(batch, axis_name, tiled=True)
        grad_norm = optax.tree.norm(_dense_values(grads))
        if scaled:  # report the loss and gradient norm of the unscaled loss
            loss, grad_norm = loss / scale, grad_norm / scale
            metrics = {**metrics, "loss_scale": scale}
        params, opt_state = apply_update(state.params, grads, state.opt_state, batch)
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


def sparse_gradients(loss_fn: Callable, index: dict, params, carry, batch, rng):
    """``value_and_grad`` of ``loss_fn`` with respect to the rows ``index`` names (and to
    every other parameter as usual).

    Returns ``((loss, (metrics, carry)), grads)`` where ``grads`` has the params' tree
    with ``Rows(ids, d loss / d table[ids])`` at the paths of ``index``: the cost grows
    with the number of rows read, not with the size of the table.
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    rows = {path: jnp.take(flat[path], ids, axis=0) for path, ids in index.items()}
    dense = {path: v for path, v in flat.items() if path not in index}

    def loss_of(dense, rows):
        view = {**dense, **{path: Rows(index[path], v) for path, v in rows.items()}}
        return loss_fn(traverse_util.unflatten_dict(view, sep="/"), carry, batch, rng, True)

    value, (dense_grads, row_grads) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(
        dense, rows
    )
    grads = {**dense_grads, **{path: Rows(index[path], g) for path, g in row_grads.items()}}
    return value, traverse_util.unflatten_dict(grads, sep="/")


def mean_over_devices(loss, metrics: dict, grads, axis_name: str):
    """The loss, metrics and gradients of the whole batch from each device's part (pmap).

    Each device's numbers are weighted by its share of ``metrics["weight"]`` (tokens that
    carry loss), so the result is the weighted mean over the whole batch, as in jit mode,
    also when devices count different tokens (loss weights, padding); the weight itself
    becomes the total. ``Rows`` are gathered from every device (their ids differ per
    device), their values scaled by the same share.
    """
    weight = metrics.get("weight", jnp.asarray(1.0, jnp.float32))
    total = jax.lax.psum(weight, axis_name)
    share = weight / total

    def one(g):
        if isinstance(g, Rows):
            return Rows(
                jax.lax.all_gather(g.ids, axis_name, tiled=True),
                jax.lax.all_gather(g.values * share.astype(g.values.dtype), axis_name, tiled=True),
            )
        return jax.lax.psum(g * share.astype(g.dtype), axis_name)

    grads = jax.tree_util.tree_map(one, grads, is_leaf=lambda x: isinstance(x, Rows))
    loss, metrics = jax.lax.psum(
        jax.tree_util.tree_map(lambda x: x * share, (loss, metrics)), axis_name
    )
    if "weight" in metrics:
        metrics["weight"] = total
    return loss, metrics, grads


def _dense_values(grads):
    """The gradient tree with each ``Rows`` replaced by its values (for the norm)."""
    return jax.tree_util.tree_map(
        lambda g: g.values if isinstance(g, Rows) else g,
        grads,
        is_leaf=lambda x: isinstance(x, Rows),
    )


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


def scan_masked_steps(train_step: Callable) -> Callable:
    """``multi_step(state, batches, active)``: as ``scan_steps``, but step i runs only where
    ``active[i]`` (a bool per step); inactive steps leave the state alone and report zero
    metrics. Dispatches of fewer equal-shaped batches than the scan length are padded
    with inactive steps, so each batch shape compiles once whatever the run length."""

    def multi_step(state, batches, active):
        first = jax.tree_util.tree_map(lambda x: x[0], batches)
        metrics_shape = jax.eval_shape(train_step, state, first)[1]

        def skip(state, _batch):
            zeros = jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, m.dtype), metrics_shape)
            return state, zeros

        def one(state, xs):
            batch, on = xs
            return jax.lax.cond(on, train_step, skip, state, batch)

        return jax.lax.scan(one, state, (batches, active))

    return multi_step


def make_multi_step(train_step: Callable, **jit_kwargs) -> Callable:
    """Single-device jit of ``scan_steps(train_step)`` with the state donated."""
    return jax.jit(scan_steps(train_step), donate_argnums=0, **jit_kwargs)
