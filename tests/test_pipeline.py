"""grain pipelines: LM packing, seq2seq packing/bucketing, span corruption, skip-gram pairs;
exact resume from a saved state, per-host sharding and seeded shuffling."""

import json

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.data import pipeline, seq2seq_pipeline, skipgram_pipeline
from nlpjax.data.pipeline import Shard
from nlpjax.data.tokenizers import ByteTokenizer
from nlpjax.models.attention import causal_mask, combine_masks, segment_mask

EOS, BOS = 1, 3


def _docs(n: int, seed: int = 0) -> list[np.ndarray]:
    """Document k holds tokens 10 + 100 k + (0, 1, ...): a token names its document."""
    rng = np.random.default_rng(seed)
    return [(10 + 100 * k + np.arange(rng.integers(3, 40))).astype(np.int32) for k in range(n)]


def _doc_of(tokens: np.ndarray) -> np.ndarray:
    return (tokens - 10) // 100


def _texts(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = ["ein", "Hund", "läuft", "schnell", "über", "die", "Wiese", "zwei", "Männer"]
    return [
        {
            "src": f"{k} " + " ".join(rng.choice(words, rng.integers(1, 5))),
            "tgt": f"{k} " + "x" * (k % 20),
        }
        for k in range(n)
    ]


def test_lm_packing_joins_documents_with_eos_and_never_crosses_them():
    docs = _docs(60)
    ds = pipeline.epochs(docs, seed=0, shard=Shard(), num_epochs=1)
    order = [ds[i] for i in range(len(ds))]
    packed = pipeline.lm_packed(ds, length=32, batch_size=4, eos_id=EOS, bos_id=BOS)
    batches = list(pipeline.iterator(packed))
    stream = []
    for b in batches:
        assert b["targets"].shape == (4, 32) and b["weights"].dtype == np.float32
        np.testing.assert_array_equal(b["weights"], b["segment_ids"] > 0)
        rows = zip(b["inputs"], b["targets"], b["segment_ids"], b["positions"], strict=True)
        for inp, tgt, seg, pos in rows:
            real = seg > 0
            stream.extend(tgt[real].tolist())
            for s in np.unique(seg[real]):
                piece, where = tgt[seg == s], np.flatnonzero(seg == s)
                assert (np.diff(where) == 1).all()  # a segment is contiguous
                np.testing.assert_array_equal(pos[seg == s], np.arange(len(piece)))
                np.testing.assert_array_equal(inp[seg == s], np.r_[BOS, piece[:-1]])
                assert len(set(_doc_of(piece[piece != EOS]))) <= 1  # one document
                assert (piece[:-1] != EOS).all()  # EOS only ends a segment
        # attention built from segment ids (causal + same segment) stays inside documents
        seg = jnp.asarray(b["segment_ids"])
        allowed = np.asarray(combine_masks(causal_mask(32), segment_mask(seg, seg)))[:, 0]
        doc = np.where(b["targets"] == EOS, -1, _doc_of(b["targets"]))
        q, k = np.nonzero(allowed[0] & (doc[0][:, None] >= 0) & (doc[0][None, :] >= 0))
        assert (doc[0][q] == doc[0][k]).all()
    expected = np.concatenate([np.r_[d, EOS] for d in order])
    assert stream == expected[: len(stream)].tolist() and len(stream) > 0.9 * len(expected)


def test_pause_insertion_in_lm_packing():
    ds = pipeline.epochs(_docs(40), seed=0, shard=Shard())
    packed = pipeline.lm_packed(
        ds, length=64, batch_size=8, eos_id=EOS, bos_id=BOS, pause_id=7, pause_fraction=0.1
    )
    b = next(pipeline.iterator(packed))
    pauses = b["targets"] == 7
    assert 0.03 < pauses.mean() < 0.12  # 10% inserted, then trimmed back
    np.testing.assert_array_equal(b["weights"], (~pauses & (b["segment_ids"] > 0)))
    np.testing.assert_array_equal(b["inputs"][:, 1:][b["targets"][:, :-1] == 7], 7)


def _pairs(n=200, seed=0):
    tok = ByteTokenizer()
    src = grain.MapDataset.source(_texts(n, seed))
    return tok, seq2seq_pipeline.pair_examples(src, tok.encode, ("src", "tgt"), 48, 40, EOS)


def _decoded_pairs(batches, tok) -> list[tuple[str, str]]:
    out = []
    for b in batches:
        for row in range(b["inputs"].shape[0]):
            for s in np.unique(b["inputs_segment_ids"][row][b["inputs_mask"][row]]):
                src = b["inputs"][row][b["inputs_segment_ids"][row] == s]
                tgt = b["targets"][row][b["targets_segment_ids"][row] == s]
                assert src[-1] == EOS and tgt[-1] == EOS
                out.append((tok.decode(src[:-1]), tok.decode(tgt[:-1])))
    return out


@pytest.mark.parametrize("mode", ["packed", "bucketed"])
def test_seq2seq_batches_keep_pairs_aligned_with_masks(mode):
    tok, examples = _pairs()
    ds = pipeline.epochs(examples, seed=1, shard=Shard(), num_epochs=1)
    kwargs = dict(source_length=48, target_length=40, batch_size=4, start_id=BOS)
    if mode == "packed":
        built = seq2seq_pipeline.packed_batches(ds, **kwargs, drop_remainder=False)
    else:
        built = seq2seq_pipeline.bucketed_batches(
            ds, **kwargs, window_batches=5, drop_remainder=False
        )
    batches = list(pipeline.iterator(built))
    for b in batches:
        s, t = b["inputs"].shape[1], b["targets"].shape[1]
        assert (s, t) == (48, 40) if mode == "packed" else (s % 8 == 0 and t % 8 == 0)
        np.testing.assert_array_equal(b["inputs_mask"], b["inputs_segment_ids"] > 0)
        np.testing.assert_array_equal(b["targets_mask"], b["targets_segment_ids"] > 0)
        seg = b["targets_segment_ids"]
        starts = (seg > 0) & (seg != np.pad(seg, ((0, 0), (1, 0)))[:, :-1])
        assert (b["decoder_inputs"][starts] == BOS).all()
        inner = (seg > 0) & ~starts
        np.testing.assert_array_equal(
            b["decoder_inputs"][inner], np.pad(b["targets"], ((0, 0), (1, 0)))[:, :-1][inner]
        )
    pairs = _decoded_pairs(batches, tok)
    expected = [(t["src"], t["tgt"]) for t in _texts(200)]
    assert sorted(pairs) == sorted(expected)  # every pair once, source with its own target
    waste = pipeline.padding_stats(batches, ["inputs_mask"])["inputs_mask"]
    real = sum(int(b["inputs_mask"].sum()) for b in batches)
    assert waste == pytest.approx(1 - real / sum(b["inputs_mask"].size for b in batches))


def test_long_pairs_are_cut_keeping_eos():
    tok = ByteTokenizer()
    src = grain.MapDataset.source([{"src": "a" * 100, "tgt": "b" * 100}])
    ex = seq2seq_pipeline.pair_examples(src, tok.encode, ("src", "tgt"), 16, 8, EOS)[0]
    assert len(ex["inputs"]) == 16 and len(ex["targets"]) == 8 and ex["targets"][-1] == EOS


def test_span_corruption_batches_are_t5_examples_of_the_stream():
    docs = _docs(30)
    ds = pipeline.epochs(docs, seed=0, shard=Shard(), shuffle=False)
    sentinels = np.arange(99_999, 99_899, -1)
    built = seq2seq_pipeline.span_corruption_batches(
        ds, inputs_length=32, batch_size=4, sentinel_ids=sentinels, eos_id=EOS, start_id=BOS
    )
    b = next(pipeline.iterator(built))
    assert b["inputs"].shape == (4, 32) and b["targets"].shape[0] == 4
    stream = np.concatenate(docs)
    rebuilt = []
    for inp, tgt in zip(b["inputs"], b["targets"], strict=True):
        inp, tgt = inp[inp > 0][:-1], tgt[tgt > 0][:-1]  # real tokens without EOS
        spans, cur = {}, None
        for t in tgt.tolist():
            cur = spans.setdefault(t, []) if t >= 99_000 else (cur.append(t) or cur)
        rebuilt += [x for t in inp.tolist() for x in (spans[t] if t >= 99_000 else [t])]
        assert inp[inp >= 99_000].tolist() == list(range(99_999, 99_999 - len(spans), -1))
    np.testing.assert_array_equal(rebuilt, stream[: len(rebuilt)])


def test_skipgram_batches_stay_inside_documents():
    docs = _docs(50)
    docs[3] = np.r_[docs[3], 2, 2].astype(np.int32)  # <unk> never trains
    counts = np.zeros(6000, np.int64)
    for d in docs:
        np.add.at(counts, d, 1)
    ds = pipeline.epochs(docs, seed=0, shard=Shard())
    built = skipgram_pipeline.skipgram_batches(
        ds, counts=counts, window=4, batch_size=128, subsample_threshold=0
    )
    it = pipeline.iterator(built)
    for _ in range(5):
        b = next(it)
        assert b["centers"].shape == (128,) and b["contexts"].shape == (128,)
        np.testing.assert_array_equal(_doc_of(b["centers"]), _doc_of(b["contexts"]))
        assert (b["centers"] >= 10).all() and (b["contexts"] >= 10).all()
        assert (np.abs(b["centers"] - b["contexts"]) <= 4).all()


def _seq2seq(mode):
    def build():
        _, examples = _pairs(60)
        ds = pipeline.epochs(examples, seed=2, shard=Shard())
        kw = dict(source_length=48, target_length=40, batch_size=3, start_id=BOS, seed=4)
        if mode == "packed":
            return seq2seq_pipeline.packed_batches(ds, **kw, read_threads=2)
        return seq2seq_pipeline.bucketed_batches(ds, **kw, window_batches=3)

    return build


PIPELINES = {
    "lm_windows": lambda: pipeline.lm_windows(np.arange(500, dtype=np.int32), 9, 4, seed=3),
    "lm_packed_with_pauses": lambda: pipeline.lm_packed(
        pipeline.epochs(_docs(30), seed=1, shard=Shard()),
        length=16, batch_size=3, eos_id=EOS, bos_id=BOS, pause_id=7, pause_fraction=0.2, seed=5,
    ),
    "seq2seq_packed": _seq2seq("packed"),
    "seq2seq_bucketed": _seq2seq("bucketed"),
    "span_corruption": lambda: seq2seq_pipeline.span_corruption_batches(
        pipeline.epochs(_docs(30), seed=1, shard=Shard()), inputs_length=24, batch_size=2,
        sentinel_ids=np.arange(99_999, 99_899, -1), eos_id=EOS, start_id=BOS, seed=6,
    ),
    "skipgram": lambda: skipgram_pipeline.skipgram_batches(
        pipeline.epochs(_docs(30), seed=1, shard=Shard()), counts=np.arange(4000) % 7,
        window=3, batch_size=32, subsample_threshold=0.05, seed=7,
    ),
}  # fmt: skip


@pytest.mark.parametrize("prefetch", [0, 3])
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_resume_gives_the_next_100_batches_of_an_uninterrupted_run(name, prefetch):
    first = pipeline.iterator(PIPELINES[name](), prefetch=prefetch)
    for _ in range(7):
        next(first)
    state = json.loads(json.dumps(first.get_state()))  # as stored in a checkpoint
    expected = [next(first) for _ in range(100)]
    resumed = pipeline.iterator(PIPELINES[name](), prefetch=prefetch)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    first.close()
    resumed.close()


def test_two_hosts_see_disjoint_examples_whose_union_is_the_epoch():
    source = list(range(101))
    hosts = [list(pipeline.epochs(source, 5, Shard(h, 2), num_epochs=2)) for h in range(2)]
    for epoch in range(2):
        a = hosts[0][epoch * 51 : (epoch + 1) * 51]
        b = hosts[1][epoch * 50 : (epoch + 1) * 50]
        assert not set(a) & set(b) and sorted(a + b) == source
    assert hosts[0][:51] != hosts[0][51:]  # each epoch has its own order
    # through a whole pipeline: the documents each host packs
    docs = _docs(41)
    seen = []
    for h in range(2):
        ds = pipeline.epochs(docs, 0, Shard(h, 2), num_epochs=1)
        packed = pipeline.lm_packed(ds, length=16, batch_size=1, eos_id=EOS, bos_id=BOS)
        targets = np.concatenate([b["targets"][b["segment_ids"] > 0] for b in packed])
        seen.append(set(_doc_of(targets[targets != EOS]).tolist()))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(41))


