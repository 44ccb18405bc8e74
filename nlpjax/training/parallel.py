"""Device meshes, logical-axis sharding rules, the pmap path and multi-host setup.

This is the only module that names mesh axes. Parameters carry logical axis names
(``vocab``, ``embed``, ``heads``, ``kv``, ``mlp``); ``RULES`` maps them to the mesh axes
``data``, ``fsdp`` and ``tensor``. ``fsdp`` shards parameters and optimizer state,
``tensor`` shards attention heads and the MLP hidden dimension, and batches are split
over ``data`` x ``fsdp``. ``mode="pmap"`` is classic data parallelism instead.
"""

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nlpjax.config import ParallelConfig, parse_xla_options
from nlpjax.errors import ConfigError

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (or axes, or None = replicated)
RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("act_batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
)
# Logical axes that must divide evenly; others fall back to replication when they don't.
STRICT_AXES = {"heads": "model.num_heads", "mlp": "the MLP width (model.d_ff)"}


def parse_mesh(spec: str, num_devices: int) -> dict[str, int]:
    """``"data:2,fsdp:-1"`` -> {"data": 2, "fsdp": 4, "tensor": 1} for 8 devices."""
    sizes = dict.fromkeys(MESH_AXES, 1)
    fill = None
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition(":")
        if name not in MESH_AXES:
            raise ConfigError(
                f"parallel.mesh: unknown mesh axis {name!r}; axes are {', '.join(MESH_AXES)}"
            )
        try:
            size = int(value)
        except ValueError:
            raise ConfigError(f"parallel.mesh: {part!r} needs an integer size") from None
        if size == -1:
            if fill is not None:
                raise ConfigError("parallel.mesh: only one axis may be -1")
            fill = name
        elif size < 1:
            raise ConfigError(f"parallel.mesh: axis {name} has size {size}; use >= 1 or -1")
        else:
            sizes[name] = size
    known = math.prod(v for k, v in sizes.items() if k != fill)
    if fill is not None:
        if num_devices % known:
            raise ConfigError(
                f"parallel.mesh={spec!r}: {num_devices} devices cannot be split with the "
                f"fixed axes of size {known}"
            )
        sizes[fill] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ConfigError(
            f"parallel.mesh={spec!r} has {math.prod(sizes.values())} devices but "
            f"{num_devices} are in use; make the product equal the device count "
            "(or use -1 for one axis)"
        )
    return sizes


def parse_rules(overrides: str) -> tuple[tuple[str, Any], ...]:
    """Applies ``"embed=,mlp=tensor,vocab=fsdp+tensor"`` on top of ``RULES``."""
    rules = dict(RULES)
    for part in filter(None, (p.strip() for p in overrides.split(","))):
        name, eq, target = part.partition("=")
        if not eq:
            raise ConfigError(f"parallel.rules: {part!r} must look like logical=mesh_axis")
        axes = tuple(a for a in target.split("+") if a)
        for a in axes:
            if a not in MESH_AXES:
                raise ConfigError(f"parallel.rules: unknown mesh axis {a!r} in {part!r}")
        rules[name] = None if not axes else axes[0] if len(axes) == 1 else axes
    return tuple(rules.items())


def select_devices(count: int) -> list:
    devices = jax.devices()
    if count == 0:
        return devices
    if count > len(devices) or count < 0:
        raise ConfigError(
            f"parallel.devices={count} but {len(devices)} devices are available "
            "(0 means all of them)"
        )
    if jax.process_count() > 1 and count != len(devices):
        raise ConfigError("parallel.devices must be 0 (all devices) on multi-host runs")
    return devices[:count]


