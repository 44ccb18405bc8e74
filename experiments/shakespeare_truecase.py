"""Truecasing Tiny Shakespeare (``rnn_tagger``): restore the capitals of lowercased lines.

Every non-blank line is an example; the input is the line lowercased, the target one tag
per character (``keep`` or ``upper``; ``nlpjax.data.truecase``). Train on the ``train``
split (the first 90% of the file), evaluate on ``validation`` (the last 10%).

Variants (``--config=experiments/shakespeare_truecase.py:NAME``):
  default  characters, a bidirectional LSTM (128 per direction, 2 layers), Adam 2e-3
           cosine, 400 steps of 64 lines;
  tiny     a seconds-long run for tests and smoke checks.
Accuracy over all characters, macro-F1 over the two tags and the all-``keep`` baseline:
``nlpjax eval --workdir=W``.
"""

import ml_collections

from nlpjax.config import apply_overrides


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "rnn_tagger"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer
        cell="lstm",
        num_layers=2,
        d_embed=64,
        d_hidden=128,
        dropout=0.1,
        bidirectional=True,
        tie_embeddings=False,
        num_classes=0,  # from the tags
        pooling="final",
        attention="dot",
        target_vocab_size=0,
        dtype="auto",
        param_dtype="float32",
        unroll=1,
    )
    c.data = dict(
        dataset="tiny_shakespeare",
        tokenizer=dict(kind="char"),
        max_length=64,  # characters; the longest line of Tiny Shakespeare has 61
        overflow="error",
        batch_size=64,
        eval_batch_size=512,
        tfds_data_dir="",
        prefetch=4,
    )
    c.optim = dict(
        name="adamw",
        lr=2e-3,
        warmup_steps=0,
        schedule="cosine",
        decay_steps=0,
        min_lr_ratio=0.0,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        clip_norm=1.0,
    )
    c.train = dict(
        steps=400,  # what the shared CPU allowed (about 6 s a step at load 20)
        log_every=100,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
    )
    c.eval = dict(every=200, num_batches=10, seed=1234)
    c.checkpoint = dict(every=200, max_to_keep=2, async_save=True)
    c.parallel = dict(mode="jit", devices=0, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "tiny": {
        "model.num_layers": 1,
        "model.d_embed": 16,
        "model.d_hidden": 16,
        "model.dropout": 0.0,
        "data.batch_size": 8,
        "train.steps": 20,
        "train.log_every": 5,
        "train.steps_per_dispatch": 5,
        "eval.every": 10,
        "eval.num_batches": 2,
        "checkpoint.every": 10,
        "parallel.devices": 1,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "default"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    c = base()
    apply_overrides(c, VARIANTS[name])
    return c
