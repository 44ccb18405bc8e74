"""T5 (v1.1 layout) trained from scratch on Multi30k German -> English.

Variants (``--config=experiments/t5_multi30k.py:NAME``):
  default  the BLEU run the README reports: the reference shape (d_model 256, 3+3 layers,
           4 heads, gated-GELU d_ff 1024, SentencePiece 8000) on packed rows of 64 source
           + 64 target tokens, 32 rows a batch, 3200 steps (about 10.5 epochs, under an hour
           on the 2-core development CPU), Adafactor with T5's relative steps (AdamW at
           1e-3 learned far slower here: README, "T5 encoder-decoder");
  compare  the speed comparison with Hugging Face T5 (benchmarks/bench_t5.py): batch 32,
           source and target 32, AdamW;
  tiny     a seconds-long run for tests and smoke checks (small model, 500 pieces).
"""

import ml_collections

from nlpjax.config import apply_overrides


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "seq2seq"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer
        d_model=256,
        num_heads=4,
        head_dim=64,
        d_ff=1024,
        num_encoder_layers=3,
        num_decoder_layers=3,
        feed_forward="gated-gelu",  # v1.1; relu for v1.0
        relative_buckets=32,
        relative_max_distance=128,
        dropout=0.1,
        tie_embeddings=False,
        norm_epsilon=1e-6,
        max_target_len=64,  # the decoder's KV cache: the longest translation
        dtype="auto",
        param_dtype="float32",
        attention="auto",
    )
    c.data = dict(
        dataset="parallel_corpus/multi30k_de_en",
        tokenizer=dict(
            kind="sentencepiece",
            vocab_size=8000,
            model_type="unigram",
            character_coverage=1.0,
            max_train_texts=2_000_000,
            min_count=1,
            max_size=0,
            lowercase=False,
            num_registers=0,
            num_sentinels=0,
        ),
        prefix="translate German to English: ",
        source_length=64,
        target_length=64,
        batch_size=32,
        label_smoothing=0.1,
        z_loss=0.0,
        bleu_examples=-1,  # greedy translations scored at each eval: -1 the whole split
        too_long="truncate",  # sources over source_length: truncate (counted) | error
        objective="translation",  # | span_corruption (t5_pretrain_multi30k.py)
        noise_density=0.15,
        mean_noise_span_length=3.0,
        tfds_data_dir="",
        prefetch=4,
    )
    c.optim = dict(
        name="adafactor",
        lr=1e-2,  # Adafactor: relative to each parameter's RMS
        warmup_steps=400,
        schedule="cosine",
        decay_steps=0,
        min_lr_ratio=0.1,
        b1=0.9,
        b2=0.98,
        eps=1e-8,
        weight_decay=0.0,
        clip_norm=1.0,
        factored=True,
        decay_rate=0.8,
        clipping_threshold=1.0,
        param_scale=True,
    )
    c.train = dict(
        steps=3200,
        log_every=100,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
        init_from="",
    )
    c.eval = dict(every=800, num_batches=20, seed=1234)
    c.checkpoint = dict(every=800, max_to_keep=3, async_save=True)
    c.parallel = dict(mode="jit", devices=0, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "compare": {
        "optim.name": "adamw",
        "optim.lr": 1e-3,
        "optim.weight_decay": 0.01,
        "model.max_target_len": 32,
        "data.source_length": 32,
        "data.target_length": 32,
    },
    "tiny": {
        "model.d_model": 32,
        "model.num_heads": 2,
        "model.head_dim": 16,
        "model.d_ff": 64,
        "model.num_encoder_layers": 1,
        "model.num_decoder_layers": 1,
        "model.dropout": 0.0,
        "model.max_target_len": 16,
        "data.tokenizer.vocab_size": 500,
        "data.tokenizer.max_train_texts": 5000,
        "data.source_length": 24,
        "data.target_length": 16,
        "data.batch_size": 4,
        "data.bleu_examples": 4,
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