def make_mesh(cfg: ParallelConfig) -> Mesh:
    devices = select_devices(cfg.devices)
    sizes = parse_mesh(cfg.mesh, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    if len(devices) == len(jax.devices()):
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    else:
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def _mesh_axes_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def spec_for(logical: P, shape: tuple, mesh: Mesh, rules, name: str = "") -> P:
    """Mesh PartitionSpec for one array; non-dividing axes replicate (strict ones raise)."""
    table = dict(rules)
    out = []
    names = tuple(logical) + (None,) * (len(shape) - len(logical))
    for dim, logical_axis in zip(shape, names, strict=True):
        axes = table.get(logical_axis) if logical_axis else None
        size = _mesh_axes_size(mesh, axes)
        if size > 1 and dim % size:
            if logical_axis in STRICT_AXES:
                raise ConfigError(
                    f"{name}: {STRICT_AXES[logical_axis]} = {dim} is not divisible by the "
                    f"mesh axis {axes!r} of size {size}; choose a tensor size that divides it"
                )
            log.info(
                "%s: axis %s (%d) not divisible by %d; replicated", name, logical_axis, dim, size
            )
            axes = None
        out.append(axes)
    return P(*out)


def tree_shardings(logical_tree, abstract_tree, mesh: Mesh, rules) -> Any:
    """NamedShardings for every leaf of ``abstract_tree`` from its logical specs."""

    def one(path, spec, leaf):
        name = jax.tree_util.keystr(path)
        return NamedSharding(mesh, spec_for(spec, leaf.shape, mesh, rules, name))

    return jax.tree_util.tree_map_with_path(
        one, logical_tree, abstract_tree, is_leaf=lambda x: isinstance(x, P)
    )


def check_batch(batch_size: int, data_parallel: int, what: str = "data.batch_size") -> None:
    if batch_size % data_parallel:
        raise ConfigError(
            f"{what}={batch_size} is not divisible by the data-parallel size "
            f"{data_parallel} (mesh data x fsdp, or the pmap device count)"
        )


@dataclasses.dataclass
class Placement:
    """How state and batches are laid out on devices, for one of the two modes.

    ``run_steps(fn)`` compiles ``fn(state, batches) -> (state, metrics)`` for the mode;
    ``put_batches`` turns host batches (steps, per-host batch, ...) into device arrays;
    ``place_state``/``logical_state`` convert between the single logical state that
    checkpoints hold and the mode's layout. The state's shardings are not kept here:
    ``state_shardings`` returns them and the caller passes them on.
    """

    mode: str
    mesh: Mesh | None
    devices: list
    rules: tuple

    @property
    def data_parallel(self) -> int:
        if self.mode == "pmap":
            return len(self.devices)
        return self.mesh.shape["data"] * self.mesh.shape["fsdp"]

    def context(self):
        """Mesh + logical rules in scope while tracing (activation constraints)."""
        import contextlib

        stack = contextlib.ExitStack()
        if self.mesh is not None:  # pmap: no mesh, no logical constraints
            stack.enter_context(jax.set_mesh(self.mesh))
            stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack


def build_placement(cfg: ParallelConfig) -> Placement:
    rules = parse_rules(cfg.rules)
    if cfg.mode == "pmap":
        return Placement("pmap", None, select_devices(cfg.devices), rules)
    mesh = make_mesh(cfg)
    return Placement("jit", mesh, list(mesh.devices.flat), rules)


def state_shardings(placement: Placement, logical_specs, abstract_state) -> Any:
    """Shardings of a (logical) state: over the mesh (jit), or on the first device (pmap)."""
    if placement.mode == "jit":
        return tree_shardings(logical_specs, abstract_state, placement.mesh, placement.rules)
    single = jax.sharding.SingleDeviceSharding(placement.devices[0])
    return jax.tree_util.tree_map(lambda _: single, abstract_state)


def batch_sharding(placement: Placement, ndim: int) -> NamedSharding:
    """Sharding of stacked batches (steps, batch, ...): split the batch axis."""
    return NamedSharding(placement.mesh, P(None, BATCH_AXES, *([None] * (ndim - 2))))


def put_batches(placement: Placement, batches: dict) -> dict:
    """Host batches (steps, per-host batch, ...) -> device arrays for the mode."""
    if placement.mode == "pmap":
        n = len(placement.devices)

        def split(x):  # (k, B, ...) -> (n, k, B/n, ...), one leading slice per device
            x = x.reshape(x.shape[0], n, x.shape[1] // n, *x.shape[2:])
            return jax.device_put(np.swapaxes(x, 0, 1), _stacked_sharding(placement))

        return {k: split(v) for k, v in batches.items()}
    return {
        k: jax.make_array_from_process_local_data(batch_sharding(placement, v.ndim), v)
        for k, v in batches.items()
    }


def put_eval_batches(placement: Placement, batches: dict) -> dict:
    """Eval batches: split over the mesh (jit), or on the first device (pmap, which
    evaluates the logical state returned by ``logical_state``)."""
    if placement.mode == "pmap":
        return jax.device_put(batches, placement.devices[0])
    return put_batches(placement, batches)


def compiler_options(xla_options: str) -> dict:
    """``train.xla_options`` parsed (``config.parse_xla_options``) into the
    ``compiler_options`` for ``compile_steps``, checked against the backend by compiling a
    one-operation program with them: an unknown name or a value of the wrong kind is a
    ConfigError before the training program is traced, not a failure in the compiling
    thread."""
    options = parse_xla_options(xla_options)
    if not options:
        return options
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(jnp.zeros(())).compile()
    except jax.errors.JaxRuntimeError as e:
        reason = str(e).splitlines()[0].removeprefix("INVALID_ARGUMENT: ")
        raise ConfigError(
            f"train.xla_options: {reason} (names are XLA DebugOptions fields, enum values "
            "as XLA spells them, e.g. xla_cpu_experimental_onednn_fusion_type="
            "LIBRARY_FUSION_TYPE_DOT)"
        ) from None
    return options


def compile_steps(
    placement: Placement,
    multi_step: Callable,
    shardings: Any,
    axis_name: str = "batch",
    masked: bool = False,
    compiler_options: dict | None = None,
):
    """jit or pmap of ``multi_step(state, batches)``; ``shardings`` are the state's (jit).

    ``masked``: ``multi_step(state, batches, active)`` with a per-step bool mask (the
    same on every device). ``compiler_options``: XLA options for the jit program
    (``compiler_options(train.xla_options)``); pmap takes none."""
    if placement.mode == "pmap":
        if compiler_options:
            raise ConfigError(
                "train.xla_options applies to parallel.mode=jit; pmap compiles with XLA's "
                "defaults (set XLA_FLAGS in the environment instead)"
            )
        return jax.pmap(
            multi_step,
            axis_name=axis_name,
            devices=placement.devices,
            donate_argnums=0,
            in_axes=(0, 0, None) if masked else (0, 0),
        )
    replicated = NamedSharding(placement.mesh, P())
    return jax.jit(
        multi_step,
        in_shardings=(shardings, None, replicated) if masked else (shardings, None),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
        compiler_options=compiler_options or None,
    )


def place_state(placement: Placement, state, shardings: Any) -> Any:
    """A logical state -> the mode's layout: laid out with ``shardings`` (jit), or one
    replica per device on a new leading axis (pmap), except the carry, whose rows are
    split over the devices like the batch's (``put_batches``)."""
    if placement.mode == "pmap":
        n = len(placement.devices)
        stacked = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (n, *x.shape)), state.replace(carry=None)
        )
        carry = jax.tree_util.tree_map(
            lambda x: jnp.reshape(x, (n, x.shape[0] // n, *x.shape[1:])), state.carry
        )
        return jax.device_put(stacked.replace(carry=carry), _stacked_sharding(placement))
    return jax.device_put(state, shardings)


def _stacked_sharding(placement: Placement) -> NamedSharding:
    """pmap layout: the leading axis split one slice per device."""
    return NamedSharding(Mesh(np.asarray(placement.devices), ("devices",)), P("devices"))


def logical_state(placement: Placement, state) -> Any:
    """The mode's state -> one logical state (pmap: the first local device's replica,
    and the carry's rows from every device put back in batch order; jit: the sharded
    state as it is). Only a pmap carry passes through the host."""
    if placement.mode == "pmap":
        first = jax.tree_util.tree_map(
            lambda x: x.addressable_shards[0].data[0], state.replace(carry=None)
        )
        device = next(iter(first.step.devices()))

        def whole(x):
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                x = multihost_utils.process_allgather(x)
            x = np.asarray(jax.device_get(x))
            return jax.device_put(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), device)

        return first.replace(carry=jax.tree_util.tree_map(whole, state.carry))
    return state


def metrics_of(placement: Placement, metrics) -> Any:
    """Per-step metrics (steps,) from a compiled call's output."""
    if placement.mode == "pmap":
        return jax.tree_util.tree_map(lambda x: x[0], metrics)
    return metrics


def init_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Multi-host setup: automatic on Cloud TPU, explicit coordinator flags elsewhere."""
    if coordinator_address is None and num_processes is None:
        jax.distributed.initialize()
        return
    # CPU processes need a collectives backend (no effect on GPU/TPU devices).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def shardings_of(abstract_tree) -> Any:
    return jax.tree_util.tree_map(lambda a: a.sharding, abstract_tree)


def bytes_per_device(abstract_tree, shardings) -> int:
    """Bytes one device holds of a tree laid out with ``shardings``."""
    total = 0
    for leaf, sharding in zip(
        jax.tree_util.tree_leaves(abstract_tree), jax.tree_util.tree_leaves(shardings), strict=True
    ):
        shard = sharding.shard_shape(leaf.shape)
        total += math.prod(shard) * jnp.dtype(leaf.dtype).itemsize
    return total
