"""Word-level LSTM language model on Tiny Shakespeare, trained with truncated BPTT.

Words are the whitespace-separated, lowercased tokens of the text (punctuation stays
attached, as the ``word`` tokenizer splits); words seen fewer than 3 times in the
training split become ``<unk>`` (6,118 words; 17.7% of the validation tokens are
``<unk>``, and predicting them counts, as on the Penn Treebank). The shape follows
Zaremba et al. 2014 (35 steps of truncated BPTT over 20 streams, dropout on the
non-recurrent connections), sized for this 182k-word corpus and a 2-core CPU.

Variants (``--config=experiments/shakespeare_word_lstm.py:NAME``):
  default  2 x 256 LSTM, dropout 0.3, 1000 steps (about 4 epochs), Adam 2e-3 with cosine
           decay, clipping at 1; validation over the first 26 steps of the 20 validation
           streams (18,200 of its 20,153 words), the state carried from zeros;
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
        cell="lstm",
        num_layers=2,
        d_embed=0,  # 0: d_hidden
        d_hidden=256,
        dropout=0.3,
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
        tokenizer=dict(kind="word", min_count=3, lowercase=True, num_registers=0),
        context=35,
        batch_size=20,
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
        log_every=50,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
    )
    c.eval = dict(every=200, num_batches=26, seed=1234)
    c.checkpoint = dict(every=500, max_to_keep=3, async_save=True)
    c.parallel = dict(mode="jit", devices=0, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "tiny": {
        "model.num_layers": 1,
        "model.d_hidden": 32,
        "model.dropout": 0.0,
        "data.tokenizer.min_count": 20,
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
