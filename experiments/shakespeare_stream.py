"""RoPE character decoder with context 128 on Tiny Shakespeare, for streaming past the
context with an attention-sink KV cache (Xiao et al., 2023, https://arxiv.org/abs/2309.17453).

Variants (``--config=experiments/shakespeare_stream.py:NAME``):
  default  4 layers, width 64, RoPE, context 128, 2000 steps (the streaming experiment);
  sink     the same with a learned sink token in front of every training sequence;
  tiny     a seconds-long run for tests and smoke checks (context 16).

``experiments/stream_report.py`` streams the held-out text through both trained models
under every cache mode (README section "Streaming past the context").
"""

import importlib.util
from pathlib import Path

import ml_collections

from nlpjax.config import apply_overrides


def _shakespeare_char_base() -> ml_collections.ConfigDict:
    """The base config of the sibling ``shakespeare_char.py`` (config files load by path)."""
    path = Path(__file__).with_name("shakespeare_char.py")
    spec = importlib.util.spec_from_file_location("_shakespeare_char", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.base()


STREAM = {
    "model.positions": "rope",
    "model.num_layers": 4,
    "model.num_heads": 4,
    "model.d_model": 64,
    "model.d_ff": 256,
    "model.max_len": 128,
    "data.context": 128,
    "data.batch_size": 16,
    "train.steps": 2000,
    "eval.every": 500,
    "eval.num_batches": 20,
    "checkpoint.every": 500,
}

VARIANTS = {
    "default": {},
    "sink": {"model.sink_token": True},
    "tiny": {
        "model.num_layers": 2,
        "model.num_heads": 2,
        "model.d_model": 32,
        "model.d_ff": 64,
        "model.max_len": 16,
        "data.context": 16,
        "data.batch_size": 4,
        "train.steps": 40,
        "optim.warmup_steps": 10,
        "train.log_every": 5,
        "train.steps_per_dispatch": 5,
        "eval.every": 20,
        "eval.num_batches": 4,
        "checkpoint.every": 20,
        "parallel.devices": 1,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "default"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    c = _shakespeare_char_base()
    apply_overrides(c, STREAM)
    apply_overrides(c, VARIANTS[name])
    return c
