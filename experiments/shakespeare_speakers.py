"""Which of the 5 most frequent speakers of Tiny Shakespeare says a line (``rnn_classifier``).

The data (``nlpjax.data.shakespeare_speakers``): every spoken line of CORIOLANUS, DUKE
VINCENTIO, GLOUCESTER, KING RICHARD II and LEONTES (whole speeches per split: speech 8 of
every 10 to validation, 9 to test; 2975 / 484 / 376 lines), written once as
``label<TAB>line`` files under ``$TFDS_DATA_DIR/shakespeare_speakers`` (or
``data.tfds_data_dir``).

Variants (``--config=experiments/shakespeare_speakers.py:NAME``):
  default  lowercased words (seen twice or more), a bidirectional LSTM (128 per direction)
           max-pooled over the line, dropout 0.5, Adam 2e-3 cosine, 1000 steps of 32 lines;
  mean     the same with mean pooling;  final: with the final states;
  tiny     a seconds-long run for tests and smoke checks.
Test accuracy and macro-F1: ``nlpjax eval --workdir=W --split=test`` (the majority-class
baseline is printed with them).
"""

import os

import ml_collections

from nlpjax.config import apply_overrides
from nlpjax.data import shakespeare_speakers
from nlpjax.data.tfds_builders.common import tfds_data_dir


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "rnn_classifier"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer
        cell="lstm",
        num_layers=1,
        d_embed=128,
        d_hidden=128,
        dropout=0.5,
        bidirectional=True,
        tie_embeddings=False,
        num_classes=0,  # from the labels
        pooling="max",  # final | max | mean
        attention="dot",
        target_vocab_size=0,
        dtype="auto",
        param_dtype="float32",
        unroll=1,
    )
    c.data = dict(
        dataset="",  # filled in by get_config (the speaker files)
        tokenizer=dict(kind="word", min_count=2, lowercase=True, num_registers=0),
        max_length=32,  # words; the longest line has 19
        overflow="error",  # error | truncate
        batch_size=32,
        eval_batch_size=256,
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
        steps=1000,
        log_every=100,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
    )
    c.eval = dict(every=250, num_batches=10, seed=1234)
    c.checkpoint = dict(every=500, max_to_keep=2, async_save=True)
    c.parallel = dict(mode="jit", devices=0, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "mean": {"model.pooling": "mean"},
    "final": {"model.pooling": "final"},
    "tiny": {
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
    out_dir = os.path.join(tfds_data_dir(c.data.tfds_data_dir), "shakespeare_speakers")
    c.data.dataset = shakespeare_speakers.ensure_splits(out_dir)
    return c
