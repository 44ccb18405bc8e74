"""The course's claim, checked: skip-gram's u_o . v_c against PMI(c, o) - log k.

    NLPJAX_DATA_DIR=... python experiments/sgns_pmi.py [--out=DIR] [--epochs=N] [--words=a,b]
        [--variant=tiny]

Trains ``experiments/sgns.py`` on Tiny Shakespeare's training split (without subsampling,
so the training pairs are the dynamic window's pairs of the plain stream; otherwise
gensim's settings, in 256-word chunks), then sets the trained scores u_o . v_c of every
(center, context) pair seen at least ``--min_pairs`` times (expected count) against the shifted PMI
log(#(c, o) / (#(c) P_n(o))) - log k (``nlpjax.analysis.word_vectors``), with P_n the
unigram^0.75 noise distribution the negatives come from. Writes to ``--out``:
``pmi.json`` (correlations, slope, per threshold), ``pmi_scatter.png`` and ``pca.png``
(a 2-D PCA map of ``--words``). Running it again reuses the trained workdir. A few
minutes on a laptop CPU. An experiment, not a test: the numbers go to the README.
``--variant=tiny`` is the smoke check: ``sgns.py:tiny``'s 16-dimensional vectors, one
epoch, into ``/tmp/sgns_pmi_tiny`` (seconds; its correlations mean nothing).
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from nlpjax import api
from nlpjax.analysis import word_vectors as wva
from nlpjax.data.skipgram_pipeline import training_counts

EXPERIMENT = str(Path(__file__).with_name("sgns.py"))
TABLES = ("center", "context")
WORDS = (
    "king,queen,prince,duke,lord,lady,man,woman,father,mother,son,daughter,brother,sister,"
    "love,hate,good,bad,night,day,heaven,earth,sword,blood,death,life"
)


# Per variant: flag defaults, the experiment config it trains, and config overrides
# (tiny's lr 0.5 diverges without subsampling: word2vec's 0.025 instead).
VARIANTS = {
    "default": ({}, EXPERIMENT, {}),
    "tiny": ({"epochs": 1, "out": "/tmp/sgns_pmi_tiny"}, EXPERIMENT + ":tiny", {"optim.lr": 0.025}),
}


def train(
    workdir: Path, epochs: int, experiment: str = EXPERIMENT, extra: dict | None = None
) -> api.Trained:
    # Without subsampling a 1,024-word chunk repeats frequent words enough for word2vec's
    # summed SGD at lr 0.025 to diverge; 256-word chunks stay stable.
    overrides = {"data.dataset": "tiny_shakespeare", "data.sample": 0.0, "data.chunk": 256}
    overrides |= extra or {}
    config = api.load_config(experiment, overrides)
    per_epoch = api.task_class(config)(config).steps_per_epoch()
    steps = per_epoch * epochs
    overrides |= {"train.steps": steps, "train.steps_per_dispatch": per_epoch}
    overrides |= {"train.log_every": per_epoch, "eval.every": steps, "checkpoint.every": steps}
    api.train(api.load_config(experiment, overrides), workdir)
    return api.load(workdir)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/sgns_pmi", help="workdir and outputs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--words", default=WORDS, help="comma-separated words for the PCA map")
    parser.add_argument("--min_pairs", type=float, default=5.0)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    defaults, experiment, extra = VARIANTS[parser.parse_known_args(argv)[0].variant]
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained = train(out / "workdir", args.epochs, experiment, extra)
    task, params = trained.task, trained.params
    center, context = (np.asarray(jax.device_get(params[k]), np.float64) for k in TABLES)
    config = trained.config
    vocab = center.shape[0]
    ids, segments = task.stream("train")
    pairs = wva.window_pair_counts(ids, segments, vocab, config.model.window)
    counts = training_counts(task.tokenizer.counts_array()).astype(np.float64)
    noise = counts**config.data.ns_exponent
    target = wva.shifted_pmi(pairs, noise / noise.sum(), config.model.negatives)
    scores = center @ context.T  # [c, o] = u_o . v_c
    report = {
        "corpus_words": len(ids),
        "vocabulary": vocab,
        "epochs": args.epochs,
        "agreement": {
            str(m): wva.pmi_agreement(scores, target, pairs, m)
            for m in (1.0, args.min_pairs, 20.0, 100.0)
        },
        "eval": {k: v for k, v in trained.evaluate().items() if not k.endswith("coverage")},
    }
    chosen = (pairs >= args.min_pairs) & np.isfinite(target)
    wva.plot_pmi_scatter(
        scores[chosen],
        target[chosen],
        out / "pmi_scatter.png",
        f"Tiny Shakespeare, {int(chosen.sum()):,} pairs seen >= {args.min_pairs:g} times: "
        f"Pearson {report['agreement'][str(args.min_pairs)]['pearson']:.2f}",
    )
    wv = task.word_vectors(params)
    index = {w: i for i, w in enumerate(wv.words)}
    words = [w for w in args.words.split(",") if w in index]
    wva.plot_words_pca(words, wv.vectors[[index[w] for w in words]], out / "pca.png")
    (out / "pmi.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'pmi.json'}, {out / 'pmi_scatter.png'}, {out / 'pca.png'}")
    return report


if __name__ == "__main__":
    main()
