"""Decoder research features: registers, sink token, pause tokens, and the probes."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.inference.decode import Generator, SamplingConfig, generate_uncached
from nlpjax.inference.kv_cache import broadcast_cache, prefix_cache
from nlpjax.models.decoder import Decoder, DecoderConfig

VOCAB, LENGTH = 11, 8
SMALL = DecoderConfig(
    vocab_size=VOCAB, num_layers=2, num_heads=2, d_model=16, max_len=LENGTH, attention="reference"
)


def _build(**fields):
    cfg = dataclasses.replace(SMALL, **fields)
    model = Decoder(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, LENGTH), jnp.int32))
    return model, nn.meta.unbox(variables["params"])


def _tokens(batch=2, length=LENGTH, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, VOCAB)


@pytest.fixture(scope="module")
def with_prefix():
    """Two registers and a sink (P = 3), RoPE so the prefix positions matter."""
    return _build(num_registers=2, sink_token=True, positions="rope")


# -- registers and sink: parameters, masks, positions -------------------------------------


def test_defaults_add_no_parameters_and_give_identical_logits():
    plain, plain_params = _build()
    off, off_params = _build(num_registers=0, sink_token=False)
    assert jax.tree_util.tree_structure(off_params) == jax.tree_util.tree_structure(plain_params)
    assert not {"registers", "sink_embedding"} & set(off_params)
    leaves = zip(*map(jax.tree_util.tree_leaves, (off_params, plain_params)), strict=True)
    for a, b in leaves:
        np.testing.assert_array_equal(a, b)
    tokens = _tokens()
    np.testing.assert_array_equal(
        off.apply({"params": off_params}, tokens), plain.apply({"params": plain_params}, tokens)
    )


def test_prefix_parameters_and_outputs_exclude_the_prefix(with_prefix):
    model, params = with_prefix
    assert params["registers"].shape == (2, 16)
    assert params["sink_embedding"].shape == (1, 16)
    logits, state = model.apply({"params": params}, _tokens(), mutable=["intermediates"])
    assert logits.shape == (2, LENGTH, VOCAB)  # register and sink outputs are discarded
    hidden = state["intermediates"]["hidden_states"]
    assert len(hidden) == 2 and hidden[0].shape == (2, 3 + LENGTH, 16)


def test_tokens_attend_to_the_registers_which_attend_only_to_each_other(with_prefix):
    model, params = with_prefix
    _, state = model.apply({"params": params}, _tokens(), mutable=["intermediates"])
    for layer in range(2):
        (weights,) = state["intermediates"][f"block_{layer}"]["attn"]["attention_weights"]
        weights = np.asarray(weights)  # B H (P+L) (P+L)
        assert weights.shape == (2, 2, 3 + LENGTH, 3 + LENGTH)
        assert (weights[:, :, 3:, :3].sum(-1) > 0).all(), "a token ignores the registers"
        assert (weights[:, :, :3, 3:] == 0).all(), "a register sees the input"
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_prefix_states_do_not_depend_on_the_input(with_prefix):
    model, params = with_prefix
    _, a = model.apply({"params": params}, _tokens(seed=1), mutable=["intermediates"])
    _, b = model.apply({"params": params}, _tokens(seed=2), mutable=["intermediates"])
    ha_all, hb_all = a["intermediates"]["hidden_states"], b["intermediates"]["hidden_states"]
    pairs = zip(ha_all, hb_all, strict=True)
    for ha, hb in pairs:
        np.testing.assert_array_equal(ha[:, :3], hb[:, :3])
        assert not np.array_equal(ha[:, 3:], hb[:, 3:])


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_causality_holds_for_real_tokens_with_registers_and_sink(positions):
    """Output t's gradient w.r.t. input j is zero for j > t and nonzero for j <= t."""
    model, params = _build(
        num_registers=2, sink_token=True, positions=positions, tie_embeddings=False
    )
    tokens = jnp.arange(LENGTH)[None] % VOCAB

    def outputs(emb):
        logits = model.apply({"params": {**params, "embedding": emb}}, tokens)
        return jnp.sum(logits[0] ** 2, axis=-1)

    jac = np.abs(np.asarray(jax.jit(jax.jacrev(outputs))(params["embedding"]))).sum(-1)
    sensitivity = jac[:, :LENGTH]  # tokens 0..7 use embedding rows 0..7
    assert (np.triu(sensitivity, k=1) == 0).all(), "an output position sees the future"
    assert (sensitivity[np.tril_indices(LENGTH)] > 0).all(), "an output ignores its past"


def test_packed_segments_still_see_the_registers_but_not_each_other(with_prefix):
    model, params = with_prefix
    segments = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 2]])
    tokens = _tokens(batch=1)
    _, state = model.apply(
        {"params": params}, tokens, segments_BL=segments, mutable=["intermediates"]
    )
    (weights,) = state["intermediates"]["block_0"]["attn"]["attention_weights"]
    weights = np.asarray(weights)[0]  # H (P+L) (P+L)
    assert (weights[:, 3 + 3 :, 3 : 3 + 3] == 0).all(), "segment 2 sees segment 1"
    assert (weights[:, 3:, :3].sum(-1) > 0).all(), "a packed token ignores the registers"


# -- KV cache: the prefix is computed once and reused --------------------------------------


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_cached_decoding_with_prefix_equals_full_recomputation(positions):
    model, params = _build(num_registers=2, sink_token=True, positions=positions)
    tokens = _tokens()
    full = np.asarray(model.apply({"params": params}, tokens))
    cache = broadcast_cache(jax.jit(lambda p: prefix_cache(model, p))(params), 2)
    assert int(cache["index"]) == 0  # the prefix fills slots, not token positions
    logits, state = model.apply(
        {"params": params, "cache": cache}, tokens[:, :5], decode=True, mutable=["cache"]
    )
    steps = [np.asarray(logits)]
    for t in range(5, LENGTH):
        logits, state = model.apply(
            {"params": params, "cache": state["cache"]},
            tokens[:, t : t + 1],
            decode=True,
            mutable=["cache"],
        )
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5)


def test_prefix_cache_holds_the_registers_keys_and_a_fresh_cache_does_not(with_prefix):
    model, params = with_prefix
    cache = prefix_cache(model, params)
    keys = np.asarray(cache["block_0"]["attn"]["k"])  # 1 H (P+max_len) K
    assert keys.shape[2] == 3 + LENGTH
    assert (np.abs(keys[:, :, :3]).sum(-1) > 0).all() and (keys[:, :, 3:] == 0).all()


def test_generator_with_prefix_matches_uncached_generation(with_prefix):
    model, params = with_prefix
    prompt = np.asarray(_tokens()[:, :3])
    greedy = SamplingConfig(temperature=0.0)
    cached = Generator(model, params, greedy).generate(prompt, LENGTH - 3)
    np.testing.assert_array_equal(
        cached, generate_uncached(model, params, prompt, LENGTH - 3, greedy)
    )


def test_fill_prefix_is_refused_without_a_prefix():
    model, params = _build()
    with pytest.raises(ValueError, match="fill_prefix needs"):
        model.apply(
            {"params": params},
            jnp.zeros((1, 0), jnp.int32),
            decode=True,
            fill_prefix=True,
            mutable=["cache"],
        )
