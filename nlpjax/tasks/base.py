"""The Task interface: the only thing the training loop knows about a model family.

A task ties a model, its data, its loss and its evaluation together. The loop, the
checkpointing, the CLI and the step builders use nothing else, so adding a model family
means adding a task (plus its model and configs) without touching them. A task class is
registered by name in ``nlpjax.TASKS`` (``nlpjax.register_task``); the faces (CLI and
``nlpjax.api``) look it up and pass it to the config loader and the loop, which never
import a family.

Version 2 of the interface adds optional hooks, each with the previous behaviour as its
default, so a task written against version 1 keeps working:

- ``evaluate(params, extras, rng, split)``: the task's own evaluation (default: the
  weighted loss average over ``eval_batches`` followed by ``eval_summary``;
  ``make_loss_average`` is that average as a jittable function for tasks that want it
  next to other numbers);
- ``make_optimizer(config)`` and ``apply_update(params, grads, opt_state, batch)``: the
  task's own optimizer, schedule and update rule (default: ``optim.make_tx`` and
  ``tx.update`` + ``optax.apply_updates``);
- ``sparse_rows(batch, rng)``: tables whose gradient touches only the rows a batch reads
  (the loss sees ``Rows`` there, and gradients come back as ``Rows``);
- ``batch_spec()``: one global training batch as ``{name: jax.ShapeDtypeStruct}``, for
  a task whose config decides its batch shape; the loop then compiles the training step
  in a background thread while the host reads the data (default: compiled at the first
  dispatch);
- ``host_init(seed)``: the initial params as host (numpy) arrays, for a task whose
  params are large, simply filled tables (word2vec's): the trainer makes the whole initial
  state on the host and places it instead of compiling a jitted ``init`` (default:
  ``init`` under ``jax.jit``);
- a carry with a batch axis: ``init_carry`` leaves boxed with logical names whose first is
  ``"batch"`` (``carry_leaf``); the loop shards them with the batch, splits them per device
  under pmap, checkpoints them whole and threads them through consecutive batches.
"""

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import flax.linen as nn
import flax.struct
import grain
import jax
import jax.numpy as jnp
from flax import traverse_util

from nlpjax.config import Config
from nlpjax.errors import ConfigError
from nlpjax.types import Batch, Metrics, Params, PRNGKey

CARRY_BATCH_AXIS = "batch"


