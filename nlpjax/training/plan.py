"""``nlpjax plan``: memory per device for a config and mesh, before launching anything.

Per device: parameters, optimizer state and gradients (from the abstract state and its
shardings), activations (what the backward pass keeps, measured by JAX itself, for no
rematerialization and for the configured ``model.remat``), and, when the step is
compiled, XLA's temporaries. Impossible layouts fail here with the same errors a real
run would raise; ``check_fits`` refuses a plan that exceeds a device's memory.

Activations: the residuals of ``jax.vjp`` of the task's loss are exactly the arrays the
forward pass hands to the backward pass, and ``jax.checkpoint`` policies (``model.remat``)
shrink them; ``jax.ad_checkpoint.print_saved_residuals`` lists them the same way. The
vjp is traced (``jax.make_jaxpr``: abstract shapes, nothing allocated or compiled) for
one microbatch of one device's rows. XLA:CPU's memory analysis of the compiled step
does not model remat, so its temporaries are shown but not added to the total.
"""

import dataclasses
import math
import textwrap

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from nlpjax.config import Config
from nlpjax.errors import ConfigError
from nlpjax.training import parallel
from nlpjax.training.run import abstract_train_state, task_optimizer
from nlpjax.training.state import count_params
from nlpjax.training.step import check_microbatches, make_train_step, scan_steps

GIB = 1024**3


def _abstract_batches(host: dict, steps: int, placement) -> dict:
    """Shapes of one dispatch's stacked global batches, laid out for the placement.

    ``host`` is one host batch of the task's training iterator.
    """
    out = {}
    for key, value in host.items():
        shape = (steps, value.shape[0] * jax.process_count(), *value.shape[1:])
        sharding = parallel.batch_sharding(placement, len(shape))
        out[key] = jax.ShapeDtypeStruct(shape, value.dtype, sharding=sharding)
    return out


def _tree_bytes(tree) -> int:
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def saved_residuals(loss_fn, params, inputs) -> list[tuple[jax.ShapeDtypeStruct, bool]]:
    """The arrays the backward pass of ``loss_fn`` keeps from its forward pass.

    Traces ``jax.vjp`` of ``loss_fn(params, inputs) -> (scalar, aux)`` with respect to
    ``params`` (abstractly: nothing is allocated or compiled) and returns its residuals,
    each once, without those that are ``params`` or ``inputs`` themselves (they are in
    memory anyway), as (shape, is a weight copy). Weight copies are computed from the
    parameters alone (e.g. their bfloat16 casts, a transposed table); everything else
    (computed from ``inputs`` or from constant arrays such as position ids) counts as
    an activation, the larger estimate when in doubt.
    """

    def forward(p, x):
        _, vjp_fn, _ = jax.vjp(lambda q: loss_fn(q, x), p, has_aux=True)
        return vjp_fn  # a pytree whose leaves are the residuals

    jaxpr = jax.make_jaxpr(forward)(params, inputs).jaxpr
    # Forward data flow: values computed from the parameters and nothing else (literal
    # scalars aside).
    params_only = set(jaxpr.invars[: len(jax.tree.leaves(params))])
    for eqn in jaxpr.eqns:
        sources = [v for v in eqn.invars if not isinstance(v, Literal)]
        if sources and all(v in params_only for v in sources):
            params_only.update(eqn.outvars)
    out, seen, given = [], set(), set(jaxpr.invars)
    for v in jaxpr.outvars:
        if isinstance(v, Literal) or v in seen or v in given:
            continue
        seen.add(v)
        out.append((jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype), v in params_only))
    return out


