"""Character-level decoder LM on Tiny Shakespeare (4 layers, 4 heads, width 128).

Variants (``--config=experiments/shakespeare_char.py:NAME``):
  default  the reference run: 2000 steps, reaches val loss <= 1.90 nats/char;
  demo     what ``make demo`` trains (same model, fewer steps);
  tiny     a seconds-long run for tests and smoke checks.
"""

import ml_collections

from nlpjax.config import apply_overrides


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "lm"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer
        num_layers=4,
        num_heads=4,
        d_model=128,
        d_ff=512,
        max_len=64,
        positions="learned",
        norm="layernorm",
        activation="gelu_tanh",
        dropout=0.0,
        tie_embeddings=True,
        use_bias=True,
        rope_base=10000.0,
        dtype="auto",  # bfloat16 on GPU/TPU, float32 on CPU
        param_dtype="float32",
        attention="auto",  # cuDNN flash attention on GPU where supported
        remat="none",
        num_registers=0,  # learned register vectors in front of every sequence
        sink_token=False,  # one learned sink vector at position 0
    )
    c.data = dict(
        dataset="tiny_shakespeare",
        tokenizer=dict(  # nlpjax.data.tokenizers.TokenizerConfig; char uses only kind
            kind="char",  # char | byte | word | sentencepiece
            vocab_size=8000,  # sentencepiece: pieces requested (small corpora get fewer)
            model_type="unigram",  # sentencepiece: unigram | bpe
            character_coverage=1.0,  # sentencepiece
            max_train_texts=2_000_000,  # sentencepiece: training lines, at most
            min_count=1,  # word: rarer words become <unk>
            max_size=0,  # word: keep the most frequent words only (0 = all)
            lowercase=False,  # word
            num_registers=4,  # byte/word/sentencepiece: reserved register ids
            num_sentinels=0,  # byte/word/sentencepiece: span-corruption sentinels
        ),
        context=64,
        batch_size=12,
        tfds_data_dir="",
        prefetch=4,
        pause_pretrain=False,  # pause tokens need a <pause> id: tokenizer byte/word/sp
        pause_fraction=0.1,
        pause_filler="",  # filler control: e.g. "." instead of the learned <pause>
        answer_separator="",  # "=": lines PROMPT=ANSWER, loss on the answer only
        pause_finetune=0,  # M_ft pauses after each prompt
        pause_inference=0,  # M_inf pauses after each prompt when generating
    )
    c.optim = dict(
        name="adamw",
        lr=1e-3,
        warmup_steps=100,
        schedule="cosine",
        decay_steps=0,  # 0: decay over train.steps
        min_lr_ratio=0.1,
        b1=0.9,
        b2=0.99,
        eps=1e-8,
        weight_decay=0.1,
        clip_norm=1.0,
    )
    c.train = dict(
        steps=2000,
        log_every=50,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,  # gradient accumulation: split each batch into k parts
        init_from="",  # WORKDIR[:STEP]: start from that checkpoint's parameters (finetuning)
    )
    c.eval = dict(every=250, num_batches=50, seed=1234, probes=False)
    c.checkpoint = dict(every=500, max_to_keep=3, async_save=True)
    c.parallel = dict(mode="jit", devices=0, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "demo": {"train.steps": 1000, "eval.every": 250, "checkpoint.every": 250},
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
    c = base()
    apply_overrides(c, VARIANTS[name])  # the same checks as --config.KEY=VALUE
    return c
