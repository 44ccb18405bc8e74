"""Data pipeline throughput: each experiment's pipeline against what its trainer consumes,
then the data layer's other pipelines on real corpora (LM packing, seq2seq packing vs
length bucketing with padding waste, T5 span corruption, skip-gram pairs).

    NLPJAX_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_data.py [--seconds=3]

Acceptance: every experiment's pipeline delivers >= 5x the examples/s its trainer takes.
"""

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NLPJAX_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("TFDS_DATA_DIR", str(Path(tempfile.gettempdir()) / "nlpjax_bench_tfds"))
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from nlpjax.data import pipeline, seq2seq_pipeline, skipgram_pipeline, sources  # noqa: E402
from nlpjax.data.tokenizers import ByteTokenizer, TokenizerConfig, build_tokenizer  # noqa: E402
from nlpjax.data.word_tokenizer import WordTokenizer  # noqa: E402

MULTI30K = "parallel_corpus/multi30k_de_en"


def rate(iterator, seconds: float, count=lambda b: len(next(iter(b.values())))):
    """(examples/s, batches) over ``seconds`` after one untimed batch; ``count`` per batch."""
    next(iterator)
    start, n, examples, batches = time.perf_counter(), 0, 0, []
    while n < 5 or time.perf_counter() - start < seconds:
        batch = next(iterator)
        examples += count(batch)
        n += 1
        if len(batches) < 200:
            batches.append(batch)
    return examples / (time.perf_counter() - start), batches


def measure(dataset, seconds: float, count=lambda b: len(next(iter(b.values())))):
    """``rate`` of a pipeline through a 2-batch prefetching iterator, closed afterwards."""
    it = pipeline.iterator(dataset, prefetch=2)
    try:
        return rate(it, seconds, count)
    finally:
        it.close()


def trainer_rate(run, seconds: float) -> float:
    """Examples/s the jitted training step consumes (single device, after compilation)."""
    from nlpjax.data.pipeline import stack_batches
    from nlpjax.training.step import make_multi_step, make_train_step

    k = run.config.train.steps_per_dispatch
    it = run.task.train_iterator()
    stacked = jax.device_put(stack_batches([next(it) for _ in range(k)]))
    it.close()
    rows = len(next(iter(stacked.values()))[0])
    multi = make_multi_step(make_train_step(run.task, run.tx, run.schedule))
    state, metrics = multi(run.state, stacked)
    jax.block_until_ready(metrics)
    start, steps = time.perf_counter(), 0
    while steps < 3 * k or time.perf_counter() - start < seconds:
        state, metrics = multi(state, stacked)
        steps += k
    jax.block_until_ready(metrics)
    return steps * rows / (time.perf_counter() - start)


def experiments(seconds: float) -> list[tuple[str, float, float]]:
    from nlpjax.api import build_run, load_config
    from nlpjax.tasks.registry import TASKS

    results = []
    for path in sorted(glob.glob(str(REPO / "experiments" / "*.py"))):
        config = load_config(path, {})
        if config.task not in TASKS:
            continue
        run = build_run(config, None)
        it = run.task.train_iterator()
        data_rate, _ = rate(it, seconds)
        it.close()
        results.append((Path(path).name, data_rate, trainer_rate(run, seconds)))
    return results


def spm_and_sources():
    train = sources.open_text(MULTI30K, "train")
    pairs = [train[i] for i in range(len(train))]
    texts = (t for p in pairs for t in p.values())
    cfg = TokenizerConfig(
        kind="sentencepiece", vocab_size=8000, model_type="bpe", num_sentinels=100
    )
    return train, pairs, build_tokenizer(cfg, texts)


