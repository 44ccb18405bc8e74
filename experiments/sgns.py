"""Word2vec skip-gram with negative sampling: gensim's settings on any corpus.

Defaults are gensim 4.x's ``Word2Vec`` defaults with ``sg=1``: negative=5, window=5,
sample=1e-3, min_count=5, vector_size=100, epochs=5, ns_exponent=0.75, learning rate
0.025 decaying linearly to 0.0001. The default corpus is the shared Tiny Shakespeare
text plus the Multi30k English training captions (about 0.55M words, the corpus of
``benchmarks/bench_sgns.py``), read from ``$NLPJAX_DATA_DIR`` when the config is loaded.

``data.dataset`` takes any corpus (``nlpjax.data.sources``), trained on its train split
only (no validation split is needed):
  --config.data.dataset='files:corpus.txt'          one file (each line a sentence)
  --config.data.dataset='files:path/to/dir'         every *.txt below a directory
  --config.data.dataset='tfds:lm1b'                 a TFDS text dataset by name (prepared)
A step trains on ``data.chunk`` consecutive words of the stream after subsampling (the
host subsamples the corpus anew every epoch). Set ``train.steps`` to epochs x the steps
per epoch that ``nlpjax data inspect`` prints (and ``eval.every`` / ``checkpoint.every``
to one epoch, all multiples of ``train.steps_per_dispatch``).

Variants (``--config=experiments/sgns.py:NAME``):
  default  the settings above on the default corpus (5 epochs, chunks of 768 kept words);
  tiny     a seconds-long run on Tiny Shakespeare for tests and smoke checks.

Evaluation at every epoch: ``eval/wordsim353``, ``eval/simlex999`` (Spearman) and
``eval/analogy`` (3CosAdd accuracy in [0, 1] over the 30,000 most frequent words) in
``metrics.jsonl``, from ``$NLPJAX_DATA_DIR/word_eval`` (or ``data.word_eval_dir``).
"""

import ml_collections

from nlpjax.config import apply_overrides
from nlpjax.data import raw

EPOCHS = 5
# The default corpus has 503,008 words in its vocabulary (7,861 words with count >= 5), of
# which subsampling keeps 73.0% per epoch: 478 chunks of 768 kept words
# (`nlpjax data inspect --config=experiments/sgns.py`). 1,024 kept words per step diverge at
# lr 0.025 (a frequent word's updates add up within a chunk; benchmarks/README.md).
DEFAULT_STEPS_PER_EPOCH = 478


def default_corpus() -> str:
    """The shared Tiny Shakespeare + Multi30k English training text as a ``files:`` spec."""
    data = raw.data_dir()
    files = [data / "tinyshakespeare" / "input.txt", data / "multi30k" / "train.en.gz"]
    return "files:" + ",".join(str(f) for f in files)


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "sgns"
    c.seed = 0
    c.model = dict(
        vocab_size=0,  # from the vocabulary
        embed_dim=100,  # gensim's vector_size
        objective="skipgram",  # skipgram (gensim's sg=1) | cbow
        window=5,
        negatives=5,
        negative_sharing="batch",  # pair | center | block | batch
        batch_negatives=64,
    )
    c.data = dict(
        dataset=default_corpus(),
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
        chunk=768,
        batch_size=1,
        sample=1e-3,
        ns_exponent=0.75,
        word_eval_dir="",
        analogy_restrict=30_000,
        tfds_data_dir="",
        prefetch=0,  # a batch is a slice of the subsampled stream: no thread needed
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
        steps=EPOCHS * DEFAULT_STEPS_PER_EPOCH,
        log_every=239,
        steps_per_dispatch=239,  # 2 dispatches per epoch
        progress=True,
        peak_tflops=0.0,
        microbatches=1,
    )
    c.eval = dict(every=DEFAULT_STEPS_PER_EPOCH, num_batches=4, seed=1234)
    c.checkpoint = dict(every=DEFAULT_STEPS_PER_EPOCH, max_to_keep=2, async_save=True)
    c.parallel = dict(mode="jit", devices=1, mesh="data:-1", rules="")
    return ml_collections.ConfigDict(c)


VARIANTS = {
    "default": {},
    "tiny": {
        "data.dataset": "tiny_shakespeare",
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
