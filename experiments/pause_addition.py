"""Pause tokens on multi-digit addition without chain-of-thought (Goyal et al. 2023,
https://arxiv.org/abs/2310.02226): a small byte-level decoder (2 layers, width 64)
pretrained on a stream of ``A+B=C`` lines (``addition:2``: 2-digit operands, 3-digit
sums, 4,000 training problems, 200 unseen validation ones), then finetuned on the same
training problems as prompt/answer rows (loss on the answer only) and scored by exact
match on the validation prompts.

Variants (``--config=experiments/pause_addition.py:NAME``):
  pretrain        standard pretraining on the addition stream;
  pause_pretrain  the same with 10% learned <pause> tokens inserted at random places
                  (the loss skips the positions whose next token is a pause);
  finetune        prompt/answer finetuning; give it ``--config.train.init_from=PRETRAINED``
                  and ``--config.data.pause_finetune=M_ft`` (0 = standard finetuning);
  tiny            a seconds-long pretraining run (tests); ``tiny_finetune`` its finetuning.

``python experiments/pause_grid.py`` runs the 2x2 (standard / pause pretraining x
standard / pause finetuning) for M in {0, 2, 5, 10} and 3 seeds, and writes the table of
exact match (mean and spread) for every M_inf.
"""

import ml_collections

from nlpjax.config import apply_overrides

DATASET = "addition:2;train=4000;validation=200;seed=0"


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "lm"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the tokenizer
        num_layers=2,
        num_heads=4,
        d_model=64,
        d_ff=256,
        max_len=24,
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
        num_registers=0,
        sink_token=False,
    )
    c.data = dict(
        dataset=DATASET,
        tokenizer=dict(kind="byte", num_registers=4, num_sentinels=0),  # byte has <pause>
        context=24,  # a row: 6 prompt + up to 10 pauses + 3 answer + EOS = 20 tokens
        batch_size=32,
        tfds_data_dir="",
        prefetch=4,
        pause_pretrain=False,
        pause_fraction=0.1,
        pause_filler="",
        answer_separator="",
        pause_finetune=0,
        pause_inference=0,
    )
    c.optim = dict(
        name="adamw",
        lr=1e-3,
        warmup_steps=100,
        schedule="cosine",
        decay_steps=0,
        min_lr_ratio=0.1,
        b1=0.9,
        b2=0.99,
        eps=1e-8,
        weight_decay=0.1,
        clip_norm=1.0,
    )
    c.train = dict(
        steps=800,
        log_every=100,
        steps_per_dispatch=50,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
        init_from="",  # finetuning: the pretrained workdir
    )
    c.eval = dict(every=400, num_batches=8, seed=1234, probes=False)
    c.checkpoint = dict(every=400, max_to_keep=1, async_save=True)
    c.parallel = dict(mode="jit", devices=1, mesh="data:1", rules="")
    return ml_collections.ConfigDict(c)


FINETUNE = {
    "data.answer_separator": "=",  # loss on the answer (and its EOS) only
    "train.steps": 400,
    "optim.warmup_steps": 50,
}
TINY = {
    "data.dataset": "addition:2;train=200;validation=16;seed=0",
    "model.num_layers": 1,
    "model.d_model": 32,
    "model.d_ff": 64,
    "model.num_heads": 2,
    "data.context": 24,
    "model.max_len": 24,
    "data.batch_size": 8,
    "train.steps": 10,
    "train.log_every": 5,
    "train.steps_per_dispatch": 5,
    "optim.warmup_steps": 0,
    "eval.every": 10,
    "eval.num_batches": 2,
    "checkpoint.every": 10,
}
VARIANTS = {
    "pretrain": {},
    "pause_pretrain": {"data.pause_pretrain": True},
    "finetune": FINETUNE,
    "tiny": TINY,
    "tiny_finetune": {**TINY, **FINETUNE, "train.steps": 10, "optim.warmup_steps": 0},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "pretrain"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    c = base()
    apply_overrides(c, VARIANTS[name])
    return c