class Task(Protocol):
    """What a model family provides to the shared trainer.

    Attributes:
      model_config_cls: frozen dataclass for the ``model`` config section.
      data_config_cls: frozen dataclass for the ``data`` config section.
      config: the resolved config, with data-derived values (e.g. vocab size) filled in.
    """

    model_config_cls: ClassVar[type]
    data_config_cls: ClassVar[type]
    config: Config

    def init(self, rng: PRNGKey) -> Any:
        """Returns initial variables (params possibly boxed with logical axis names)."""

    def init_carry(self) -> Any:
        """Task state threaded through consecutive batches ({} when none).

        Every leaf is a ``carry_leaf(value)``: its leading axis is the global batch
        (``global_batch_size()`` rows, row i belonging to batch row i) and it carries the
        logical name ``"batch"`` there, so the loop shards it like the batch. Anything
        else is refused at start-up, naming the leaf.
        """

    def loss(
        self, params: Params, carry: Any, batch: Batch, rng: PRNGKey, train: bool
    ) -> tuple[Any, tuple[Metrics, Any]]:
        """Pure, jittable: (scalar loss, (metrics, new carry)).

        Metrics may include ``"weight"`` (tokens counted) for weighted averaging.
        """

    def train_iterator(self) -> grain.DatasetIterator:
        """A checkpointable iterator of host (numpy) training batches."""

    def eval_batches(self, split: str = "validation") -> Batch:
        """Fixed evaluation batches stacked on a leading axis (num_batches, ...).

        Used by the default evaluation (a loss average); a task with its own ``evaluate``
        may not need it."""

    def eval_summary(self, metrics: Metrics) -> Metrics:
        """Turns averaged eval metrics into the numbers to report (e.g. perplexity)."""

    # -- optional hooks (version 2); the trainer's defaults apply when a task has none ----

    def evaluate(
        self, params: Params, extras: dict, rng: PRNGKey, split: str = "validation"
    ) -> dict[str, float]:
        """The numbers to report for ``params`` on ``split`` (loss, BLEU, similarity,
        probes...). ``extras`` holds ``{"carry": the training carry, "step": int}``; ``rng``
        is the same for the same step, so sampled evaluations repeat exactly. Default: the
        loss average of ``make_loss_average`` over ``eval_batches(split)``, then
        ``eval_summary``."""

    def make_optimizer(self, config: Config) -> tuple[Any, Callable]:
        """(optax.GradientTransformation, learning-rate schedule) for ``config``; the
        schedule is logged as ``train/lr``. Default: ``training.optim.make_tx``."""

    def apply_update(
        self, params: Params, grads: Any, opt_state: Any, batch: Batch
    ) -> tuple[Params, Any]:
        """(new params, new optimizer state) from ``grads`` (which hold ``Rows`` at the
        ``sparse_rows`` paths). Default: ``tx.update`` then ``optax.apply_updates``; a task
        with ``sparse_rows`` must define it."""

    def sparse_rows(self, batch: Batch, rng: PRNGKey) -> dict[str, Any]:
        """``{"path/to/table": ids}``: the rows of each named table (a ``/``-joined path in
        ``params``) that the loss reads for ``batch``; the loss then receives
        ``Rows(ids, table[ids])`` there and its gradient is ``Rows(ids, d loss / d values)``,
        so no step costs a table-sized gradient. ``rng`` is the loss's own key."""

    def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
        """One global training batch's arrays (shape and dtype), known from the config
        alone; the loop compiles its step from it before the first batch is read. A task
        whose batch shapes depend on the data leaves it out."""

    def host_init(self, seed: int) -> Params:
        """``init``'s params (unboxed: the same tree, shapes and dtypes) as host arrays
        drawn from ``seed``. The trainer makes the rest of the state around them on the host
        (``run.host_state``: the optimizer's ``init`` and ``init_carry`` should make numpy
        arrays too, the carry's inside its ``carry_leaf`` boxes) and places it with the
        state's shardings, so no init is compiled."""

    def global_batch_size(self) -> int:
        """Examples per training step over all hosts (must split over data parallelism)."""

    def tokens_per_batch(self) -> int:
        """Tokens processed per training batch (for throughput)."""

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), for MFU."""

    def compute_dtype(self) -> str:
        """The dtype the model computes in (e.g. ``"bfloat16"``), for the MFU peak."""

    def save_assets(self, directory: str) -> None:
        """Writes what eval/generate need beyond params (e.g. the vocabulary)."""

    def model_signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be restored into this task."""

    # -- faces (CLI and nlpjax.api): optional for a task that has no text to show ----------

    def generator(self, params: Params, sampling: Any) -> Any:
        """A text generator for ``params``: ``.generate(prompt, max_new_tokens, seed)`` and
        ``.stream(...)`` (see ``nlpjax.inference.text_generator.TextGenerator``). The task
        picks the decoding (decoder-only today, an encoder-decoder's next)."""

    def describe_data(self, split: str, num_examples: int) -> str:
        """The text ``nlpjax data inspect`` prints for this task's data."""

    def stream_stepper(self, cache: Any) -> Any:
        """Optional: a one-token-per-step decoder for a streaming cache (``cache``: a
        ``nlpjax.inference.stream_cache.StreamConfig``), for ``nlpjax generate --cache``
        and ``nlpjax eval --stream``; ``generator(params, sampling, cache=...)`` then
        samples through it. Tasks without one refuse those flags."""


# -- helpers for tasks and the trainer ---------------------------------------------------


