"""word2vec: nlpjax's device-side skip-gram step against gensim 4.x, same corpus, same machine.

    pip install -e '.[bench]'        # gensim (and torch, for the decoder bench)
    NLPJAX_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_sgns.py [--json=out.json]

Both sides train skip-gram with negative sampling with gensim's settings (sg=1, negative=5,
window=5, sample=1e-3, min_count=5, vector_size=100, epochs=5) on the same sentences (Tiny
Shakespeare lines + Multi30k English training captions, whitespace words, ~0.55M words),
then both sets of vectors go through the same evaluation (``nlpjax.evaluation.word_vectors``:
WordSim-353 and SimLex-999 Spearman, 3CosAdd analogy accuracy over the 30,000 most
frequent words, as gensim's ``evaluate_word_*``). Words/s = corpus words x epochs / wall
time from the tokenized sentences to the trained vectors, vocabulary building (and, for
nlpjax, compilation) included; imports and reading the files are outside both.

nlpjax's side is the model functions of ``nlpjax.models.sgns`` in one dispatch per epoch
(``--subsample_on=epoch``, the default): the host subsamples the epoch's id stream
(numpy, seeded by (seed, epoch)) and a ``fori_loop`` on the device takes it chunk by
chunk: builds the dynamic-window pairs (never across a sentence), draws negatives from
the alias table (all of the epoch's random bits from one ``jax.random.bits`` call),
differentiates the loss with respect to the gathered rows and scatters the update into
the touched rows only. ``--subsample_on=chunk`` is the earlier shape: the device
subsamples each chunk, ``--steps_per_dispatch`` chunks per ``lax.scan`` dispatch.
The corpus is small, so the numbers say little about large-corpus quality; the ratio is
what the acceptance reads.
"""

import argparse
import collections
import functools
import gzip
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NLPJAX_DATA_DIR", str(REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))


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

from nlpjax.data import transforms  # noqa: E402
from nlpjax.data.skipgram_pipeline import training_counts  # noqa: E402
from nlpjax.data.special_tokens import NUM_SPECIAL  # noqa: E402
from nlpjax.data.word_tokenizer import WordTokenizer  # noqa: E402
from nlpjax.evaluation import word_vectors as wvec  # noqa: E402
from nlpjax.models import sgns  # noqa: E402

DATA = Path(os.environ["NLPJAX_DATA_DIR"])


def read_sentences() -> list[list[str]]:
    """Tiny Shakespeare lines and Multi30k English training captions, split on whitespace."""
    lines = (DATA / "tinyshakespeare" / "input.txt").read_text().splitlines()
    with gzip.open(DATA / "multi30k" / "train.en.gz", "rt", encoding="utf-8") as f:
        lines += f.read().splitlines()
    return [words for words in (line.split() for line in lines) if words]


def evaluate(wv: wvec.WordVectors) -> dict:
    word_eval = DATA / "word_eval"
    sim = wvec.word_similarity(wv, word_eval / "wordsim353.tsv")
    simlex = wvec.word_similarity(wv, word_eval / "simlex999.txt")
    analogy = wvec.word_analogies(wv, word_eval / "questions-words.txt", restrict=30_000)
    return {
        "wordsim353": sim["spearman"],
        "wordsim353_coverage": sim["coverage"],
        "simlex999": simlex["spearman"],
        "simlex999_coverage": simlex["coverage"],
        "analogy": analogy["accuracy"],
        "analogy_evaluated": analogy["evaluated"],
    }


# -- gensim -----------------------------------------------------------------------------


def run_gensim(sentences, args) -> tuple[float, wvec.WordVectors]:
    from gensim.models import Word2Vec

    start = time.perf_counter()
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
    return seconds, wvec.WordVectors(list(model.wv.index_to_key), np.array(model.wv.vectors))


# -- nlpjax -----------------------------------------------------------------------------