def seq2seq_rows(tok, train, pairs, seconds):
    """Packing vs bucketing on Multi30k de->en (SentencePiece BPE 8k), streaming and cached."""
    rows = []
    shard = pipeline.Shard()
    for cached in (False, True):
        source = train
        if cached:
            encoded = grain_source(pairs)
            source = pipeline.materialize(
                seq2seq_pipeline.pair_examples(encoded, tok.encode, ("de", "en"), 64, 64, 1)
            )
        for mode in ("packed", "bucketed"):
            ds = pipeline.epochs(source, seed=0, shard=shard)
            if not cached:
                ds = seq2seq_pipeline.pair_examples(ds, tok.encode, ("de", "en"), 64, 64, 1)
            kw = dict(source_length=64, target_length=64, start_id=tok.bos_id)
            if mode == "packed":
                built = seq2seq_pipeline.packed_batches(ds, batch_size=16, **kw)
            else:
                built = seq2seq_pipeline.bucketed_batches(ds, batch_size=64, **kw)
            r, batches = measure(built, seconds, count=_pairs_in)
            waste = pipeline.padding_stats(batches, ["inputs_mask", "targets_mask"])
            shapes = sorted({(b["inputs"].shape[1], b["targets"].shape[1]) for b in batches})
            label = f"seq2seq {mode} ({'tokenized once, cached' if cached else 'streaming'})"
            rows.append((label, r, waste, len(shapes)))
    return rows


def grain_source(items):
    import grain

    return grain.MapDataset.source(items)


def _pairs_in(batch) -> int:
    seg, mask = batch["inputs_segment_ids"], batch["inputs_mask"]
    starts = mask & (seg != np.pad(seg, ((0, 0), (1, 0)))[:, :-1])
    return int(starts.sum())


def token_docs(train, encode, field: str, cached: bool):
    """Shuffled, repeated token arrays of one field: tokenized per epoch or once (cached)."""
    shard = pipeline.Shard()
    if cached:
        once = grain_source(train).map(lambda example: encode(example[field]))
        return pipeline.epochs(pipeline.materialize(once), seed=0, shard=shard)
    return pipeline.tokenized(pipeline.epochs(train, seed=0, shard=shard), encode, field)


def other_rows(tok, train, seconds):
    rows = []
    byte = ByteTokenizer()
    words = WordTokenizer.from_texts((train[i]["en"] for i in range(len(train))), min_count=2)
    sentinels = [tok.sentinel_id(i) for i in range(100)]
    for cached in (False, True):
        how = "tokenized once, cached" if cached else "streaming"
        docs = token_docs(train, byte.encode, "en", cached)
        packed = pipeline.lm_packed(docs, length=256, batch_size=16, eos_id=1, bos_id=3)
        r, batches = measure(packed, seconds)
        waste = pipeline.padding_stats(batches, ["segment_ids"])
        rows.append((f"LM packing, bytes, 16 x 256, rows/s ({how})", r, waste, 1))
        span = seq2seq_pipeline.span_corruption_batches(
            token_docs(train, tok.encode, "en", cached), inputs_length=128, batch_size=16,
            sentinel_ids=sentinels, eos_id=1, start_id=3,
        )  # fmt: skip
        r, _ = measure(span, seconds)
        rows.append((f"T5 span corruption, 16 x 128 ({how})", r, {}, 1))
        sg = skipgram_pipeline.skipgram_batches(
            token_docs(train, words.encode, "en", cached), counts=words.counts_array(),
            window=5, batch_size=1024, subsample_threshold=1e-3,
        )  # fmt: skip
        r, _ = measure(sg, seconds)
        rows.append((f"skip-gram pairs, window 5, t=1e-3 ({how})", r, {}, 1))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, {jax.devices()[0].platform}")
    print("\nexperiment configs: pipeline vs trainer (examples/s; acceptance >= 5x)")
    ok = True
    for name, data_rate, train_rate in experiments(args.seconds):
        ratio = data_rate / train_rate
        ok &= ratio >= 5
        print(f"  {name:28s} pipeline {data_rate:10,.0f}   trainer {train_rate:8,.0f}   "
              f"ratio {ratio:6.1f}x  {'ok' if ratio >= 5 else 'TOO SLOW'}")  # fmt: skip
    train, pairs, tok = spm_and_sources()
    print("\ndata-layer pipelines on Multi30k train (no trainer yet): examples/s, padding")
    for label, r, waste, shapes in seq2seq_rows(tok, train, pairs, args.seconds) + other_rows(
        tok, train, args.seconds
    ):
        pad = ", ".join(f"{k} {100 * v:.1f}%" for k, v in waste.items())
        extra = f"; padding {pad}" if pad else ""
        extra += f"; {shapes} batch shapes" if shapes > 1 else ""
        print(f"  {label:58s} {r:10,.0f}{extra}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
