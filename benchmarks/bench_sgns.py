"""word2vec: `nlpjax train` (the product) against gensim 4.x, same corpus, same machine.

    pip install -e '.[bench]'        # gensim (and torch, for the decoder bench)
    NLPJAX_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_sgns.py [--json=out.json]
    .venv/bin/python benchmarks/bench_sgns.py --vocab_scaling   # step time, vocabulary 10k vs 1M

Both sides train skip-gram with negative sampling with gensim's settings (sg=1, negative=5,
window=5, sample=1e-3, min_count=5, vector_size=100, epochs=5) on the same sentences:
the train split of ``experiments/sgns.py``'s corpus (Tiny Shakespeare lines + Multi30k
English training captions, ~0.55M whitespace words; ``--dataset`` takes any spec), each
non-empty line a sentence.

gensim's side: ``Word2Vec(sentences, ...)`` with 2 worker threads, timed from reading the
same prepared corpus (the train split nlpjax reads, split into sentences:
``read_sentences``) to the trained vectors, which then go through nlpjax's word evaluation
(``nlpjax.tasks.sgns.evaluate_word_vectors``: WordSim-353 and SimLex-999 Spearman,
3CosAdd analogy accuracy over the 30,000 most frequent words).

nlpjax's side: the command ``nlpjax train --config=experiments/sgns.py --workdir=DIR``
with the same settings as ``--config.*`` overrides, run in this process through
``nlpjax.cli.main`` and timed whole: reading the prepared corpus, building the
vocabulary, the subsampled stream, initialisation, compilation, training, the run's
final evaluation and its checkpoint. Its quality is what that evaluation logged in
``DIR/metrics.jsonl``. Before the clock starts the corpus is prepared (TFDS, once) and
the steps per epoch are read from a task built on it (what ``nlpjax data inspect``
prints): ``train.steps`` = epochs x that, one dispatch per epoch, evaluation and
checkpoint at the end only. Extra ``--config.KEY=VALUE`` arguments go to the command.

The command runs twice, on fresh workdirs: first with an empty compilation cache (a first
run on a machine: ``nlpjax``, ``ratio``), then again (``nlpjax_warm``, ``ratio_warm``),
when the command loads its compiled programs from the persistent cache it keeps by
default (``nlpjax/compile_cache.py``) as every later run of an experiment does. jax's
in-memory caches are cleared before each, so the second run gets nothing a new process
would not.

Words/s = corpus words x epochs / those wall times. Imports and preparing the corpus from
the raw files are outside both clocks; reading the prepared corpus is inside both.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NLPJAX_DATA_DIR", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))
CONFIG = str(REPO / "experiments" / "sgns.py")


def _host_devices(argv: list[str]) -> int:
    """``--devices=N`` (read before jax is imported: it sets the CPU device count)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("--devices=")]
    return int(values[-1]) if values else 1


if _host_devices(sys.argv) > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={_host_devices(sys.argv)}"
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nlpjax import api, cli  # noqa: E402
from nlpjax.compile_cache import jax_settings  # noqa: E402
from nlpjax.data.special_tokens import NUM_SPECIAL  # noqa: E402
from nlpjax.evaluation import word_vectors as wvec  # noqa: E402
from nlpjax.tasks.common import split_documents  # noqa: E402
from nlpjax.tasks.sgns import SGNSTask, evaluate_word_vectors  # noqa: E402
from nlpjax.training.metrics import read_metrics  # noqa: E402
from nlpjax.training.state import TrainState  # noqa: E402
from nlpjax.training.step import make_multi_step, make_train_step  # noqa: E402

WORD_EVAL = Path(os.environ["NLPJAX_DATA_DIR"]) / "word_eval"
QUALITY = ("wordsim353", "wordsim353_coverage", "simlex999", "simlex999_coverage")
QUALITY += ("analogy", "analogy_coverage")


def read_sentences(dataset: str) -> list[list[str]]:
    """The train split's non-empty lines split on whitespace (what the sgns task reads)."""
    lines = (line for doc in split_documents(dataset, "train", "") for line in doc.splitlines())
    return [words for words in (line.split() for line in lines) if words]


# -- gensim -----------------------------------------------------------------------------


