"""Registers 0 / 1 / 4 (and a sink token) on Tiny Shakespeare: the character decoder of
shakespeare_char.py with ``model.num_registers`` learned vectors in front of every
sequence (or ``model.sink_token``) and the probes on.

Variants (``--config=experiments/shakespeare_registers.py:NAME``):
  registers0  the plain decoder (2000 steps, as shakespeare_char.py's default);
  registers1  one register;
  registers4  four registers;
  sink        no registers, one learned sink token at position 0;
  tiny        four registers on the tiny model: a seconds-long run for tests.

``python experiments/registers_table.py`` trains the four and writes the README table
(validation loss, outlier fraction, attention mass on position 0 and on the registers)
and the ``nlpjax analyze`` plots of each.
"""

from pathlib import Path

import ml_collections

from nlpjax.config import apply_overrides, load_config_file

BASE = str(Path(__file__).with_name("shakespeare_char.py"))

PROBES = {"eval.probes": True}
VARIANTS = {
    # name: (the shakespeare_char.py variant it starts from, what it changes)
    "registers0": ("default", {**PROBES, "model.num_registers": 0}),
    "registers1": ("default", {**PROBES, "model.num_registers": 1}),
    "registers4": ("default", {**PROBES, "model.num_registers": 4}),
    "sink": ("default", {**PROBES, "model.sink_token": True}),
    "tiny": ("tiny", {**PROBES, "model.num_registers": 4}),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "registers4"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    base, overrides = VARIANTS[name]
    c = load_config_file(f"{BASE}:{base}")
    apply_overrides(c, overrides)
    return c