def token_stream(sentences, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(ids, sentence number) of the in-vocabulary words (as gensim, others are dropped)."""
    index = {w: i + NUM_SPECIAL for i, w in enumerate(tokenizer.words)}
    ids, segments = [], []
    for number, words in enumerate(sentences, start=1):
        kept = [index[w] for w in words if w in index]
        ids.extend(kept)
        segments.extend([number] * len(kept))
    return np.array(ids, np.int32), np.array(segments, np.int32)


def make_dispatch(config: sgns.SGNSConfig, tables: dict, total_steps: int, args):
    """A jitted ``lax.scan`` over chunks: (state, ids_ST, segments_ST, steps_S) -> state.

    With ``args.devices`` > 1 it is pmapped instead: each device takes its part of every
    chunk (ids (devices, S, T / devices)), and the row gradients of all devices are
    gathered and applied on every device, so the replicas stay equal (a chunk of T
    tokens whose windows stop at the parts' boundaries, each part drawing its own
    negatives)."""
    devices = getattr(args, "devices", 1)
    schedule = sgns.linear_lr(total_steps, args.lr, args.min_lr)

    def loss_fn(v_LE, u_LE, neg, mask_LC):
        loss, pairs = sgns.skipgram_ns_loss(
            v_LE, u_LE, neg, mask_LC, config.window, config.negative_sharing, config.negatives
        )
        return loss, pairs

    def update(table, accum, ids, grads, lr, uses):
        if args.update == "adagrad":
            return sgns.sparse_adagrad(table, accum, ids, grads, lr)
        if args.update == "capped":  # accum is the all-zero scratch buffer
            return sgns.sparse_sgd_capped(table, accum, ids, grads, uses, lr, args.cap)
        return sgns.sparse_sgd(table, ids, grads, lr), accum

    def step(state, inputs):
        ids_T, segments_T, index, *bits = inputs
        if args.subsample_on == "chunk":
            key = jax.random.fold_in(state["key"], index)
            if devices > 1:
                key = jax.random.fold_in(key, jax.lax.axis_index("devices"))
            k_sub, k_win, k_neg = jax.random.split(key, 3)
            ids, valid, segments, overflow = sgns.subsample(
                ids_T, state["keep"], k_sub, segments_T, tables["capacity"]
            )
            mask, _ = sgns.dynamic_window(valid, config.window, k_win, segments)
            shape = sgns.negative_shape(config, ids.shape[0])
            negatives = sgns.sample_negatives(k_neg, state["accept"], state["alias"], shape)
        else:  # the host subsampled the epoch's stream (padding: segment 0); bits given
            ids, valid, segments, overflow = ids_T, segments_T > 0, segments_T, 0
            (bits,) = bits
            length = ids.shape[0]
            reach = config.window - (bits[:length] % config.window).astype(jnp.int32)
            if config.negative_sharing == "pair" or args.update == "capped":  # need (L, C)
                mask, _ = sgns.window_pairs(valid, reach, config.window, segments)
            else:  # the same pairs, laid out as the positive scores (no gathers)
                mask = sgns.window_pairs_blocked(valid, reach, config.window, segments)
            shape = sgns.negative_shape(config, length)
            draws = bits[length:].reshape(2, *shape)
            negatives = sgns.negatives_from_bits(draws, state["accept"], state["alias"])
        center, context = state["center"], state["context"]
        rows = (center[ids], context[ids], context[negatives])
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)
        (loss, pairs), (g_v, g_u, g_n) = grad_fn(*rows, mask)
        lr = schedule(index)
        context_ids = jnp.concatenate([ids, negatives.reshape(-1)])
        g_context = jnp.concatenate([g_u, g_n.reshape(-1, g_u.shape[-1])])
        if args.update == "capped":  # the pair terms reading each row
            uses_c, uses_u, uses_n = sgns.row_uses(
                mask, config.window, negatives.shape, config.negative_sharing, config.negatives
            )
            uses_context = jnp.concatenate([uses_u, uses_n.reshape(-1)])
        else:
            uses_c = uses_context = jnp.zeros(())
        if devices > 1:  # every device applies every device's rows
            ids, g_v, context_ids, g_context = (
                jax.lax.all_gather(x, "devices", tiled=True)
                for x in (ids, g_v, context_ids, g_context)
            )
            if args.update == "capped":
                uses_c, uses_context = (
                    jax.lax.all_gather(x, "devices", tiled=True) for x in (uses_c, uses_context)
                )
        center, acc_c = update(center, state["acc_center"], ids, g_v, lr, uses_c)
        context, acc_u = update(
            context, state["acc_context"], context_ids, g_context, lr, uses_context
        )
        new = {**state, "center": center, "context": context}
        new |= {"acc_center": acc_c, "acc_context": acc_u}
        return new, (loss, pairs, overflow)

    def dispatch(state, ids_ST, segments_ST, steps_S):
        return jax.lax.scan(step, state, (ids_ST, segments_ST, steps_S))

    def epoch(state, ids_N, segments_N, num_steps, first_step):
        """``num_steps`` chunks of the epoch's (subsampled) stream in one dispatch."""
        steps = tables["max_steps"]
        chunk = ids_N.shape[0] // steps
        # all of the epoch's random bits in one call: window reaches, negative buckets, coins
        width = chunk + 2 * int(np.prod(sgns.negative_shape(config, chunk)))
        key = jax.random.fold_in(state["key"], first_step)
        if devices > 1:
            key = jax.random.fold_in(key, jax.lax.axis_index("devices"))
        bits_SW = jax.random.bits(key, (steps, width), jnp.uint32)

        def body(i, carry):
            state, loss_sum, pair_sum = carry
            start = i * chunk
            inputs = (
                jax.lax.dynamic_slice(ids_N, (start,), (chunk,)),
                jax.lax.dynamic_slice(segments_N, (start,), (chunk,)),
                first_step + i,
                bits_SW[i],
            )
            state, (loss, pairs, _) = step(state, inputs)
            return state, loss_sum + loss, pair_sum + pairs

        return jax.lax.fori_loop(0, num_steps, body, (state, 0.0, 0.0))

    if args.subsample_on == "epoch":
        if devices > 1:
            return jax.pmap(epoch, "devices", in_axes=(0, 0, 0, None, None), donate_argnums=0)
        return functools.partial(jax.jit, donate_argnums=0)(epoch)
    if devices > 1:
        return jax.pmap(dispatch, "devices", in_axes=(0, 0, 0, None), donate_argnums=0)
    return functools.partial(jax.jit, donate_argnums=0)(dispatch)


def _finished(result) -> float:
    """The time once ``result`` is computed."""
    jax.block_until_ready(result)
    return time.perf_counter()


def run_nlpjax(sentences, args) -> tuple[float, wvec.WordVectors, dict]:
    start = time.perf_counter()
    counter = collections.Counter(w for words in sentences for w in words)
    tokenizer = WordTokenizer.from_counts(counter, min_count=args.min_count)
    counts = training_counts(tokenizer.counts_array())
    accept, alias = sgns.negative_table(counts, 0.75)
    keep = transforms.keep_probabilities(counts, args.sample)
    part = args.chunk // args.devices
    capacity = sgns.kept_capacity(keep, counts, part) if args.capacity else None
    tables = {"keep": keep, "accept": accept, "alias": alias, "capacity": capacity}
    config = sgns.SGNSConfig(
        vocab_size=tokenizer.vocab_size,
        embed_dim=args.dim,
        window=args.window,
        negatives=args.negatives,
        negative_sharing=args.sharing,
        batch_negatives=args.batch_negatives,
    )
    if args.subsample_on == "epoch":
        return _run_by_epoch(args, start, sentences, tokenizer, config, tables)
    ids, segments = token_stream(sentences, tokenizer)
    chunk, per_dispatch = args.chunk, args.steps_per_dispatch
    steps_per_epoch = -(-len(ids) // (chunk * per_dispatch)) * per_dispatch
    pad = steps_per_epoch * chunk - len(ids)
    ids_ST = np.pad(ids, (0, pad)).reshape(steps_per_epoch, chunk)
    segments_ST = np.pad(segments, (0, pad)).reshape(steps_per_epoch, chunk)
    params = sgns.SGNS(config).init(jax.random.PRNGKey(args.seed))["params"]
    vocab = tokenizer.vocab_size
    state = {
        "center": params["center"].value,
        "context": params["context"].value,
        "acc_center": jnp.zeros(vocab),
        "acc_context": jnp.zeros(vocab),
        "key": jax.random.PRNGKey(args.seed),  # an argument, so seeds share one program
        # the tables too: as constants they would be folded into the program (slow to compile)
        **{k: jnp.asarray(tables[k]) for k in ("keep", "accept", "alias")},
    }
    if args.devices > 1:  # one replica per device; each takes its part of every chunk
        stacked = jax.tree.map(lambda x: jnp.stack([x] * args.devices), state)
        # laid out as pmap lays out its outputs, so the step compiles once
        state = jax.pmap(lambda x: x, "devices")(stacked)
        ids_ST, segments_ST = (
            x.reshape(steps_per_epoch, args.devices, part).transpose(1, 0, 2)
            for x in (ids_ST, segments_ST)
        )
    dispatch = make_dispatch(config, tables, steps_per_epoch * args.epochs, args)
    setup = time.perf_counter() - start
    losses, pairs, overflows, first_dispatch, epoch_ends = [], [], [], 0.0, []
    for epoch in range(args.epochs):
        for first in range(0, steps_per_epoch, per_dispatch):
            rows = (slice(None),) * (args.devices > 1) + (slice(first, first + per_dispatch),)
            steps = np.arange(first, first + per_dispatch) + epoch * steps_per_epoch
            state, (loss, n, overflow) = dispatch(state, ids_ST[rows], segments_ST[rows], steps)
            losses.append(loss)
            pairs.append(n)
            overflows.append(overflow)
            if not first_dispatch:
                first_dispatch = _finished(loss)
        epoch_ends.append(_finished(loss))
    center = np.asarray(state["center"][0] if args.devices > 1 else state["center"])
    seconds = time.perf_counter() - start
    loss, n = (
        np.concatenate([np.asarray(x).reshape(-1, per_dispatch).sum(0) for x in xs])
        for xs in (losses, pairs)
    )
    stats = {
        "setup_seconds": round(setup, 2),  # vocabulary, id stream, tables, init
        "first_dispatch_seconds": round(first_dispatch - start - setup, 2),  # + compilation
        "epoch_seconds": [
            round(b - a, 2)
            for a, b in zip([first_dispatch, *epoch_ends[:-1]], epoch_ends, strict=True)
        ],
        "steps": int(steps_per_epoch * args.epochs),
        "capacity": capacity or part,
        "overflow_tokens": int(np.concatenate(overflows).sum()),
        "pairs_per_epoch": float(n.sum() / args.epochs),
        "first_epoch_loss": float(loss[:steps_per_epoch].sum() / n[:steps_per_epoch].sum()),
        "last_epoch_loss": float(loss[-steps_per_epoch:].sum() / n[-steps_per_epoch:].sum()),
        "finite": bool(np.isfinite(center).all()),
    }
    words = tokenizer.words
    return seconds, wvec.WordVectors(words, center[NUM_SPECIAL : NUM_SPECIAL + len(words)]), stats


def _host_state(config: sgns.SGNSConfig, tables: dict, seed: int) -> dict:
    """The training state built with numpy (word2vec's init: center uniform in +-0.5/E,
    context zeros): flax's ``init`` runs op by op, and each op compiles a program."""
    shape = (config.vocab_size, config.embed_dim)
    rng = np.random.default_rng(seed)
    return {
        "center": ((rng.random(shape, np.float32) - 0.5) / config.embed_dim),
        "context": np.zeros(shape, np.float32),
        "acc_center": np.zeros(shape[0], np.float32),
        "acc_context": np.zeros(shape[0], np.float32),
        "key": np.array([0, seed], np.uint32),  # = jax.random.PRNGKey(seed)
        **{k: tables[k] for k in ("keep", "accept", "alias")},
    }


def _run_by_epoch(args, start, sentences, tokenizer, config, tables):
    """Train with the host subsampling each epoch's stream (numpy, seeded by (seed, epoch))
    and one dispatch per epoch (a ``fori_loop`` over its chunks, all slots valid).

    The shapes are known from the vocabulary's counts, so the program compiles in a
    thread (on the other core) while the host builds the id stream and the state; the
    host subsamples epoch e + 1 while the device trains epoch e (nothing waits for the
    device until the vectors are read)."""
    chunk, devices = args.chunk, args.devices
    part = chunk // devices
    counts = training_counts(tokenizer.counts_array())
    words = int(counts.sum())  # the id stream's length
    max_steps = -(-words // chunk)
    expected = float(np.sum(counts * tables["keep"]))  # kept words per epoch, on average
    total_steps = int(np.ceil(expected / chunk)) * args.epochs
    tables = {**tables, "max_steps": max_steps}
    dispatch = make_dispatch(config, tables, total_steps, args)
    compiling = {}
    if devices == 1:
        host = _host_state(config, tables, args.seed)
        shapes = (
            jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host),
            jax.ShapeDtypeStruct((max_steps * chunk,), np.int32),
            jax.ShapeDtypeStruct((max_steps * chunk,), np.int32),
            0,
            0,
        )

        def compile_ahead():
            compiling["program"] = dispatch.lower(*shapes).compile()

        thread = threading.Thread(target=compile_ahead)
        thread.start()
    ids, segments = token_stream(sentences, tokenizer)
    assert len(ids) == words, (len(ids), words)
    state = _host_state(config, tables, args.seed)
    if devices > 1:  # one replica per device, laid out as pmap lays out its outputs
        stacked = jax.tree.map(lambda x: np.stack([x] * devices), state)
        state = jax.pmap(lambda x: x, "devices")(stacked)
    else:
        state = jax.device_put(state)
    setup = time.perf_counter() - start
    done, sums = 0, []
    for epoch in range(args.epochs):
        rng = np.random.default_rng([args.seed, epoch])
        kept = rng.random(len(ids)) < tables["keep"][ids]
        steps = -(-int(kept.sum()) // chunk)
        pad = max_steps * chunk - int(kept.sum())
        ids_N, segments_N = (np.pad(x[kept], (0, pad)) for x in (ids, segments))
        if devices > 1:  # device d takes part d of every chunk
            ids_N, segments_N = (
                x.reshape(max_steps, devices, part).transpose(1, 0, 2).reshape(devices, -1)
                for x in (ids_N, segments_N)
            )
        if not epoch and devices == 1:
            thread.join()
            dispatch = compiling["program"]
            compiled = time.perf_counter()
        elif not epoch:
            compiled = time.perf_counter()
        state, loss, pairs = dispatch(state, ids_N, segments_N, steps, done)
        done += steps
        sums.append((loss, pairs))
    center = np.asarray(state["center"][0] if devices > 1 else state["center"])
    seconds = time.perf_counter() - start
    loss, n = (np.array([np.sum(x[i]) for x in sums]) for i in (0, 1))
    stats = {
        "setup_seconds": round(setup, 2),  # vocabulary, id stream, tables, init
        "compile_wait_seconds": round(compiled - start - setup, 2),  # after the setup
        "train_seconds": round(seconds - (compiled - start), 2),  # the epochs
        "steps": done,
        "pairs_per_epoch": float(n.sum() / args.epochs),
        "first_epoch_loss": float(loss[0] / n[0]),
        "last_epoch_loss": float(loss[-1] / n[-1]),
        "finite": bool(np.isfinite(center).all()),
    }
    words = tokenizer.words
    return seconds, wvec.WordVectors(words, center[NUM_SPECIAL : NUM_SPECIAL + len(words)]), stats


def _synthetic_run(args, vocab: int):
    """(dispatch, state, ids, segments) for a Zipf vocabulary of ``vocab`` ids."""
    counts = (1e9 / np.arange(1, vocab + 1)).astype(np.int64)
    counts[:NUM_SPECIAL] = 0
    accept, alias = sgns.negative_table(counts, 0.75)
    keep = transforms.keep_probabilities(counts, args.sample)
    capacity = sgns.kept_capacity(keep, counts, args.chunk) if args.capacity else None
    tables = {"keep": keep, "accept": accept, "alias": alias, "capacity": capacity}
    config = sgns.SGNSConfig(
        vocab_size=vocab,
        embed_dim=args.dim,
        window=args.window,
        negatives=args.negatives,
        negative_sharing=args.sharing,
        batch_negatives=args.batch_negatives,
    )
    per, chunk = args.steps_per_dispatch, args.chunk
    rng = np.random.default_rng(args.seed)
    ids = rng.choice(vocab, size=(per, chunk), p=counts / counts.sum()).astype(np.int32)
    segments = np.ones(ids.shape, np.int32)
    state = jax.device_put(_host_state(config, tables, args.seed))
    if args.subsample_on == "epoch":  # the ids as one epoch's stream of ``per`` chunks
        dispatch = make_dispatch(config, {**tables, "max_steps": per}, 10**6, args)

        def run(state, r):
            return dispatch(state, ids.reshape(-1), segments.reshape(-1), per, r * per)[0]

    else:
        dispatch = make_dispatch(config, tables, 10**6, args)

        def run(state, r):
            return dispatch(state, ids, segments, np.arange(per) + r * per)[0]

    return run, state


def vocab_scaling(args, vocabularies=(10_000, 1_000_000), rounds=7) -> dict:
    """ms per step of the same dispatch at each vocabulary size (Zipf counts and ids);
    the sizes alternate round by round and the fastest round of each is kept."""
    runs = {vocab: list(_synthetic_run(args, vocab)) for vocab in vocabularies}
    best = {vocab: [float("inf")] * 2 for vocab in vocabularies}  # wall, CPU (ms per step)
    per = args.steps_per_dispatch
    for r in range(rounds + 1):  # round 0 compiles
        for vocab, run in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            run[1] = jax.block_until_ready(run[0](run[1], r))
            times = (time.perf_counter() - start, time.process_time() - cpu)
            if r:
                pairs = zip(best[vocab], times, strict=True)
                best[vocab] = [min(b, 1e3 * t / per) for b, t in pairs]
    for vocab in vocabularies:
        wall, cpu = best[vocab]
        print(f"vocabulary {vocab:>9,}: {wall:.2f} ms/step, CPU {cpu:.2f} ms ({args.chunk} tokens)")
    small, large = best[vocabularies[0]], best[vocabularies[-1]]
    ratio, cpu_ratio = large[0] / small[0], large[1] / small[1]
    sizes = f"{vocabularies[-1]:,} / {vocabularies[0]:,}"
    print(f"step time {sizes}: {ratio:.2f}x (CPU time {cpu_ratio:.2f}x)")
    return {"ms_per_step": best, "ratio": ratio, "cpu_ratio": cpu_ratio}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--min_count", type=int, default=5)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--chunk",
        type=int,
        default=768,
        help="nlpjax: tokens per step (after subsampling with --subsample_on=epoch, whose "
        "1,024-token chunks diverge at lr 0.025: a frequent word's updates add up)",
    )
    parser.add_argument("--steps_per_dispatch", type=int, default=32)
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="CPU devices (one thread each): each takes chunk / devices tokens of a step",
    )
    parser.add_argument("--sharing", default="batch", choices=sgns.NEGATIVE_SHARING)
    parser.add_argument("--batch_negatives", type=int, default=64)
    parser.add_argument("--update", default="sgd", choices=("sgd", "adagrad", "capped"))
    parser.add_argument("--cap", type=float, default=100.0, help="capped: pair terms per row")
    parser.add_argument("--lr", type=float, default=0.025, help="word2vec's; Adagrad: 0.4")
    parser.add_argument("--min_lr", type=float, default=0.0001)
    parser.add_argument(
        "--vocab_scaling",
        action="store_true",
        help="instead: step time at vocabulary 10k and 1M on synthetic Zipf ids",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=1,
        help="1: run pairs and loss on kept_capacity slots after subsampling; 0: on the chunk",
    )
    parser.add_argument(
        "--compilation_cache",
        default="",
        help="a persistent XLA compilation cache directory (a second run skips compiling)",
    )
    parser.add_argument(
        "--subsample_on",
        default="epoch",
        choices=("epoch", "chunk"),
        help="epoch: the host subsamples each epoch's stream and one dispatch trains the "
        "epoch; chunk: the device subsamples each chunk, --steps_per_dispatch per dispatch",
    )
    parser.add_argument("--skip_gensim", action="store_true")
    parser.add_argument("--json", default="", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    if args.chunk % args.devices:
        parser.error(f"--chunk={args.chunk} does not split over --devices={args.devices}")
    if args.vocab_scaling:
        if args.devices != 1:
            parser.error("--vocab_scaling times one device")
        return vocab_scaling(args)

    sentences = read_sentences()
    corpus_words = sum(len(s) for s in sentences)
    print(f"corpus: {len(sentences):,} sentences, {corpus_words:,} words; jax {jax.__version__}")
    results = {"corpus_words": corpus_words, "args": vars(args)}
    sides = [] if args.skip_gensim else ["gensim"]
    for side in [*sides, "nlpjax"]:
        cpu = time.process_time()  # every thread of the process: gensim's workers, XLA's
        if side == "gensim":
            seconds, wv = run_gensim(sentences, args)
            stats = {}
        else:
            seconds, wv, stats = run_nlpjax(sentences, args)
        cpu = time.process_time() - cpu
        rate = corpus_words * args.epochs / seconds
        results[side] = {"seconds": seconds, "words_per_sec": rate, "cpu_seconds": cpu}
        results[side] |= {**stats, **evaluate(wv)}
        row = results[side]
        print(
            f"{side:7s} {seconds:6.1f} s (CPU {cpu:5.1f} s)  {rate:9,.0f} words/s  "
            f"wordsim353 {row['wordsim353']:.3f}  simlex999 {row['simlex999']:.3f}  "
            f"analogy {row['analogy']:.4f} ({row['analogy_evaluated']} questions)  {stats}"
        )
    if "gensim" in results:
        ours, theirs = results["nlpjax"], results["gensim"]
        results["ratio"] = ours["words_per_sec"] / theirs["words_per_sec"]
        # On a loaded machine wall times say more about the other jobs than about either
        # side; CPU time does not. Idle, gensim's 2 workers need at least CPU / workers of
        # wall time, nlpjax (one thread training) about its CPU time.
        results["cpu_ratio"] = theirs["cpu_seconds"] / args.workers / ours["cpu_seconds"]
        print(
            f"ratio nlpjax/gensim {results['ratio']:.2f}x (from CPU times, idle: "
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
