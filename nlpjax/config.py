"""Experiment configs: ml_collections files, command-line overrides, typed frozen sections.

An experiment is a Python file with ``get_config(arg)`` returning a ``ConfigDict``
(``experiments/*.py``). ``load_config`` reads it, applies ``--config.a.b=value``
overrides, rejects unknown keys (suggesting the closest valid one), and converts every
section to a frozen dataclass. Generic sections (optim, train, eval, checkpoint) live
here; the ``model`` and ``data`` sections belong to the task named by ``config.task``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import logging
import traceback
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from nlpjax.errors import ConfigError as ConfigError  # re-exported

logger = logging.getLogger(__name__)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


OPTIMIZERS = ("adamw", "sgd", "adafactor")
SCHEDULES = ("cosine", "constant", "rsqrt")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW, SGD or Adafactor; warmup + cosine, constant or rsqrt; global-norm clipping."""

    name: str = "adamw"  # adamw | sgd | adafactor
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant | rsqrt
    decay_steps: int = 0  # length of the cosine decay; 0 = train.steps
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio (cosine)
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0  # 0 disables clipping
    # Adafactor (Shazeer & Stern, 2018) with T5's defaults:
    factored: bool = True  # factored second moments for matrices with both dims >= 128
    decay_rate: float = 0.8  # second-moment decay 1 - step**-decay_rate
    clipping_threshold: float = 1.0  # update clipping by RMS (0 disables)
    param_scale: bool = True  # relative step: updates scaled by the parameter's RMS

    def __post_init__(self):
        _check(
            self.name in OPTIMIZERS,
            f"optim.name must be one of {'|'.join(OPTIMIZERS)}, got {self.name!r}",
        )
        _check(
            self.schedule in SCHEDULES,
            f"optim.schedule must be one of {'|'.join(SCHEDULES)}, got {self.schedule!r}",
        )
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        _check(
            self.schedule != "rsqrt" or self.warmup_steps > 0,
            "optim.schedule=rsqrt needs optim.warmup_steps > 0 (the lr is "
            "optim.lr / sqrt(max(step, optim.warmup_steps)); T5 uses 10000)",
        )
        _check(
            0.0 < self.decay_rate <= 1.0,
            f"optim.decay_rate must be in (0, 1], got {self.decay_rate}",
        )
        _check(
            self.clipping_threshold >= 0,
            f"optim.clipping_threshold must be >= 0 (0 disables), got {self.clipping_threshold}",
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Length of the run and how it is driven."""

    steps: int = 2000
    log_every: int = 50
    steps_per_dispatch: int = 10  # train steps fused into one jitted lax.scan call
    progress: bool = True
    peak_tflops: float = 0.0  # per-device peak for MFU; 0 = from the table of known chips
    microbatches: int = 1  # gradient accumulation: the batch runs as k sequential parts
    init_from: str = ""  # WORKDIR[:STEP]: a new run starts from that checkpoint's params
    # XLA compiler options for the training programs (jit mode): "name=value,name=value"
    xla_options: str = ""

    def __post_init__(self):
        _check(self.steps > 0, f"train.steps must be > 0, got {self.steps}")
        _check(self.microbatches > 0, f"train.microbatches must be > 0, got {self.microbatches}")
        _check(self.log_every > 0, "train.log_every must be > 0")
        _check(self.steps_per_dispatch > 0, "train.steps_per_dispatch must be > 0")
        parse_xla_options(self.xla_options)  # a malformed list is a ConfigError here


def parse_xla_options(text: str) -> dict[str, bool | int | str]:
    """``train.xla_options`` as the ``compiler_options`` of ``jax.jit``: comma-separated
    ``name=value`` pairs (XLA's DebugOptions field names, without dashes); ``true`` /
    ``false`` become booleans and integers ints, the rest stays text (enum values are
    written as XLA names them, e.g. ``LIBRARY_FUSION_TYPE_DOT``). Whether XLA accepts a
    name and value is checked when the training program is built."""
    options: dict[str, bool | int | str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (x.strip() for x in item.partition("="))
        _check(
            bool(sep and name and value) and not name.startswith("-"),
            f"train.xla_options: {item!r} is not name=value (write e.g. "
            "'xla_cpu_use_onednn=true,xla_cpu_experimental_onednn_fusion_type="
            "LIBRARY_FUSION_TYPE_DOT', without the dashes of XLA_FLAGS)",
        )
        lowered = value.lower()
        if lowered in ("true", "false"):
            options[name] = lowered == "true"
        elif value.lstrip("-").isdigit():
            options[name] = int(value)
        else:
            options[name] = value
    return options


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation on a fixed set of validation batches."""

    every: int = 250
    num_batches: int = 50
    seed: int = 1234
    probes: bool = False  # tasks with probes (decoder LMs) also log them at every eval

    def __post_init__(self):
        _check(self.every > 0, "eval.every must be > 0")
        _check(self.num_batches > 0, "eval.num_batches must be > 0")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpointing: cadence, retention, async writes."""

    every: int = 500
    max_to_keep: int = 3
    async_save: bool = True

    def __post_init__(self):
        _check(self.every > 0, "checkpoint.every must be > 0")
        _check(self.max_to_keep > 0, "checkpoint.max_to_keep must be > 0")


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """Device layout. Mesh axes and their meaning are defined in training/parallel.py."""

    mode: str = "jit"  # jit (mesh sharding) | pmap (replicated data parallelism)
    devices: int = 0  # use the first N devices; 0 = all
    mesh: str = "data:-1"  # e.g. "data:2,fsdp:2,tensor:2"; -1 fills the remaining devices
    rules: str = ""  # logical-axis rule overrides, e.g. "embed=,vocab=fsdp+tensor"

    def __post_init__(self):
        _check(
            self.mode in ("jit", "pmap"), f"parallel.mode must be jit or pmap, got {self.mode!r}"
        )
        _check(self.devices >= 0, "parallel.devices must be >= 0 (0 = all devices)")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole, validated experiment config. ``model`` and ``data`` are task-specific."""

    task: str
    seed: int
    model: Any
    data: Any
    optim: OptimConfig
    train: TrainConfig
    eval: EvalConfig
    checkpoint: CheckpointConfig
    parallel: ParallelConfig = ParallelConfig()

    def __post_init__(self):
        k = self.train.steps_per_dispatch
        for name, every in (
            ("train.log_every", self.train.log_every),
            ("eval.every", self.eval.every),
            ("checkpoint.every", self.checkpoint.every),
        ):
            _check(
                every % k == 0,
                f"{name}={every} must be a multiple of train.steps_per_dispatch={k} "
                f"(steps run {k} at a time); change one of them",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


GENERIC_SECTIONS: dict[str, type] = {
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "parallel": ParallelConfig,
}


# ---------------------------------------------------------------------------------------
# Loading files and applying overrides (on ConfigDicts).


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path[:arg]``: imports the file and calls its ``get_config(arg)``."""
    path_str, _, arg = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path_str!r} (pass --config=path/to/file.py)")
    module_spec = importlib.util.spec_from_file_location(f"_nlpjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a user's file: syntax errors, failed imports, anything
        raise ConfigError(_file_error(path, e, "cannot load config file")) from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path_str} defines no get_config(arg) function")
    try:
        cd = module.get_config(arg or None)
    except Exception as e:
        raise ConfigError(_file_error(path, e, f"get_config({arg or None!r}) failed in")) from None
    if not isinstance(cd, ml_collections.ConfigDict):
        raise ConfigError(f"{path_str}: get_config must return an ml_collections.ConfigDict")
    return cd


def _file_error(path: Path, error: Exception, what: str) -> str:
    """One line naming ``path``, the line in it where ``error`` arose, and the error."""
    line = None
    if isinstance(error, SyntaxError) and error.filename and Path(error.filename) == path:
        line = error.lineno
    else:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
        line = frames[-1].lineno if frames else None
    where = f"{path}:{line}" if line else str(path)
    detail = error.msg if isinstance(error, SyntaxError) else str(error)
    return f"{what} {where}: {type(error).__name__}: {detail}; fix the file and rerun"


def flat_keys(tree: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        full = f"{prefix}{k}"
        if isinstance(v, Mapping | ml_collections.ConfigDict):
            keys.extend(flat_keys(v, full + "."))
        else:
            keys.append(full)
    return keys


# Names people commonly use for a key, by the key's last component (lower case).
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("learning_rate", "learningrate", "lr_max", "max_lr", "peak_lr", "base_lr"),
    "steps": ("num_steps", "max_steps", "train_steps", "total_steps", "iterations", "iters"),
    "batch_size": ("batch", "bs", "global_batch_size", "batchsize"),
    "d_model": ("hidden_size", "hidden_dim", "dim", "width", "embed_dim", "n_embd", "d_hidden"),
    "d_ff": ("ffn_dim", "mlp_dim", "intermediate_size", "ff_dim", "hidden_ff"),
    "num_layers": ("layers", "n_layers", "n_layer", "depth", "num_hidden_layers"),
    "num_heads": ("heads", "n_heads", "n_head", "num_attention_heads"),
    "context": ("seq_len", "sequence_length", "block_size", "context_length", "max_seq_len"),
    "max_len": ("max_length", "max_position_embeddings", "n_positions"),
    "warmup_steps": ("warmup", "num_warmup_steps", "warmup_iters"),
    "weight_decay": ("wd", "decay"),
    "clip_norm": ("grad_clip", "clip", "max_grad_norm", "gradient_clipping"),
    "dropout": ("dropout_rate", "dropout_prob", "p_dropout"),
    "vocab_size": ("vocab", "n_vocab", "vocabulary_size"),
    "every": ("eval_every", "save_every", "interval", "frequency", "freq"),
    "seed": ("random_seed", "rng_seed"),
    "log_every": ("log_interval", "log_freq", "log_steps", "print_every"),
    "b1": ("beta1", "beta_1", "adam_beta1"),
    "b2": ("beta2", "beta_2", "adam_beta2"),
    "eps": ("epsilon", "adam_eps", "adam_epsilon"),
    "tokenizer": ("vocab_type", "tokenizer_kind", "tokenization"),
}
_ALIAS_TO_KEY = {alias: key for key, aliases in KEY_ALIASES.items() for alias in aliases}


def _suggest(key: str, valid: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the valid key most likely meant by ``key``, else ''.

    Tries, in order: a known alias of the last component (``learning_rate`` -> ``lr``)
    in the same section, then in any section; a close spelling of the last component
    within a valid section; a close spelling of the whole key; a valid
    last component contained in the given one or the other way round
    (``train_steps`` -> ``steps``); a close spelling of the last component.
    """
    section, _, last = key.rpartition(".")
    by_last: dict[str, list[str]] = {}
    for k in valid:
        by_last.setdefault(k.rsplit(".", 1)[-1], []).append(k)

    def prefer_section(candidates: list[str]) -> list[str]:
        same = [k for k in candidates if k.rpartition(".")[0] == section]
        return same or candidates

    low = last.lower()
    candidates: list[str] = []
    if low in _ALIAS_TO_KEY:
        candidates = prefer_section(by_last.get(_ALIAS_TO_KEY[low], []))
    sections = {k.rpartition(".")[0] for k in valid}
    if not candidates and section in sections:  # right section: compare the last names
        names = [k.rsplit(".", 1)[-1] for k in valid if k.rpartition(".")[0] == section]
        close = difflib.get_close_matches(last, names, n=1, cutoff=0.6)
        candidates = [f"{section}.{close[0]}"] if close else []
    if not candidates and section not in sections:  # a misspelled section
        candidates = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not candidates and len(low) >= 2:
        contained = [k for name, ks in by_last.items() for k in ks if _overlaps(low, name)]
        candidates = prefer_section(contained)
    if not candidates:
        close = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.6)
        candidates = prefer_section(by_last[close[0]]) if close else []
    return f"; did you mean '{candidates[0]}'?" if candidates else ""


def _overlaps(given: str, name: str) -> bool:
    """Whether one name contains the other as a whole ``_``-separated part run."""
    short, long_ = sorted((given, name), key=len)
    if len(short) < 2 or short == long_:
        return short == long_
    parts = long_.split("_")
    return any(
        "_".join(parts[i:j]) == short
        for i in range(len(parts))
        for j in range(i + 1, len(parts) + 1)
    )


def parse_value(text: str, current: Any, key: str) -> Any:
    """Converts an override string to the type of the value it replaces."""
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(current, int):
            value = float(text) if any(c in text for c in ".eE") else int(text)
            if float(value) != int(value):
                raise ValueError
            return int(value)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if isinstance(current, tuple | list):
            return tuple(ast.literal_eval(text))
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    raise ConfigError(
        f"--config.{key}={text!r}: {_TYPE_WORDS.get(type(current), type(current).__name__)} "
        f"expected, got {text!r}; for example --config.{key}={_example(current)}"
    )


_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    tuple: "a tuple",
    list: "a list",
}


def _example(current: Any) -> str:
    """An override value of the same type as ``current`` (its own value, printed)."""
    if isinstance(current, bool):
        return str(current).lower()
    if isinstance(current, tuple | list):
        return repr(tuple(current)).replace(" ", "")
    return str(current)


def override_text(value: Any) -> str:
    """A Python value as override text (``True`` -> ``true``, ``(1, 2)`` -> ``(1,2)``)."""
    if isinstance(value, str):
        return value
    return _example(value)


def apply_overrides(cd: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Applies ``{"optim.lr": "3e-4"}``-style overrides in place; unknown keys raise.

    Values are text typed like the value they replace, as on the command line, or Python
    values (``{"optim.lr": 3e-4}``: experiment variants, the Python API), checked alike.
    """
    valid = flat_keys(cd)
    for key, value in overrides.items():
        text = override_text(value)
        inside = [k for k in valid if k.startswith(key + ".")]
        example = f"{key}.kind" if f"{key}.kind" in inside else (inside or [""])[0]
        if key not in valid and inside:
            raise ConfigError(
                f"config key '{key}' is a section; set its keys instead, e.g. "
                f"--config.{example}={text} (keys: {', '.join(inside)})"
            )
        if key not in valid:
            raise ConfigError(f"unknown config key '{key}'{_suggest(key, valid)}")
        *parents, leaf = key.split(".")
        node = cd
        for p in parents:
            node = node[p]
        value = parse_value(text, node[leaf], key)
        with node.ignore_type():
            node[leaf] = value


# ---------------------------------------------------------------------------------------
# Converting to typed frozen dataclasses.


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _coerce_section(value, hint, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise ConfigError(f"config key '{key}' must be a tuple, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    ):
        raise ConfigError(
            f"config key '{key}' must be {_TYPE_WORDS.get(hint, hint.__name__)}, got {value!r}"
        )
    return value


def _coerce_section(value: Any, cls: type, key: str) -> Any:
    """A nested section: a mapping of its fields, or its ``kind`` alone as a string.

    The string form keeps configs written before the section existed readable, e.g. a
    saved ``"tokenizer": "char"`` reads as ``{"kind": "char"}`` with the other fields at
    their defaults.
    """
    if isinstance(value, cls):
        return value
    kinds = "kind" in {f.name for f in dataclasses.fields(cls)}
    if isinstance(value, str) and kinds:
        value = {"kind": value}
    if isinstance(value, Mapping | ml_collections.ConfigDict):
        return build_section(cls, value, key)
    raise ConfigError(
        f"config key '{key}' must be a section (a dict of {cls.__name__} fields"
        + (", or a kind string" if kinds else "")
        + f"), got {value!r}"
    )


def build_section(cls: type, values: Mapping, path: str) -> Any:
    """Converts a mapping to dataclass ``cls``; unknown keys and bad types raise."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    valid = [f"{path}.{name}" for name in fields]
    kwargs = {}
    for key, value in values.items():
        full = f"{path}.{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}'{_suggest(full, valid)}")
        kwargs[key] = _coerce(value, hints[key], full)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"config section '{path}' is missing keys: {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # a section defined outside this module validates itself
        raise ConfigError(f"{path}: {e}") from None


def task_class(name: str, tasks: Mapping[str, type]) -> type:
    """The class registered as ``name`` in ``tasks``; an unknown name lists the known ones."""
    if name not in tasks:
        known = ", ".join(sorted(tasks)) or "none"
        raise ConfigError(
            f"unknown task {name!r}; known tasks: {known} (set the config's 'task' to one of "
            "them, or register yours with nlpjax.register_task)"
        )
    return tasks[name]


def resolve(tree: Mapping, tasks: Mapping[str, type]) -> Config:
    """Validates a (ConfigDict or plain dict) config tree into a frozen ``Config``.

    ``tasks`` maps task names to task classes (``nlpjax.TASKS`` at the faces: the CLI and
    the Python API); the ``model`` and ``data`` sections are built with the named class's
    ``model_config_cls`` and ``data_config_cls``. This module never imports the tasks.
    """
    tree = tree.to_dict() if isinstance(tree, ml_collections.ConfigDict) else dict(tree)
    top = {"task", "seed", "model", "data", *GENERIC_SECTIONS}
    for key in tree:
        if key not in top:
            raise ConfigError(f"unknown config section '{key}'{_suggest(key, sorted(top))}")
    for key in top:
        if key not in tree:
            raise ConfigError(f"config is missing the '{key}' section")
    task_name = tree["task"]
    task_cls = task_class(task_name, tasks)
    sections = {
        name: build_section(cls, tree[name], name) for name, cls in GENERIC_SECTIONS.items()
    }
    return Config(
        task=task_name,
        seed=_coerce(tree["seed"], int, "seed"),
        model=build_section(task_cls.model_config_cls, tree["model"], "model"),
        data=build_section(task_cls.data_config_cls, tree["data"], "data"),
        **sections,
    )


def load_config(
    spec: str, overrides: Mapping[str, str] | None, tasks: Mapping[str, type]
) -> Config:
    """File spec (``path[:arg]``) + overrides -> validated ``Config`` (see ``resolve``)."""
    return load_tree(load_config_file(spec), overrides, tasks)


def load_tree(
    cd: ml_collections.ConfigDict, overrides: Mapping[str, Any] | None, tasks: Mapping[str, type]
) -> Config:
    """A config tree + overrides (applied in place) -> validated ``Config``, with a warning
    for each odd but valid setting (the common end of every way of loading a config).

    Keys a file leaves out take their defaults first, so every key of a section the file
    has can be overridden (a new option needs no edit of every experiment file).
    """
    fill_defaults(cd, tasks)
    apply_overrides(cd, overrides or {})
    config = resolve(cd, tasks)
    warn_odd_settings(config)
    return config


def _section_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass (nested sections as dicts); fields
    without a default are left out (their absence stays an error)."""
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        defaults[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return defaults


def fill_defaults(cd: ml_collections.ConfigDict, tasks: Mapping[str, type]) -> None:
    """Adds, in place, the defaults of the keys missing from each section of ``cd`` (the
    generic sections, and ``model``/``data`` of a known task). Missing sections and an
    unknown task are left for ``resolve`` to report."""
    classes = dict(GENERIC_SECTIONS)
    task_cls = tasks.get(cd.get("task")) if isinstance(cd.get("task"), str) else None
    if task_cls is not None:
        classes |= {"model": task_cls.model_config_cls, "data": task_cls.data_config_cls}
    for name, cls in classes.items():
        section = cd.get(name)
        if not isinstance(section, ml_collections.ConfigDict):
            continue
        with section.unlocked():
            for key, value in _section_defaults(cls).items():
                if key not in section:
                    section[key] = value
                elif isinstance(section[key], ml_collections.ConfigDict) and isinstance(
                    value, dict
                ):
                    for sub, sub_value in value.items():
                        if sub not in section[key]:
                            with section[key].unlocked():
                                section[key][sub] = sub_value


def warn_odd_settings(config: Config) -> list[str]:
    """Logs (and returns) a warning for each valid but probably unintended setting."""
    warnings = []
    warmup, steps = config.optim.warmup_steps, config.train.steps
    if warmup >= steps and config.optim.schedule != "rsqrt":  # rsqrt: flat, no ramp
        peak = config.optim.lr * (steps - 1) / warmup
        warnings.append(
            f"optim.warmup_steps={warmup} >= train.steps={steps}: the learning rate never "
            f"reaches optim.lr={config.optim.lr:g} (at most {peak:.3g}); lower "
            "optim.warmup_steps or raise train.steps if that is not intended"
        )
    for message in warnings:
        logger.warning(message)
    return warnings


def from_json(text: str, tasks: Mapping[str, type]) -> Config:
    """A config saved with ``Config.to_json`` (see ``resolve`` for ``tasks``)."""
    return resolve(json.loads(text), tasks)