def _strip(tree):
    """ShapeDtypeStructs without shardings (traced outside the mesh)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _device_inputs(abstract_state, host_batch: dict, placement, microbatches: int):
    """(carry, one microbatch of batch) as one device sees them in a training step.

    The batch is split over the data-parallel devices (``data`` x ``fsdp``, or the pmap
    devices) and then into ``microbatches`` parts; the carry (its leading axis is the
    batch) is split the same way, as ``step.py`` splits it.
    """
    n = placement.data_parallel
    batch = {}
    for key, value in host_batch.items():
        rows = value.shape[0] * jax.process_count() // n // microbatches
        batch[key] = jax.ShapeDtypeStruct((rows, *value.shape[1:]), value.dtype)
    carry = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((x.shape[0] // n // microbatches, *x.shape[1:]), x.dtype),
        abstract_state.carry,
    )
    return carry, batch


def activation_bytes(task, params, carry, batch, rng, param_share: float) -> int:
    """Per-device bytes of the residuals of ``task.loss`` on one device's microbatch.

    Activations count as traced (they already hold one device's rows); weight copies
    are multiplied by ``param_share``, the fraction of the parameters a device holds
    (they are split like the weights they come from).
    """

    def loss_fn(p, inputs):
        c, b, r = inputs
        return task.loss(p, c, b, r, True)

    total = 0.0
    for shape, weight_copy in saved_residuals(loss_fn, params, (carry, batch, rng)):
        size = math.prod(shape.shape) * jnp.dtype(shape.dtype).itemsize
        total += size * param_share if weight_copy else size
    return int(round(total))


def remat_policies(config: Config) -> tuple[str, ...]:
    """``("none", configured)`` for models with ``model.remat``; ``("none",)`` otherwise."""
    configured = getattr(config.model, "remat", None)
    if configured in (None, "none"):
        return ("none",)
    return ("none", configured)


def _with_remat(config: Config, policy: str) -> Config:
    if getattr(config.model, "remat", policy) == policy:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, remat=policy))


def _activation_report(task, task_cls, abstract, host_batch, placement, report) -> dict:
    """``rows_per_device``, ``activation_bytes`` and ``total_bytes`` per remat policy."""
    config, microbatches = task.config, report["microbatches"]
    params_bytes = report["params_bytes"]
    carry, batch = _device_inputs(abstract, host_batch, placement, microbatches)
    rows = next(iter(batch.values())).shape[0]
    params, rng = _strip(abstract.params), _strip(abstract.rng)
    share = params_bytes / _tree_bytes(abstract.params)
    acts = {}
    for policy in remat_policies(config):  # the same parameters under every policy
        variant_config = _with_remat(config, policy)
        variant = task if variant_config is config else task_cls(variant_config, None)
        acts[policy] = activation_bytes(variant, params, carry, batch, rng, share)
    fixed = params_bytes + report["opt_state_bytes"] + report["grads_bytes"]
    totals = {p: fixed + b for p, b in acts.items()}
    return {"rows_per_device": rows, "activation_bytes": acts, "total_bytes": totals}


def plan(config: Config, task_cls: type, compile: bool = True, activations: bool = True) -> dict:
    """Per-device bytes of params, optimizer state, gradients and activations.

    ``task_cls`` is the class registered under ``config.task`` (the CLI looks it up).
    With ``activations``, ``activation_bytes`` maps each remat policy of
    ``remat_policies`` to the bytes of activations one device keeps for the backward
    pass, and ``total_bytes`` adds the params, optimizer state and gradients to each
    (tracing the backward pass: seconds for a large model). With ``compile`` (jit mode),
    the step is also compiled for XLA's temporaries and FLOPs (minutes for a large one).
    """
    placement = parallel.build_placement(config.parallel)
    task = task_cls(config, None)
    config = task.config
    microbatches = config.train.microbatches
    parallel.check_batch(task.global_batch_size(), placement.data_parallel)
    check_microbatches(task.global_batch_size(), placement.data_parallel, microbatches)
    tx, schedule = task_optimizer(task)
    _, abstract = abstract_train_state(task, tx, config.seed, placement)
    shardings = parallel.shardings_of(abstract)
    params_bytes = parallel.bytes_per_device(abstract.params, shardings.params)
    report = {
        "num_params": count_params(abstract.params),
        "devices": len(placement.devices),
        "layout": dict(placement.mesh.shape)
        if placement.mesh
        else {"pmap": len(placement.devices)},
        "params_bytes": params_bytes,
        "opt_state_bytes": parallel.bytes_per_device(abstract.opt_state, shardings.opt_state),
        # Gradients are shaped like the parameters; accumulating microbatches keeps a
        # running sum beside each microbatch's gradients.
        "grads_bytes": params_bytes * (2 if microbatches > 1 else 1),
        "microbatches": microbatches,
        "data_parallel": placement.data_parallel,
        "global_batch": task.global_batch_size(),
        "remat_configurable": hasattr(config.model, "remat"),
        "backend": jax.default_backend(),
    }
    host_batch = next(task.train_iterator())
    if activations:
        report |= _activation_report(task, task_cls, abstract, host_batch, placement, report)
    if compile and placement.mode == "jit":
        step = scan_steps(make_train_step(task, tx, schedule, microbatches=microbatches))
        batches = _abstract_batches(host_batch, config.train.steps_per_dispatch, placement)
        with placement.context():
            compiled = (
                parallel.compile_steps(placement, step, shardings)
                .lower(abstract, batches)
                .compile()
            )
        memory = compiled.memory_analysis()
        report["temp_bytes"] = int(getattr(memory, "temp_size_in_bytes", 0))
        report["flops_per_dispatch"] = float((compiled.cost_analysis() or {}).get("flops", 0.0))
    return report


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024


def format_plan(report: dict) -> str:
    """The report as aligned lines, with a note on how activations were measured."""
    size = format_size
    layout = ", ".join(f"{k}:{v}" for k, v in report["layout"].items())
    grads = size(report["grads_bytes"])
    if report["microbatches"] > 1:
        grads += f" (running sum + one microbatch's, train.microbatches={report['microbatches']})"
    lines = [
        f"parameters            {report['num_params']:,}",
        f"layout                {layout} ({report['devices']} devices)",
        f"params / device       {size(report['params_bytes'])}",
        f"optimizer / device    {size(report['opt_state_bytes'])}",
        f"gradients / device    {grads}",
    ]
    if "activation_bytes" in report:
        lines += _activation_lines(report)
    if "temp_bytes" in report:
        lines.append(
            f"step temps / device   {size(report['temp_bytes'])} (XLA's memory analysis on "
            f"{report['backend']}; not in the total: it does not model remat)"
        )
    if "activation_bytes" in report:
        lines += textwrap.wrap(_activation_note(report), 92)
    return "\n".join(lines)


def _activation_lines(report: dict) -> list[str]:
    """Activations and totals, one column per remat policy."""
    policies, width, lines = list(report["activation_bytes"]), 24, []
    if report["remat_configurable"]:
        header = "".join(f"{'model.remat=' + p:<{width}}" for p in policies)
        lines.append((" " * 22 + header).rstrip())
    for label, key in (("activations", "activation_bytes"), ("total", "total_bytes")):
        values = "".join(f"{format_size(report[key][p]):<{width}}" for p in policies)
        lines.append(f"{label + ' / device':<22}{values}".rstrip())
    return lines


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _activation_note(report: dict) -> str:
    k, tensor = report["microbatches"], report["layout"].get("tensor", 1)
    return (
        "Activations: what the backward pass keeps (the residuals of jax.vjp of the loss, "
        f"traced with the kernels of the {report['backend']} backend) for one microbatch of "
        f"{_plural(report['rows_per_device'], 'row')} per device (the batch split over "
        f"{report['data_parallel']} data-parallel devices"
        + (f" and into {k} microbatches" if k > 1 else "")
        + "); weight copies such as bfloat16 casts are split like the parameters"
        + (f"; not divided over tensor:{tensor}, an upper bound" if tensor > 1 else "")
        + ". Total = params + optimizer + gradients + activations; the working memory of the "
        "layer being computed comes on top."
    )


def check_fits(report: dict, device_memory_gb: float) -> None:
    """Raises ``ConfigError`` (one line) when the plan's total exceeds a device's memory.

    The total that counts is the one with the configured ``model.remat`` (the last of
    ``report["total_bytes"]``). The message names what to change.
    """
    remat = list(report["total_bytes"])[-1]
    total = report["total_bytes"][remat]
    budget = device_memory_gb * GIB
    if total <= budget:
        return
    size = format_size
    parts = (
        f"params {size(report['params_bytes'])} + optimizer {size(report['opt_state_bytes'])}"
        f" + gradients {size(report['grads_bytes'])} + activations "
        f"{size(report['activation_bytes'][remat])}"
    )
    layout = ",".join(f"{k}:{v}" for k, v in report["layout"].items())
    if "pmap" in report["layout"]:
        fixes = ["shard the state (parallel.mode=jit with an fsdp axis in parallel.mesh)"]
    else:
        fixes = [f"shard over more devices (a larger fsdp in parallel.mesh, now {layout})"]
    with_remat = ""
    if report["remat_configurable"]:
        with_remat = f" with model.remat={remat}"
        if remat != "full":
            fixes.append("recompute activations (model.remat=full)")
    fixes.append(f"more train.microbatches (now {report['microbatches']})")
    fixes.append(f"or a smaller data.batch_size (now {report['global_batch']})")
    raise ConfigError(
        f"the plan needs {size(total)} per device{with_remat} ({parts}) but "
        f"--device_memory_gb={device_memory_gb:g} allows {size(budget)}: " + ", ".join(fixes)
    )