def run_gensim(args) -> tuple[float, dict]:
    from gensim.models import Word2Vec

    start = time.perf_counter()
    sentences = read_sentences(args.dataset)  # from the prepared corpus, as nlpjax's clock
    model = Word2Vec(
        sentences,
        sg=1,
        negative=args.negatives,
        window=args.window,
        sample=args.sample,
        min_count=args.min_count,
        vector_size=args.dim,
        epochs=args.epochs,
        workers=args.workers,
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    wv = wvec.WordVectors(list(model.wv.index_to_key), np.array(model.wv.vectors))
    return seconds, evaluate_word_vectors(wv, WORD_EVAL, 30_000)


# -- nlpjax train -------------------------------------------------------------------------


def train_overrides(args, extra: list[str]) -> dict:
    """gensim's settings (and ``--devices``) as ``experiments/sgns.py`` overrides."""
    overrides = {
        "seed": args.seed,
        "data.dataset": args.dataset,
        "model.embed_dim": args.dim,
        "model.window": args.window,
        "model.negatives": args.negatives,
        "data.sample": args.sample,
        "data.tokenizer.min_count": args.min_count,
    }
    if args.devices > 1:  # one chunk per device, each 1/devices of the single-device chunk
        chunk = api.load_config(CONFIG, overrides).data.chunk
        overrides |= {"parallel.devices": args.devices, "parallel.mesh": f"data:{args.devices}"}
        overrides |= {"data.batch_size": args.devices, "data.chunk": chunk // args.devices}
    for item in extra:
        key, value = item[len("--config.") :].split("=", 1)
        overrides[key] = value
    return overrides


def schedule(overrides: dict, epochs: int) -> tuple[dict, int]:
    """The overrides with ``train.steps`` for ``epochs`` (steps per epoch from a task built
    on the corpus, which also prepares it), one dispatch per epoch, one evaluation and
    checkpoint at the end. Returns (overrides, steps per epoch)."""
    per_epoch = SGNSTask(api.load_config(CONFIG, overrides)).steps_per_epoch()
    steps = per_epoch * epochs
    timed = {"train.steps": steps, "train.steps_per_dispatch": per_epoch}
    timed |= {"train.log_every": per_epoch, "eval.every": steps, "checkpoint.every": steps}
    return overrides | timed, per_epoch


def run_nlpjax(args, extra: list[str], workdir: Path) -> tuple[float, dict]:
    """Times ``nlpjax train`` on a fresh ``workdir``; returns (seconds, its numbers)."""
    overrides, per_epoch = schedule(train_overrides(args, extra), args.epochs)
    argv = ["train", f"--config={CONFIG}", f"--workdir={workdir}"]
    argv += [f"--config.{k}={v}" for k, v in overrides.items()]
    start = time.perf_counter()
    code = cli.main(argv)
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"nlpjax train exited with {code}: {' '.join(argv)}")
    rows = read_metrics(workdir)
    losses = [r["train/pair_loss"] for r in rows if "train/pair_loss" in r]
    final = [r for r in rows if "eval/analogy" in r][-1]
    stats = {
        "steps": final["step"],
        "steps_per_epoch": per_epoch,
        "first_epoch_loss": losses[0],
        "last_epoch_loss": losses[-1],
        "command": "nlpjax " + " ".join(argv),
    }
    quality = {k: float(final[f"eval/{k}"]) for k in QUALITY if f"eval/{k}" in final}
    return seconds, stats | quality


@contextlib.contextmanager
def compilation_cache(directory: str):
    """JAX's persistent compilation cache in ``directory`` (the command's settings,
    ``nlpjax/compile_cache.py``), the previous settings restored on exit."""
    keys = jax_settings(directory)
    before = {key: getattr(jax.config, key) for key in keys}
    for key, value in keys.items():
        jax.config.update(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            jax.config.update(key, value)


# -- step time against the vocabulary -------------------------------------------------------


def _synthetic_run(args, vocab: int, extra: list[str]):
    """(run(state, round) -> state, state): the product's training step (``make_train_step``
    of an sgns task with Zipf counts over ``vocab`` ids) scanned over 32 chunks of Zipf ids."""
    counts = (1e9 / np.arange(1, vocab + 1)).astype(np.int64)
    counts[:NUM_SPECIAL] = 0
    task = SGNSTask.for_counts(api.load_config(CONFIG, train_overrides(args, extra)), counts)
    config = task.config
    tx, lr = task.make_optimizer(config)
    multi_step = make_multi_step(make_train_step(task, tx, lr))
    rng = np.random.default_rng(args.seed)
    params = task.host_init(args.seed)  # the task's numpy init, as the trainer places it
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(args.seed),
        carry={},
    )
    per, chunk = 32, config.data.chunk
    ids = rng.choice(vocab, size=(per, 1, chunk), p=counts / counts.sum()).astype(np.int32)
    batches = {"ids": ids, "segments": np.ones_like(ids)}

    def run(state, _round):
        return multi_step(state, batches)[0]

    return run, jax.device_put(state), per


def vocab_scaling(args, extra, vocabularies=(10_000, 1_000_000), rounds=7) -> dict:
    """ms per step of the product's step at each vocabulary size (Zipf counts and ids);
    the sizes alternate round by round and the fastest round of each is kept."""
    runs = {vocab: list(_synthetic_run(args, vocab, extra)) for vocab in vocabularies}
    best = {vocab: [float("inf")] * 2 for vocab in vocabularies}  # wall, CPU (ms per step)
    for r in range(rounds + 1):  # round 0 compiles
        for vocab, (run, state, per) in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            runs[vocab][1] = jax.block_until_ready(run(state, r))
            times = (time.perf_counter() - start, time.process_time() - cpu)
            if r:
                pairs = zip(best[vocab], times, strict=True)
                best[vocab] = [min(b, 1e3 * t / per) for b, t in pairs]
    for vocab in vocabularies:
        wall, cpu = best[vocab]
        print(f"vocabulary {vocab:>9,}: {wall:.2f} ms/step, CPU {cpu:.2f} ms")
    small, large = best[vocabularies[0]], best[vocabularies[-1]]
    ratio, cpu_ratio = large[0] / small[0], large[1] / small[1]
    sizes = f"{vocabularies[-1]:,} / {vocabularies[0]:,}"
    print(f"step time {sizes}: {ratio:.2f}x (CPU time {cpu_ratio:.2f}x)")
    return {"ms_per_step": best, "ratio": ratio, "cpu_ratio": cpu_ratio}


def parse(argv) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--min_count", type=int, default=5)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dataset", default="", help="a dataset spec (default: sgns.py's)")
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="nlpjax: CPU devices (one thread each), one chunk of chunk / devices words each",
    )
    parser.add_argument(
        "--workdir", default="", help="where the runs' workdirs go (DIR/nlpjax, DIR/nlpjax_warm)"
    )
    parser.add_argument(
        "--vocab_scaling",
        action="store_true",
        help="instead: the product's step time at vocabulary 10k and 1M on synthetic Zipf ids",
    )
    parser.add_argument(
        "--compilation_cache",
        default="",
        help="the compilation cache directory of the nlpjax runs (default: a new, empty one)",
    )
    parser.add_argument("--skip_gensim", action="store_true")
    parser.add_argument("--json", default="", help="write the results to this file")
    args, extra = parser.parse_known_args(argv)
    wrong = [a for a in extra if not (a.startswith("--config.") and "=" in a)]
    if wrong:
        parser.error(f"unknown arguments {wrong} (nlpjax settings go as --config.KEY=VALUE)")
    args.dataset = args.dataset or api.load_config(CONFIG).data.dataset
    return args, extra


