"""T5 span-corruption pretraining on the Multi30k English and German text, then finetuning
on German -> English, against training from scratch for the same total number of steps.

The model, tokenizer (SentencePiece 8000 with 100 sentinels) and data are those of
``t5_multi30k.py``; all three runs share them, so finetuning can start from the
pretrained parameters with ``train.init_from`` (same model signature, same vocabulary):

  nlpjax train --config=experiments/t5_pretrain_multi30k.py:pretrain --workdir=/tmp/t5pre
  nlpjax train --config=experiments/t5_pretrain_multi30k.py:finetune --workdir=/tmp/t5ft \\
      --config.train.init_from=/tmp/t5pre
  nlpjax train --config=experiments/t5_pretrain_multi30k.py:scratch --workdir=/tmp/t5scratch

then ``python experiments/t5_pretrain_report.py --pretrain=/tmp/t5pre --finetune=/tmp/t5ft
--scratch=/tmp/t5scratch --out=DIR`` for the curves against total steps and the table.

Variants: pretrain / finetune / scratch (PRETRAIN_STEPS + FINETUNE_STEPS = scratch's
steps) and tiny_pretrain / tiny_finetune / tiny_scratch (seconds-long, for smoke checks);
``tiny`` is ``tiny_pretrain``, the chain's first run.
"""

from pathlib import Path

import ml_collections

from nlpjax.config import apply_overrides, load_config_file

PRETRAIN_STEPS, FINETUNE_STEPS = 1200, 2000  # 3200: t5_multi30k.py's default run
TINY_PRETRAIN_STEPS, TINY_FINETUNE_STEPS = 20, 20

SHARED = {"data.tokenizer.num_sentinels": 100}  # every run: the same tokenizer
PRETRAIN = {
    "data.objective": "span_corruption",  # every text field: English and German sentences
    "data.label_smoothing": 0.0,
    "data.source_length": 32,  # corrupted inputs; targets get the matching length (10)
}
TINY = {  # t5_multi30k.py's tiny shapes
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
    "optim.warmup_steps": 5,
    "train.log_every": 5,
    "train.steps_per_dispatch": 5,
    "eval.every": 10,
    "eval.num_batches": 2,
    "checkpoint.every": 10,
    "parallel.devices": 1,
}

VARIANTS = {
    "pretrain": PRETRAIN | {"train.steps": PRETRAIN_STEPS},
    "finetune": {"train.steps": FINETUNE_STEPS, "eval.every": 400},
    "scratch": {"train.steps": PRETRAIN_STEPS + FINETUNE_STEPS},
    "tiny_pretrain": TINY
    | PRETRAIN
    | {"data.source_length": 24, "train.steps": TINY_PRETRAIN_STEPS},
    "tiny_finetune": TINY | {"train.steps": TINY_FINETUNE_STEPS},
    "tiny_scratch": TINY | {"train.steps": TINY_PRETRAIN_STEPS + TINY_FINETUNE_STEPS},
}
VARIANTS["tiny"] = VARIANTS["tiny_pretrain"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "pretrain"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    c = load_config_file(str(Path(__file__).with_name("t5_multi30k.py")))
    apply_overrides(c, SHARED | VARIANTS[name])
    return c