def test_shuffling_is_determined_by_the_seed():
    source = list(range(50))
    a = list(pipeline.epochs(source, 1, Shard(), num_epochs=1))
    assert a == list(pipeline.epochs(source, 1, Shard(), num_epochs=1))
    assert a != list(pipeline.epochs(source, 2, Shard(), num_epochs=1))
    assert sorted(a) == source and a != source
    with pytest.raises(ValueError, match="shard index"):
        Shard(2, 2)


def test_materialize_keeps_elements_and_refuses_too_many():
    ds = grain.MapDataset.range(10).map(lambda x: x * 2)
    assert list(pipeline.materialize(ds)) == list(range(0, 20, 2))
    with pytest.raises(ValueError, match="too many"):
        pipeline.materialize(ds, limit=5)


def test_fresh_state_survives_json_although_grain_compares_it_with_tuples():
    def build():
        ds = pipeline.epochs(_docs(10), seed=0, shard=Shard())
        return pipeline.lm_packed(ds, length=8, batch_size=2, eos_id=EOS, bos_id=BOS)

    it = pipeline.iterator(build())
    state = json.loads(json.dumps(it.get_state()))  # packing buffer empty: a (-1, -1) tuple
    resumed = pipeline.iterator(build())
    resumed.set_state(state)
    for _ in range(5):
        np.testing.assert_array_equal(next(resumed)["targets"], next(it)["targets"])