@flax.struct.dataclass
class Rows:
    """The rows ``ids`` of a table: ``values`` is ``table[ids]`` (``ids.shape + (E,)``).

    What a loss sees at a ``sparse_rows`` path, and what the gradient holds there (the
    same ids, the gradient with respect to each gathered row; repeated ids sum when the
    update is scatter-added)."""

    ids: jax.Array
    values: jax.Array


def gather_rows(params: Params, index: dict[str, Any]) -> Params:
    """``params`` with ``Rows(ids, table[ids])`` at every path of ``index``."""
    flat = traverse_util.flatten_dict(params, sep="/")
    for path, ids in index.items():
        if path not in flat:
            raise KeyError(f"sparse_rows names {path!r}, which is not a parameter path")
        flat[path] = Rows(ids, jnp.take(flat[path], ids, axis=0))
    return traverse_util.unflatten_dict(flat, sep="/")


def loss_view(task: Task, params: Params, batch: Batch, rng: PRNGKey | None) -> Params:
    """The params as ``task.loss`` reads them: with ``Rows`` where the task has
    ``sparse_rows`` (evaluation passes its own key), else unchanged."""
    sparse_rows = getattr(task, "sparse_rows", None)
    return params if sparse_rows is None else gather_rows(params, sparse_rows(batch, rng))


def carry_leaf(value: jax.Array, *names: str | None) -> nn.LogicallyPartitioned:
    """A carry leaf whose leading axis is the batch (``names`` name the other axes)."""
    names = names or (None,) * (value.ndim - 1)
    return nn.LogicallyPartitioned(value, names=(CARRY_BATCH_AXIS, *names))


def check_carry(boxed_carry: Any, batch_size: int) -> None:
    """Refuses a carry leaf that is not ``carry_leaf``-boxed with ``batch_size`` rows."""

    def check(path, leaf):
        name = "init_carry()" + jax.tree_util.keystr(path)
        names = leaf.names if isinstance(leaf, nn.Partitioned) else None
        value = leaf.value if isinstance(leaf, nn.Partitioned) else leaf
        shape = tuple(getattr(value, "shape", ()))
        if not names or names[0] != CARRY_BATCH_AXIS or not shape or shape[0] != batch_size:
            raise ConfigError(
                f"the task's carry leaf {name} (shape {shape}, logical axes {names}) must "
                f"have the batch as its leading axis: {batch_size} rows named "
                f"{CARRY_BATCH_AXIS!r} (wrap it with nlpjax.tasks.base.carry_leaf)"
            )

    jax.tree_util.tree_map_with_path(
        check, boxed_carry, is_leaf=lambda x: isinstance(x, nn.Partitioned)
    )


def init_carry(task: Task) -> Any:
    """The task's initial carry without its logical-axis boxes."""
    return nn.meta.unbox(task.init_carry())


def make_loss_average(task: Task, **jit_kwargs) -> Callable:
    """jit(params, stacked batches, rng) -> weighted-mean metrics over all batches.

    The carry starts from ``init_carry`` and runs through the batches in order (a
    recurrent model continues its streams); batch i gets ``fold_in(rng, i)``, so a loss
    that samples (negatives) works and repeats for the same key. ``metrics["loss"]`` is
    the weighted mean loss and ``metrics["weight"]`` the total weight (tokens).
    """

    def average(params, batches, rng):
        def one(carry, xs):
            i, batch = xs
            key = jax.random.fold_in(rng, i)
            view = loss_view(task, params, batch, key)
            loss, (metrics, carry) = task.loss(view, carry, batch, key, False)
            weight = metrics.get("weight", jnp.asarray(1.0))
            summed = {k: v * weight for k, v in metrics.items() if k != "weight"}
            summed["loss"] = loss * weight
            summed["weight"] = weight
            return carry, summed

        n = jax.tree_util.tree_leaves(batches)[0].shape[0]
        _, per_batch = jax.lax.scan(one, init_carry(task), (jnp.arange(n), batches))
        totals = jax.tree_util.tree_map(jnp.sum, per_batch)
        weight = totals.pop("weight")
        return {k: v / weight for k, v in totals.items()} | {"weight": weight}

    return jax.jit(average, **jit_kwargs)