def main(argv=None) -> dict:
    args, extra = parse(argv)
    if args.vocab_scaling:
        return vocab_scaling(args, extra)
    sentences = read_sentences(args.dataset)
    corpus_words = sum(len(s) for s in sentences)
    print(f"corpus: {len(sentences):,} sentences, {corpus_words:,} words; jax {jax.__version__}")
    results = {"corpus_words": corpus_words, "args": vars(args), "config_overrides": extra}
    sides = [] if args.skip_gensim else ["gensim"]
    with tempfile.TemporaryDirectory(prefix="bench_sgns_") as tmp:
        # The command's compilation cache (nlpjax/compile_cache.py, on by default) starts
        # empty: "nlpjax" is a first run, "nlpjax_warm" the same command run again, which
        # loads its compiled programs from the cache. Between the two, jax's in-memory
        # caches are cleared, so the second run gets nothing a new process would not.
        cache = args.compilation_cache or str(Path(tmp) / "xla")
        workdir = Path(args.workdir or Path(tmp) / "workdir")
        for side in [*sides, "nlpjax", "nlpjax_warm"]:
            cpu = time.process_time()  # every thread of the process: gensim's workers, XLA's
            if side == "gensim":
                seconds, numbers = run_gensim(args)
            else:
                jax.clear_caches()
                with compilation_cache(cache):
                    seconds, numbers = run_nlpjax(args, extra, workdir / side)
            cpu = time.process_time() - cpu
            rate = corpus_words * args.epochs / seconds
            results[side] = {"seconds": seconds, "words_per_sec": rate, "cpu_seconds": cpu}
            results[side] |= numbers
            row = results[side]
            print(
                f"{side:7s} {seconds:6.1f} s (CPU {cpu:5.1f} s)  {rate:9,.0f} words/s  "
                f"wordsim353 {row['wordsim353']:.3f}  simlex999 {row['simlex999']:.3f}  "
                f"analogy {row['analogy']:.4f} (coverage {row['analogy_coverage']:.3f})"
            )
    if "gensim" in results:
        ours, theirs = results["nlpjax"], results["gensim"]
        results["ratio"] = ours["words_per_sec"] / theirs["words_per_sec"]
        results["ratio_warm"] = results["nlpjax_warm"]["words_per_sec"] / theirs["words_per_sec"]
        # On a loaded machine wall times say more about the other jobs than about either
        # side; CPU time does not. Idle, gensim's 2 workers need at least CPU / workers of
        # wall time, nlpjax (one thread training) about its CPU time.
        results["cpu_ratio"] = theirs["cpu_seconds"] / args.workers / ours["cpu_seconds"]
        print(
            f"ratio nlpjax/gensim {results['ratio']:.2f}x first run, "
            f"{results['ratio_warm']:.2f}x run again (from CPU times, idle: "
            f"{results['cpu_ratio']:.2f}x); wordsim353 "
            f"{ours['wordsim353'] - theirs['wordsim353']:+.3f}, analogy "
            f"{100 * (ours['analogy'] - theirs['analogy']):+.2f} points"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
