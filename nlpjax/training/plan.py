"""``nlpjax plan``: memory per device for a config and mesh, before launching anything.

Parameters, optimizer state and (from XLA's memory analysis of the compiled training
step) temporaries, per device, for the layout the config asks for. Impossible layouts
fail here with the same errors a real run would raise.
"""

import jax

from nlpjax.config import Config
from nlpjax.training import parallel
from nlpjax.training.run import abstract_train_state, task_optimizer
from nlpjax.training.state import count_params
from nlpjax.training.step import make_train_step, scan_steps


def _abstract_batches(task, steps: int, placement) -> dict:
    """Shapes of one dispatch's stacked global batches, laid out for the placement."""
    it = task.train_iterator()
    host = next(it)
    out = {}
    for key, value in host.items():
        shape = (steps, value.shape[0] * jax.process_count(), *value.shape[1:])
        sharding = parallel.batch_sharding(placement, len(shape))
        out[key] = jax.ShapeDtypeStruct(shape, value.dtype, sharding=sharding)
    return out


def plan(config: Config, task_cls: type) -> dict:
    """Per-device bytes of params, optimizer state and step temporaries (jit mode).

    ``task_cls`` is the class registered under ``config.task`` (the CLI looks it up).
    """
    placement = parallel.build_placement(config.parallel)
    task = task_cls(config, None)
    config = task.config
    parallel.check_batch(task.global_batch_size(), placement.data_parallel)
    tx, schedule = task_optimizer(task)
    _, abstract = abstract_train_state(task, tx, config.seed, placement)
    shardings = parallel.shardings_of(abstract)
    report = {
        "num_params": count_params(abstract.params),
        "devices": len(placement.devices),
        "layout": dict(placement.mesh.shape)
        if placement.mesh
        else {"pmap": len(placement.devices)},
        "params_bytes": parallel.bytes_per_device(abstract.params, shardings.params),
        "opt_state_bytes": parallel.bytes_per_device(abstract.opt_state, shardings.opt_state),
    }
    if placement.mode == "jit":
        microbatches = config.train.microbatches
        step = scan_steps(make_train_step(task, tx, schedule, microbatches=microbatches))
        batches = _abstract_batches(task, config.train.steps_per_dispatch, placement)
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


def format_plan(report: dict) -> str:
    def size(n):
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if n < 1024 or unit == "TiB":
                return f"{n:,.1f} {unit}"
            n /= 1024

    layout = ", ".join(f"{k}:{v}" for k, v in report["layout"].items())
    lines = [
        f"parameters            {report['num_params']:,}",
        f"layout                {layout} ({report['devices']} devices)",
        f"params / device       {size(report['params_bytes'])}",
        f"optimizer / device    {size(report['opt_state_bytes'])}",
    ]
    if "temp_bytes" in report:
        lines.append(f"step temps / device   {size(report['temp_bytes'])} (XLA memory analysis)")
        total = report["params_bytes"] + report["opt_state_bytes"] + report["temp_bytes"]
        lines.append(f"total / device        {size(total)}")
    return "\n".join(lines)
