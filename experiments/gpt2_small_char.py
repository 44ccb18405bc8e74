"""GPT-2-small shape char LM on Tiny Shakespeare (12 layers, 12 heads, width 768, context 1024).

The config of the accelerator benchmark (``benchmarks/accelerator.sh``). Meant for a GPU:
``model.dtype`` and ``model.attention`` stay ``auto`` (bfloat16 compute with cuDNN flash
attention on a GPU, float32 with the reference attention on CPU).

Variants (``--config=experiments/gpt2_small_char.py:NAME``):
  default  a real run: 5000 steps of batch 12 x 1024 characters;
  bench    what the harness times: 150 steps, logged every 50, one eval and one
           checkpoint at the end;
  tiny     the same file at a toy shape, for tests and CPU dry runs of the harness;
  plan_1b  a 1.01B-parameter GPT (20 layers, 16 heads, width 2048, context 2048,
           batch 32) in bfloat16 with full remat on fsdp:8, for ``nlpjax plan``:
           ``nlpjax plan --config=experiments/gpt2_small_char.py:plan_1b
           --simulate_devices=8 --no-compile`` (not trained by any test or script).
"""

import ml_collections

from nlpjax.config import apply_overrides

# The model shapes of the variants, plain literals: benchmarks/accel_torch.py reads them
# from this file (its PyTorch twin must train the same model).
SHAPES = {
    "gpt2-small": {
        "num_layers": 12,
        "num_heads": 12,
        "d_model": 768,
        "d_ff": 3072,
        "context": 1024,
    },
    "tiny": {"num_layers": 2, "num_heads": 2, "d_model": 64, "d_ff": 256, "context": 32},
}
BATCH = {"gpt2-small": 12, "tiny": 4}


def base(shape: str) -> ml_collections.ConfigDict:
    s = SHAPES[shape]
    c = ml_collections.ConfigDict()
    c.task = "lm"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer (65 characters)
        num_layers=s["num_layers"],
        num_heads=s["num_heads"],
        d_model=s["d_model"],
        d_ff=s["d_ff"],
        max_len=s["context"],
        positions="learned",
        norm="layernorm",
        activation="gelu_tanh",
        dropout=0.0,
        tie_embeddings=True,
        use_bias=True,
        rope_base=10000.0,
        dtype="auto",
        param_dtype="float32",
        attention="auto",
        remat="none",
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
        context=s["context"],
        batch_size=BATCH[shape],
        tfds_data_dir="",
        prefetch=4,
    )
    c.optim = dict(
        name="adamw",
        lr=6e-4,
        warmup_steps=100,
        schedule="cosine",
        decay_steps=0,
        min_lr_ratio=0.1,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        clip_norm=1.0,
    )
    c.train = dict(
        steps=5000,
        log_every=50,
        steps_per_dispatch=10,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
        init_from="",
    )
    c.eval = dict(every=500, num_batches=20, seed=1234)
    c.checkpoint = dict(every=1000, max_to_keep=2, async_save=True)
    c.parallel = dict(mode="jit", devices=1, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


BENCH = {
    "train.steps": 150,
    "train.log_every": 50,
    "train.progress": False,
    "eval.every": 150,
    "eval.num_batches": 2,
    "checkpoint.every": 150,
    "checkpoint.max_to_keep": 1,
}
# A 1B-parameter model on 8 devices (fsdp:8): 20 x (12 x 2048^2 + 13 x 2048) block
# parameters + 65 x 2048 token and 2048 x 2048 position embeddings + the final norm.
PLAN_1B = {
    "model.num_layers": 20,
    "model.num_heads": 16,
    "model.d_model": 2048,
    "model.d_ff": 8192,
    "model.max_len": 2048,
    "model.dtype": "bfloat16",
    "model.remat": "full",
    "data.context": 2048,
    "data.batch_size": 32,
    "parallel.devices": 0,
    "parallel.mesh": "fsdp:8",
}
VARIANTS = {
    "default": ("gpt2-small", {}),
    "bench": ("gpt2-small", BENCH),
    "tiny": (
        "tiny",
        {
            **BENCH,
            "train.steps": 30,
            "optim.warmup_steps": 10,
            "train.log_every": 10,
            "eval.every": 30,
            "checkpoint.every": 30,
        },
    ),
    "plan_1b": ("gpt2-small", PLAN_1B),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "default"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    shape, overrides = VARIANTS[name]
    c = base(shape)
    apply_overrides(c, overrides)  # the same checks as --config.KEY=VALUE
    return c
