"""T5 encoder-decoder: relative position buckets, attention directions, packing, tied
embeddings, losses; decoding with caches, greedy, sampling and beam search."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nlpjax.config import ConfigError
from nlpjax.data import seq2seq_pipeline
from nlpjax.data.tokenizers import ByteTokenizer
from nlpjax.errors import DataError
from nlpjax.inference.decode import SamplingConfig
from nlpjax.inference.search import beam_search, length_penalty, sample_loop
from nlpjax.inference.seq2seq import (
    Seq2SeqGenerator,
    Seq2SeqTextGenerator,
    generate_uncached,
    output_ids,
    sequence_log_prob,
)
from nlpjax.models.positions import relative_position_bucket
from nlpjax.models.t5 import T5, T5Config, flops_per_token, shift_right, token_losses

V = 13
CFG = T5Config(
    vocab_size=V,
    d_model=16,
    num_heads=2,
    head_dim=8,
    d_ff=32,
    num_encoder_layers=1,  # one layer each keeps compilation short; the layout test
    num_decoder_layers=1,  # checks two-layer stacks
    max_target_len=8,
    dtype="float32",
)


def _init(cfg: T5Config, seed: int = 0):
    """The model and random parameters of its shapes (norm scales 1, the rest normal with
    std 0.3): ``model.init`` would compile a forward pass just for this."""
    model = T5(cfg)
    tokens = jnp.ones((1, 2), jnp.int32)
    shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens))
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes["params"])
    rng = np.random.default_rng(seed)  # numpy: eager jax.random would compile per shape
    values = [
        np.ones(a.shape) if str(path[-1].key) == "scale" else 0.3 * rng.normal(size=a.shape)
        for path, a in leaves
    ]
    return model, jax.tree_util.tree_unflatten(tree, [jnp.asarray(v, jnp.float32) for v in values])


def _apply(model, **static):
    """``model.apply`` jitted (eager flax is slow on a loaded 2-core machine)."""
    return jax.jit(functools.partial(model.apply, **static))


@pytest.fixture(scope="module")
def t5():
    return _init(CFG)


# --- model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative, bidirectional, bucket",
    [
        # bidirectional: 16 buckets a side, exact below 8, log-spaced up to 128
        (0, True, 0),
        (-3, True, 3),  # key 3 before the query
        (3, True, 19),  # key 3 after: the upper half (16 + 3)
        (-8, True, 8),  # first log bucket: 8 + floor(log(8/8) / log(16) * 8)
        (-20, True, 10),  # 8 + floor(log(2.5) / log(16) * 8) = 8 + floor(2.64)
        (-127, True, 15),  # 8 + floor(7.98)
        (-1000, True, 15),  # beyond max_distance: the last bucket
        (1000, True, 31),
        # causal: every later key in bucket 0; 32 buckets backwards, exact below 16
        (5, False, 0),
        (-5, False, 5),
        (-16, False, 16),
        (-40, False, 23),  # 16 + floor(log(2.5) / log(8) * 16) = 16 + floor(7.05)
        (-127, False, 31),  # 16 + floor(15.94)
        (-200, False, 31),
    ],
)
def test_relative_position_buckets_match_hand_computed_values(relative, bidirectional, bucket):
    got = relative_position_bucket(jnp.array(relative), bidirectional=bidirectional)
    assert int(got) == bucket


def test_parameters_follow_the_v11_layout_with_logical_axes():
    tokens = jnp.ones((1, 2), jnp.int32)
    shapes = lambda cfg: jax.eval_shape(T5(cfg).init, jax.random.PRNGKey(0), tokens, tokens)  # noqa: E731
    variables = shapes(dataclasses.replace(CFG, num_encoder_layers=2, num_decoder_layers=2))
    specs = nn.get_partition_spec(variables["params"])
    assert tuple(specs["encoder_0"]["attn"]["q_kernel"]) == ("embed", "heads", "kv")
    assert tuple(specs["decoder_1"]["cross_attn"]["out_kernel"]) == ("heads", "kv", "embed")
    assert tuple(specs["decoder_0"]["mlp"]["wi_1"]["kernel"]) == ("embed", "mlp")
    assert tuple(specs["embedding"]) == ("vocab", "embed")
    params = nn.meta.unbox(variables["params"])
    names = {
        "/".join(str(k.key) for k in p) for p, _ in jax.tree_util.tree_leaves_with_path(params)
    }
    assert not any("bias" in n and "rel_embedding" not in n for n in names)  # no dense biases
    # one relative-bias table per stack, shared by its layers
    assert sorted(n for n in names if "rel_embedding" in n) == [
        "decoder_bias/rel_embedding",
        "encoder_bias/rel_embedding",
    ]
    assert "lm_head/kernel" in names and "encoder_0/attn_norm/scale" in names
    v10 = shapes(dataclasses.replace(CFG, feed_forward="relu", tie_embeddings=True))["params"]
    assert set(v10["encoder_0"]["mlp"]) == {"wi", "wo"} and "lm_head" not in v10


def test_encoder_sees_both_ways_and_decoder_only_backwards(t5):
    """Gradients reach the embedding rows of every source token from an encoder position,
    but from decoder position t only the rows of decoder inputs 0..t."""
    model, params = t5
    source = jnp.array([[1, 2, 3, 4, 5, 6]])
    inputs = jnp.array([[7, 8, 9, 10, 11]])  # ids distinct from the source's

    def touched_rows(fn):  # (outputs, vocabulary): which embedding rows each output reads
        jacobian = jax.jit(jax.jacrev(lambda e: fn(dict(params, embedding=e))))(params["embedding"])
        return np.abs(np.asarray(jacobian)).sum(axis=-1) > 0

    encoded = touched_rows(lambda p: model.apply({"params": p}, source, method="encode")[0].sum(-1))
    assert encoded[:, 1:7].all()  # every source position depends on every source token
    logits = touched_rows(lambda p: model.apply({"params": p}, source, inputs)[0].sum(-1))
    for t in range(5):
        assert logits[t, 1:7].all()  # cross-attention sees the whole source
        assert logits[t, 7 : 8 + t].all() and not logits[t, 8 + t : 12].any(), t


def test_packed_sequences_equal_separate_runs(t5):
    """Two examples packed in one row by the data layer's seq2seq format (segment ids,
    per-segment positions, decoder inputs shifted within segments, padding at the end)
    give the logits of two separate unpacked runs: no attention crosses segments in any
    of the three attentions, and relative positions restart per segment."""
    model, params = t5
    src_a, src_b, tgt_a, tgt_b = [3, 4, 5, 6], [7, 8], [9, 10, 11], [12, 2, 1]
    row = lambda a, b: np.array([a + b + [0]])  # noqa: E731  (one padding token)
    seg = lambda a, b: np.array([[1] * len(a) + [2] * len(b) + [0]])  # noqa: E731
    batch = seq2seq_pipeline.features(
        row(src_a, src_b), seg(src_a, src_b), row(tgt_a, tgt_b), seg(tgt_a, tgt_b), start_id=0
    )
    apply = _apply(model)
    packed = apply(
        {"params": params},
        batch["inputs"],
        batch["decoder_inputs"],
        source_segments_BS=batch["inputs_segment_ids"],
        source_positions_BS=batch["inputs_positions"],
        target_segments_BT=batch["targets_segment_ids"],
        target_positions_BT=batch["targets_positions"],
    )
    one = lambda s, t: apply({"params": params}, jnp.array([s]), shift_right(jnp.array([t])))  # noqa: E731
    np.testing.assert_allclose(packed[0, :3], one(src_a, tgt_a)[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 3:6], one(src_b, tgt_b)[0], atol=1e-5)


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_source_padding_changes_nothing(t5):
    model, params = t5
    inputs, apply = jnp.array([[0, 9, 10]]), _apply(model)
    short = apply({"params": params}, jnp.array([[3, 4, 5]]), inputs)
    padded = apply({"params": params}, jnp.array([[3, 4, 5, 0, 0]]), inputs)
    np.testing.assert_allclose(short, padded, atol=1e-5)


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_tied_embeddings_scale_the_decoder_output_by_d_model_rsqrt():
    """A tied model equals an untied one whose head is the embedding^T * d_model**-0.5."""
    tied_model, tied = _init(dataclasses.replace(CFG, tie_embeddings=True))
    untied_model = T5(CFG)
    untied = dict(tied, lm_head={"kernel": tied["embedding"].T * CFG.d_model**-0.5})
    source, inputs = jnp.array([[3, 4, 5, 6]]), jnp.array([[0, 7, 8]])
    a = _apply(tied_model)({"params": tied}, source, inputs)
    b = _apply(untied_model)({"params": untied}, source, inputs)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    unscaled = dict(tied, lm_head={"kernel": tied["embedding"].T})
    c = _apply(untied_model)({"params": unscaled}, source, inputs)
    assert not np.allclose(a, c, atol=1e-3)


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_dropout_acts_only_in_training():
    cfg = dataclasses.replace(CFG, dropout=0.3)
    model, params = _init(cfg)
    source, inputs = jnp.array([[3, 4, 5, 6]]), jnp.array([[0, 7, 8]])
    train_apply, eval_apply = _apply(model, train=True), _apply(model)
    run = lambda seed, train: (train_apply if train else eval_apply)(  # noqa: E731
        {"params": params}, source, inputs, rngs={"dropout": jax.random.PRNGKey(seed)}
    )
    np.testing.assert_array_equal(run(0, False), run(1, False))
    assert not np.allclose(run(0, True), run(1, True))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"feed_forward": "gelu"}, "model.feed_forward must be one of"),
        ({"relative_buckets": 7}, "model.relative_buckets must be even"),
        ({"num_decoder_layers": 0}, "num_decoder_layers must be > 0"),
        ({"attention": "flash"}, "model.attention"),
    ],
)
def test_bad_model_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(CFG, **overrides)


def test_signature_leaves_out_runtime_fields():
    sig = CFG.signature()
    assert "dtype" not in sig and "attention" not in sig and sig["d_model"] == 16


def test_shift_right_starts_every_segment_with_the_start_id():
    targets = jnp.array([[5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(shift_right(targets), [[0, 5, 6, 7, 8]])
    segments = jnp.array([[1, 1, 2, 2, 2]])
    np.testing.assert_array_equal(shift_right(targets, segments), [[0, 5, 0, 7, 8]])


def test_token_losses_smoothing_and_z_loss():
    losses = jax.jit(token_losses, static_argnames=("label_smoothing", "z_loss"))
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, V)) * 3
    targets = jax.random.randint(jax.random.PRNGKey(1), (2, 3), 0, V)
    plain, z = losses(logits, targets)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    np.testing.assert_allclose(plain, ref, rtol=1e-5)
    assert not np.asarray(z).any()
    smooth, _ = losses(logits, targets, label_smoothing=0.1)
    soft = jax.nn.one_hot(targets, V) * 0.9 + (1 - jax.nn.one_hot(targets, V)) * 0.1 / (V - 1)
    entropy = -jnp.sum(soft[0, 0] * jnp.log(soft[0, 0]))
    np.testing.assert_allclose(
        smooth, optax.softmax_cross_entropy(logits, soft) - entropy, rtol=1e-5
    )
    perfect = jnp.log(soft)  # predicting the smoothed targets exactly costs nothing
    np.testing.assert_allclose(losses(perfect, targets, label_smoothing=0.1)[0], 0, atol=1e-5)
    with_z, z = losses(logits, targets, z_loss=1e-2)
    lse = jax.nn.logsumexp(logits, axis=-1)
    np.testing.assert_allclose(z, 1e-2 * lse**2, rtol=1e-5)
    np.testing.assert_allclose(with_z, ref + z, rtol=1e-5)


# --- decoding ------------------------------------------------------------------------


def test_cached_decoding_equals_the_full_forward(t5):
    """Prefill, single steps and a chunk through the KV cache give the teacher-forced
    logits (cross-attention keys and values computed once)."""
    model, params = t5
    source = jnp.array([[3, 4, 5, 6, 0], [7, 8, 9, 0, 0]])
    inputs = jax.random.randint(jax.random.PRNGKey(2), (2, 8), 1, V)
    full = _apply(model)({"params": params}, source, inputs)
    encoded = _apply(model, method="encode")({"params": params}, source)
    kv = _apply(model, method="cross_keys_values")({"params": params}, encoded)
    segments = (source != 0).astype(jnp.int32)
    cache = jax.eval_shape(
        functools.partial(model.init, decode=True, method="decode"),
        jax.random.PRNGKey(0),
        inputs[:, :1],
        kv,
        segments,
    )["cache"]
    cache = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), cache)
    step = _apply(model, decode=True, method="decode", mutable=["cache"])
    pieces = []
    for lo, hi in [(0, 3), (3, 4), (4, 5), (5, 8)]:
        logits, updated = step({"params": params, "cache": cache}, inputs[:, lo:hi], kv, segments)
        cache = updated["cache"]
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)


@pytest.fixture(scope="module")
def generator(t5):
    model, params = t5
    return Seq2SeqGenerator(model, params, eos_id=1)


SOURCES = np.array([[3, 4, 5, 6, 0], [7, 8, 9, 10, 11], [2, 12, 0, 0, 0]])


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_cached_greedy_equals_uncached_greedy(t5, generator):
    model, params = t5
    cached = generator.generate(SOURCES, max_len=8)
    np.testing.assert_array_equal(cached, generate_uncached(model, params, SOURCES, 8, eos_id=1))
    # rows that ended carry padding after their end id
    for row in cached:
        ends = np.flatnonzero(row == 1)
        if ends.size:
            assert not row[ends[0] + 1 :].any()


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_sampling_is_seeded_and_top_k_1_is_greedy(generator):
    hot = SamplingConfig(temperature=1.0)
    a = generator.generate(SOURCES, 8, hot, seed=1)
    np.testing.assert_array_equal(a, generator.generate(SOURCES, 8, hot, seed=1))
    assert not np.array_equal(a, generator.generate(SOURCES, 8, hot, seed=2))
    np.testing.assert_array_equal(
        generator.generate(SOURCES, 8, SamplingConfig(top_k=1), seed=3),
        generator.generate(SOURCES, 8),
    )


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_beam_size_1_without_length_penalty_equals_greedy(generator):
    """Also where greedy never ends and an early end id was the second choice (row 2
    here): such a candidate does not rank among the best 1 and does not finish."""
    seqs, _ = generator.beam_search(SOURCES, max_len=8, beam_size=1, alpha=0.0)
    np.testing.assert_array_equal(seqs[:, 0], generator.generate(SOURCES, 8))


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_beams_are_sorted_by_their_length_normalised_model_score(t5, generator):
    model, params = t5
    seqs, scores = generator.beam_search(SOURCES, max_len=8, beam_size=4)
    assert seqs.shape == (3, 4, 8) and np.all(np.diff(scores, axis=1) <= 0)
    for b in range(3):
        outputs = seqs[b]
        lengths = np.array(
            [(np.flatnonzero(o == 1)[0] + 1) if (o == 1).any() else 8 for o in outputs]
        )
        log_p = sequence_log_prob(
            model, params, np.repeat(SOURCES[b : b + 1], 4, 0), outputs, eos_id=1
        )
        expected = np.asarray(log_p) / np.asarray(length_penalty(lengths, 0.6))
        np.testing.assert_allclose(scores[b], expected, rtol=1e-4)
        assert len({tuple(o) for o in outputs}) == 4  # distinct hypotheses


# A Markov chain over 4 ids (0 start, 1 end, 2 "a", 3 "b") as the next-token function:
# greedy takes "a" (0.6) and then keeps paying for it; "b" (0.4) ends for sure.
CHAIN = np.log(
    np.array(
        [
            [1e-9, 1e-9, 0.6, 0.4],  # after the start
            [1e-9, 1.0, 1e-9, 1e-9],  # after the end (never used)
            [1e-9, 0.3, 0.35, 0.35],  # after "a": nothing likely
            [1e-9, 1.0, 1e-9, 1e-9],  # after "b": the end
        ]
    )
)


def _chain_step(tokens_N1, cache):
    return jnp.asarray(CHAIN, jnp.float32)[tokens_N1], cache


def test_beam_search_beats_greedy_on_a_crafted_chain():
    greedy = sample_loop(
        _chain_step,
        {},
        1,
        4,
        start_id=0,
        eos_id=1,
        sampling=SamplingConfig(temperature=0.0),
        rng=jax.random.PRNGKey(0),
    )
    np.testing.assert_array_equal(greedy, [[2, 2, 2, 2]])  # p = 0.6 * 0.35**3 = 0.026
    seqs, scores = beam_search(_chain_step, {}, 1, 2, 4, start_id=0, eos_id=1, alpha=0.0)
    np.testing.assert_array_equal(seqs[0, 0], [3, 1, 0, 0])  # "b" then end: 0.4
    np.testing.assert_allclose(scores[0, 0], np.log(0.4), rtol=1e-5)
    assert scores[0, 0] > np.log(0.6 * 0.35**3)


def test_bad_decoding_arguments_are_errors(t5, generator):
    model, params = t5
    with pytest.raises(ValueError, match="max_target_len=8"):
        generator.generate(SOURCES, max_len=9)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        generator.beam_search(SOURCES, max_len=4, beam_size=0)
    with pytest.raises(ValueError, match="end id 1 is banned"):
        Seq2SeqGenerator(model, params, eos_id=1, banned_ids=[0, 1])


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_xla_attention_and_bfloat16_compute_agree_with_the_float32_reference(t5):
    """``model.attention=xla`` (jax.nn.dot_product_attention with the position bias) gives
    the reference logits; bfloat16 compute keeps float32 parameters and logits, close to
    the float32 ones."""
    _, params = t5
    source, inputs = jnp.array([[3, 4, 5, 6, 0]]), jnp.array([[0, 7, 8, 9]])
    reference = _apply(T5(CFG))({"params": params}, source, inputs)
    xla = _apply(T5(dataclasses.replace(CFG, attention="xla")))({"params": params}, source, inputs)
    np.testing.assert_allclose(xla, reference, atol=1e-5)
    bf16 = _apply(T5(dataclasses.replace(CFG, dtype="bfloat16")))(
        {"params": params}, source, inputs
    )
    assert bf16.dtype == jnp.float32
    assert np.abs(bf16 - reference).max() < 0.05 * np.abs(reference).max()
    assert (
        CFG.signature() == dataclasses.replace(CFG, dtype="bfloat16", attention="xla").signature()
    )


def test_flops_per_token_counts_every_kernel_once_per_token():
    """At source and target length 1 the matmul part of the count is 6 x every kernel
    parameter (the embedding gather is no matmul; the untied head is)."""
    tokens = jnp.ones((1, 1), jnp.int32)
    params = jax.eval_shape(T5(CFG).init, jax.random.PRNGKey(0), tokens, tokens)["params"]
    leaves = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(params))
    kernels = sum(a.size for path, a in leaves if str(path[-1].key).endswith("kernel"))
    hk, layers = CFG.num_heads * CFG.head_dim, CFG.num_encoder_layers + 2 * CFG.num_decoder_layers
    attention = 3 * 4 * hk * layers  # one key per query in each attention
    assert 2 * flops_per_token(CFG, 1, 1) == pytest.approx(6 * kernels + attention)


@pytest.fixture(scope="module")
def text_generator():
    tokenizer = ByteTokenizer(num_registers=0)
    model, params = _init(dataclasses.replace(CFG, vocab_size=tokenizer.vocab_size))
    tokens = Seq2SeqGenerator(
        model, params, eos_id=tokenizer.eos_id, banned_ids=tokenizer.non_text_ids()
    )
    return Seq2SeqTextGenerator(
        tokens, tokenizer, "tokenizer.json", max_source_len=16, prefix="tr: "
    )


def test_an_input_longer_than_the_model_takes_is_a_data_error():
    tokenizer = ByteTokenizer(num_registers=0)
    model = T5(dataclasses.replace(CFG, vocab_size=tokenizer.vocab_size))
    tokens = Seq2SeqGenerator(model, None, eos_id=tokenizer.eos_id)  # encoding needs no params
    text_generator = Seq2SeqTextGenerator(
        tokens, tokenizer, "tok.json", max_source_len=16, prefix="tr: "
    )
    assert text_generator.encode("abc").shape == (1, 8)  # "tr: abc" + the end id
    with pytest.raises(DataError, match="has 18 tokens .* more than the 16 the model takes"):
        text_generator.encode("0123456789abc")


@pytest.mark.slow  # compiles its own programs: ~5 s on a quiet 2-core machine
def test_text_generation_decodes_the_token_search_and_batches_agree(text_generator):
    tokenizer = text_generator.tokenizer
    text = text_generator.generate("abc", 6)
    ids = output_ids(text_generator.generator.generate(text_generator.encode("abc"), 6)[0], 1)
    assert text == tokenizer.decode(ids) and text_generator.num_generated == len(ids)
    assert "".join(text_generator.stream("abc", 6)) == text
    batched = text_generator.translate(["abc", "hello"], 6, batch_size=4)
    assert batched == [text, text_generator.generate("hello", 6)]


@pytest.mark.slow  # compiles for 8 devices: ~10 s on a quiet 2-core machine
def test_a_sharded_forward_and_gradient_on_8_devices_equal_one_device(t5):
    """Parameters placed by their logical axes (data:2, fsdp:2, tensor:2 under the trainer's
    rules), batch split over data x fsdp: the same logits and gradients as one device."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from nlpjax.training import parallel

    model, params = t5
    source = jax.random.randint(jax.random.PRNGKey(5), (4, 6), 0, V)
    targets = jax.random.randint(jax.random.PRNGKey(6), (4, 5), 1, V)

    def loss(p, s, t):
        return token_losses(model.apply({"params": p}, s, shift_right(t)), t)[0].mean()

    step = jax.jit(jax.value_and_grad(loss))
    expected = step(params, source, targets)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), parallel.MESH_AXES)
    tokens = jnp.ones((1, 2), jnp.int32)
    specs = nn.get_partition_spec(jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens))
    shardings = parallel.tree_shardings(specs["params"], params, mesh, parallel.RULES)
    assert shardings["decoder_0"]["self_attn"]["q_kernel"].spec == P("fsdp", "tensor", None)
    batch = NamedSharding(mesh, P(parallel.BATCH_AXES))
    with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.RULES):
        got = step(jax.device_put(params, shardings), *jax.device_put((source, targets), batch))
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    for a, b in zip(
        jax.tree_util.tree_leaves(got[1]), jax.tree_util.tree_leaves(expected[1]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
