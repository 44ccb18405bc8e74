"""Word2vec skip-gram with negative sampling on Tiny Shakespeare (gensim's settings).

Variants (``--config=experiments/sgns_shakespeare.py:NAME``):
  default  sg, negative=5, window=5, sample=1e-3, min_count=5, 100 dimensions, about 5
           epochs of the training split; word2vec's SGD at lr 0.025 decaying to 0.0001;
  tiny     a seconds-long run for tests and smoke checks.

Evaluation (``eval/wordsim353``, ``eval/simlex999``, ``eval/analogy``) reads
``$NLPJAX_DATA_DIR/word_eval`` (or ``data.word_eval_dir``).
"""

import ml_collections

from nlpjax.config import apply_overrides


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "sgns"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the vocabulary
        embed_dim=100,
        objective="skipgram",  # skipgram | cbow
        window=5,
        negatives=5,
        negative_sharing="batch",  # pair | center | block | batch
        batch_negatives=64,
    )
    c.data = dict(
        dataset="tiny_shakespeare",
        tokenizer=dict(
            kind="word",
            vocab_size=8000,
            model_type="unigram",
            character_coverage=1.0,
            max_train_texts=2_000_000,
            min_count=5,
            max_size=0,
            lowercase=False,
            num_registers=4,
            num_sentinels=0,
        ),
        chunk=1024,
        batch_size=1,
        sample=1e-3,
        ns_exponent=0.75,
        word_eval_dir="",
        analogy_restrict=30_000,
        tfds_data_dir="",
        prefetch=2,
    )
    # Only lr and min_lr_ratio are read: the task's own SGD with a linear decay.
    c.optim = dict(
        name="sgd",
        lr=0.025,
        warmup_steps=0,
        schedule="constant",
        decay_steps=0,
        min_lr_ratio=0.004,  # 0.025 -> 0.0001, word2vec's
        b1=0.9,
        b2=0.99,
        eps=1e-8,
        weight_decay=0.0,
        clip_norm=0.0,
    )
    c.train = dict(
        steps=750,  # 5 epochs of 150 chunks of 1,024 training words
        log_every=50,
        steps_per_dispatch=50,
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
        init_from="",
    )
    c.eval = dict(every=150, num_batches=4, seed=1234)
    c.checkpoint = dict(every=150, max_to_keep=2, async_save=True)
    c.parallel = dict(mode="jit", devices=1, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "tiny": {
        "model.embed_dim": 16,
        "data.chunk": 256,
        "train.steps": 20,
        "optim.lr": 0.5,  # enough to move the vectors in 20 steps
        "train.log_every": 5,
        "train.steps_per_dispatch": 5,
        "eval.every": 10,
        "eval.num_batches": 2,
        "checkpoint.every": 10,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "default"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    c = base()
    apply_overrides(c, VARIANTS[name])
    return c