# -- lm_streams: contiguous rows for truncated BPTT ---------------------------------------


def test_lm_streams_rows_continue_from_batch_to_batch():
    tokens = np.arange(1000)
    ds = pipeline.lm_streams(tokens, 9, 4, seed=0)
    per_epoch = (250 - 8) // 8 - 1
    for t in range(per_epoch - 1):
        a, b = ds[t]["tokens"], ds[t + 1]["tokens"]
        assert a.shape == (4, 9) and a.dtype == np.int32
        np.testing.assert_array_equal(a[:, -1], b[:, 0])  # last target = next first input
        np.testing.assert_array_equal(np.diff(a, axis=1), 1)  # contiguous text
    rows = ds[0]["tokens"][:, 0]
    np.testing.assert_array_equal(rows - rows[0], [0, 250, 500, 750])  # row r: r-th quarter


def test_lm_streams_epochs_move_the_boundaries_and_replay_from_the_index():
    tokens = np.arange(1000)
    ds = pipeline.lm_streams(tokens, 9, 4, seed=3)
    per_epoch = (250 - 8) // 8 - 1
    offsets = {int(ds[e * per_epoch]["tokens"][0, 0]) for e in range(12)}
    assert len(offsets) > 1 and max(offsets) < 8  # a new offset per epoch, in [0, length - 1)
    again = pipeline.lm_streams(tokens, 9, 4, seed=3)
    np.testing.assert_array_equal(
        ds[5 * per_epoch + 7]["tokens"], again[5 * per_epoch + 7]["tokens"]
    )


def test_lm_streams_hosts_take_contiguous_row_blocks():
    tokens = np.arange(2000)
    whole = pipeline.lm_streams(tokens, 5, 8, seed=0)
    parts = [pipeline.lm_streams(tokens, 5, 8, seed=0, shard=Shard(h, 4)) for h in range(4)]
    for t in (0, 3, 200):
        np.testing.assert_array_equal(
            np.concatenate([p[t]["tokens"] for p in parts]), whole[t]["tokens"]
        )


def test_lm_streams_refuses_a_too_short_stream():
    with pytest.raises(ValueError, match="too short for windows of 9"):
        pipeline.lm_streams(np.arange(60), 9, 4, seed=0)
