"""What a resume may change: config differences against the workdir's saved config.

A run resumed with a config that differs from ``config.json`` either refuses (the key
changes what the checkpoint means: the model, the data and tokenizer, the task, the seed,
or the structure of the optimizer state) or goes on with a warning that names the
effect (for a learning-rate schedule change, the lr at the resume step before and after).
Every config a workdir trained with is appended, with the step it took effect, to
``config_history.jsonl``; ``config.json`` is always the current one.
"""

import json
from collections.abc import Mapping
from typing import Any

import jax
from etils import epath

from nlpjax.config import Config, OptimConfig, build_section, from_json
from nlpjax.errors import ConfigChangeError, ConfigError
from nlpjax.precision import resolve_dtype
from nlpjax.training.optim import make_schedule, make_tx

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"

# Keys researchers change on purpose when they resume; everything else is refused.
ALLOWED_SECTIONS = ("train", "eval", "checkpoint", "parallel")
ALLOWED_OPTIM_KEYS = (
    "lr",
    "warmup_steps",
    "schedule",
    "decay_steps",
    "min_lr_ratio",
    "weight_decay",
    "clip_norm",
    # Adafactor's (not optim.factored: it changes the shapes of the optimizer state).
    "decay_rate",
    "clipping_threshold",
    "param_scale",
)
# Allowed keys that change every later update but not the lr.
UPDATE_OPTIM_KEYS = ("weight_decay", "clip_norm", *ALLOWED_OPTIM_KEYS[-3:])


Changes = dict[str, tuple[Any, Any]]


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and tuples compare as lists."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def diff_configs(saved: dict, current: dict) -> Changes:
    """``{key: (saved value, current value)}`` for every dotted key that differs."""
    old, new = flatten(saved), flatten(current)
    absent = "<absent>"
    return {
        key: (old.get(key, absent), new.get(key, absent))
        for key in sorted(set(old) | set(new))
        if old.get(key, absent) != new.get(key, absent)
    }


# How the model computes, not what it is (the model config's ``RUNTIME_FIELDS``).
ALLOWED_MODEL_KEYS = ("dtype", "attention", "remat")


def is_allowed(key: str) -> bool:
    section, _, leaf = key.partition(".")
    if section in ALLOWED_SECTIONS:
        return True
    if section == "model":
        return leaf in ALLOWED_MODEL_KEYS
    return section == "optim" and leaf in ALLOWED_OPTIM_KEYS


def _optimizer_structure(
    optim: OptimConfig, steps: int, compute_dtype: str, abstract_params: Any
) -> Any:
    tx, _ = make_tx(optim, steps, compute_dtype)
    return jax.tree_util.tree_structure(jax.eval_shape(tx.init, abstract_params))


def _compute_dtype(model: Mapping) -> str:
    """A model section's compute dtype (float32 for a model without ``dtype``)."""
    return resolve_dtype(model.get("dtype", "float32")).name


def check_changes(
    saved: dict, config: Config, abstract_params: Any, workdir: epath.Path
) -> Changes:
    """The changes from ``saved`` to ``config``; raises ``ConfigChangeError`` on refused ones.

    Allowed optimizer keys are refused too when they change the optimizer state's
    structure (``optim.clip_norm`` between 0 and > 0), which the checkpoint could not
    fill.
    """
    changes = diff_configs(saved, json.loads(config.to_json()))
    refused = [key for key in changes if not is_allowed(key)]
    # Keys that may change the optimizer state's structure (float16 adds a loss scale).
    optim_changed = [
        key
        for key in changes
        if (key.startswith("optim.") or key == "model.dtype") and key not in refused
    ]
    if optim_changed:
        old_optim = build_section(OptimConfig, saved["optim"], "optim")
        old_dtype = _compute_dtype(saved["model"])
        new_dtype = _compute_dtype(json.loads(config.to_json())["model"])
        old = _optimizer_structure(old_optim, saved["train"]["steps"], old_dtype, abstract_params)
        new = _optimizer_structure(config.optim, config.train.steps, new_dtype, abstract_params)
        if old != new:
            refused += optim_changed
    if refused:
        listed = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in refused)
        raise ConfigChangeError(
            f"{workdir} was trained with another config; these keys cannot change on resume: "
            f"{listed}. Resume with the values in {workdir / CONFIG_FILE}, or use a new "
            "--workdir"
        )
    return changes


def format_lr(value: float) -> str:
    return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e+")


def describe_effects(saved: dict, config: Config, changes: Changes, step: int) -> list[str]:
    """One warning per effect of the (allowed) ``changes`` on a run resumed at ``step``."""
    warnings = []
    old_optim = build_section(OptimConfig, saved["optim"], "optim")
    old_schedule = make_schedule(old_optim, saved["train"]["steps"])
    new_schedule = make_schedule(config.optim, config.train.steps)
    end = max(config.train.steps, step + 1)
    for at in (step, (step + end) // 2, end - 1):  # now, or later in the run
        old_lr, new_lr = float(old_schedule(at)), float(new_schedule(at))
        if old_lr != new_lr:
            before, after = format_lr(old_lr), format_lr(new_lr)
            if before == after:
                before, after = f"{old_lr:.4e}", f"{new_lr:.4e}"
            warnings.append(f"lr at step {at} changes from {before} to {after}")
            break
    # Optimizer keys that leave the lr alone but change every later update.
    other_optim = [k for k in changes if k in [f"optim.{key}" for key in UPDATE_OPTIM_KEYS]]
    if other_optim:
        listed = ", ".join(f"{k} {changes[k][0]} -> {changes[k][1]}" for k in other_optim)
        warnings.append(f"the optimizer update changes from step {step} on ({listed})")
    if any(k.startswith("model.") for k in changes):
        warnings.append(
            "the model computes differently from here on (same parameters): losses will "
            "match an uninterrupted run only up to the new precision"
        )
    if any(k.startswith("parallel.") for k in changes):
        warnings.append(
            "the device layout changes: losses will match an uninterrupted run only up to "
            "float rounding"
        )
    return warnings


def read_saved(workdir: epath.Path, tasks: Mapping[str, type]) -> dict | None:
    """The saved config, resolved like a new one (older layouts, e.g. a tokenizer given as
    a kind string or keys added since, read as today's form, so they are no change).
    ``tasks`` resolves its model and data sections (a task not in it: the raw keys)."""
    path = workdir / CONFIG_FILE
    if not path.is_file():
        return None
    text = path.read_text()
    try:
        return from_json(text, tasks).to_dict()
    except ConfigError:  # unreadable as a config today: compare the raw keys
        return json.loads(text)


def record(workdir: epath.Path, config: Config, step: int, saved: dict | None) -> None:
    """Writes ``config.json`` and appends ``{"step", "config"}`` to the history file.

    A workdir written before the history existed gets its saved config as the first row
    (at step 0, the best knowledge available) before the new one.
    """
    history = workdir / HISTORY_FILE
    rows = history.read_text() if history.exists() else ""
    if not rows and saved is not None:
        rows = json.dumps({"step": 0, "config": saved}, sort_keys=True) + "\n"
    rows += json.dumps({"step": step, "config": config.to_dict()}, sort_keys=True) + "\n"
    tmp = workdir / (HISTORY_FILE + ".tmp")
    tmp.write_text(rows)  # whole-file rewrite: works on object stores, which cannot append
    tmp.replace(history)
    (workdir / CONFIG_FILE).write_text(config.to_json())


def read_history(workdir: epath.PathLike) -> list[dict]:
    path = epath.Path(workdir) / HISTORY_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
