"""LSTM encoder-decoder with attention on Multi30k German -> English (task ``rnn_seq2seq``).

Variants (``--config=experiments/multi30k_lstm.py:NAME``):
  default   bidirectional LSTM encoder (512 per direction), LSTM decoder 512 with Luong
            ("general" dot) attention, joint SentencePiece 4000, one padded pair per row
            (source and target 32 tokens; evaluation reads sources and decodes outputs of
            up to 64), batch 64, Adam 3e-3 (200 warm-up steps, cosine to 5%), clipping at
            1, dropout 0.3, label smoothing 0.1, 6000 steps (13.2 epochs); evaluation:
            greedy BLEU/chrF of the 1014 validation sentences every 1500 steps.
            test_2016: BLEU 32.93 (chrF 51.87) greedy, 33.58 (chrF 52.33) beam 5
            (``nlpjax eval --workdir=W --split=test_2016 [--beam_size=5]``);
  small     the earlier default: 256 units, dropout 0.2 (test_2016 BLEU 23.55 greedy,
            25.13 beam 5);
  feeding   ``small`` with Luong's input feeding (model.input_feeding): test_2016 BLEU
            23.30 greedy, 24.94 beam 5, no gain over ``small``;
  additive  the default with Bahdanau (additive) attention (not measured);
  tiny      a seconds-long run for tests and smoke checks.
Results and commands: experiments/README.md.

The 6000 steps took 85 minutes of wall time on the 2-core CPU shared with other jobs
(logged median 5.6k tokens/s, 0.74 s a step of 64 x (32 + 32) tokens; about 2.3x the
``small`` model's step); ``small`` fits in about 45 minutes.
"""

import ml_collections

from nlpjax.config import apply_overrides


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "rnn_seq2seq"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer
        cell="lstm",
        num_layers=1,
        d_embed=256,
        d_hidden=512,
        dropout=0.3,
        bidirectional=True,  # the encoder; the decoder reads left to right
        tie_embeddings=False,
        num_classes=0,
        pooling="final",
        attention="dot",  # dot (Luong) | additive (Bahdanau)
        input_feeding=False,  # variant feeding: Luong's input feeding
        target_vocab_size=0,  # shared vocabulary
        dtype="auto",
        param_dtype="float32",
        unroll=1,
    )
    c.data = dict(
        dataset="parallel_corpus/multi30k_de_en",
        tokenizer=dict(
            kind="sentencepiece",
            vocab_size=4000,
            model_type="unigram",
            character_coverage=1.0,
            max_train_texts=2_000_000,
            min_count=1,
            max_size=0,
            lowercase=False,
            num_registers=0,
            num_sentinels=0,
        ),
        prefix="",
        source_length=32,
        target_length=32,
        # Evaluation reads whole sources and decodes up to 64 tokens (test_2016's longest
        # source has 48, its longest reference 43); training rows stay 32 + 32.
        eval_length=64,
        batch_size=64,
        label_smoothing=0.1,
        z_loss=0.0,
        bleu_examples=1014,  # the whole validation split (test_2016 has 1000)
        beam_size=1,
        tfds_data_dir="",
        prefetch=4,
    )
    c.optim = dict(
        name="adamw",
        lr=3e-3,
        warmup_steps=200,
        schedule="cosine",
        decay_steps=0,
        min_lr_ratio=0.05,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        clip_norm=1.0,
    )
    c.train = dict(
        steps=6000,  # 13.2 epochs of the 29,000 training pairs
        log_every=100,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
    )
    c.eval = dict(every=1500, num_batches=15, seed=1234)
    c.checkpoint = dict(every=1000, max_to_keep=3, async_save=True)
    c.parallel = dict(mode="jit", devices=0, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


SMALL = {"model.d_hidden": 256, "model.dropout": 0.2}  # the earlier default
VARIANTS = {
    "default": {},
    "small": SMALL,
    "feeding": SMALL | {"model.input_feeding": True},
    "additive": {"model.attention": "additive"},
    "tiny": {
        "model.d_embed": 32,
        "model.d_hidden": 32,
        "model.dropout": 0.0,
        "data.tokenizer.vocab_size": 500,
        "data.tokenizer.max_train_texts": 5000,
        "data.source_length": 24,
        "data.target_length": 16,
        "data.batch_size": 4,
        "data.bleu_examples": 4,
        "data.label_smoothing": 0.0,
        "train.steps": 20,
        "optim.warmup_steps": 5,
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
