"""Word2vec skip-gram with negative sampling on Tiny Shakespeare alone (gensim's settings).

``experiments/sgns.py`` with ``data.dataset=tiny_shakespeare`` and the schedule sized to
that corpus: 5 epochs of 155 chunks of 768 kept training words (after subsampling),
evaluated and checkpointed every epoch.

Variants (``--config=experiments/sgns_shakespeare.py:NAME``):
  default  sg, negative=5, window=5, sample=1e-3, min_count=5, 100 dimensions; word2vec's
           SGD at lr 0.025 decaying to 0.0001;
  tiny     ``sgns.py:tiny`` (a seconds-long run for tests and smoke checks).
"""

from pathlib import Path

import ml_collections

from nlpjax.config import apply_overrides, load_config_file

SGNS = Path(__file__).with_name("sgns.py")
STEPS_PER_EPOCH = 155  # `nlpjax data inspect --config=experiments/sgns_shakespeare.py`

VARIANTS = {
    "default": {
        "data.dataset": "tiny_shakespeare",
        "train.steps": 5 * STEPS_PER_EPOCH,
        "train.log_every": 31,
        "train.steps_per_dispatch": 31,
        "eval.every": STEPS_PER_EPOCH,
        "checkpoint.every": STEPS_PER_EPOCH,
    },
    "tiny": {},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "default"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    c = load_config_file(f"{SGNS}:tiny" if name == "tiny" else str(SGNS))
    apply_overrides(c, VARIANTS[name])
    return c
