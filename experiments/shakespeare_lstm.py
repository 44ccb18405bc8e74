"""Character-level LSTM language model on Tiny Shakespeare, trained with truncated BPTT.

Variants (``--config=experiments/shakespeare_lstm.py:NAME``):
  default  the reference setup: 2 LSTM layers of 256, context 64, 32 streams,
           2000 steps, Adam 2e-3 with cosine decay, clipping at 1;
  gru      the same with GRU cells;
  tiny     a seconds-long run for tests and smoke checks.
"""

import ml_collections

from nlpjax.config import apply_overrides


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "rnn_lm"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer
        cell="lstm",  # lstm | gru | elman
        num_layers=2,
        d_embed=0,  # 0: d_hidden
        d_hidden=256,
        dropout=0.0,
        bidirectional=False,
        tie_embeddings=False,
        num_classes=0,
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
        context=64,  # tokens per step = truncation length
        batch_size=32,  # streams
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
        weight_decay=0.0,  # Adam
        clip_norm=1.0,
    )
    c.train = dict(
        steps=2000,
        log_every=50,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
        init_from="",
    )
    c.eval = dict(every=250, num_batches=50, seed=1234)
    c.checkpoint = dict(every=500, max_to_keep=3, async_save=True)
    c.parallel = dict(mode="jit", devices=0, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "gru": {"model.cell": "gru"},
    "tiny": {
        "model.num_layers": 1,
        "model.d_hidden": 32,
        "data.context": 16,
        "data.batch_size": 4,
        "train.steps": 20,
        "train.log_every": 5,
        "train.steps_per_dispatch": 5,
        "eval.every": 10,
        "eval.num_batches": 3,
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
