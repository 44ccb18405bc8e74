"""KV-cache decoding equals the uncached model; sampling filters; determinism."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.inference.decode import (
    Generator,
    SamplingConfig,
    filter_logits,
    generate_uncached,
)
from nlpjax.inference.kv_cache import init_cache
from nlpjax.models.decoder import Decoder, DecoderConfig


@pytest.fixture(scope="module", params=["learned", "rope"])
def model_and_params(request):
    cfg = DecoderConfig(
        vocab_size=13, num_layers=2, num_heads=2, d_model=16, max_len=12, positions=request.param
    )
    model = Decoder(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12), jnp.int32))
    return model, nn.meta.unbox(variables["params"])


def test_cached_prefill_then_steps_equal_full_forward(model_and_params):
    model, params = model_and_params
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, 13)
    full = model.apply({"params": params}, tokens)
    cache = init_cache(model, 2)
    pieces = []
    for lo, hi in [(0, 5), (5, 6), (6, 7), (7, 12)]:  # prefill, two single steps, a chunk
        logits, upd = model.apply(
            {"params": params, "cache": cache}, tokens[:, lo:hi], decode=True, mutable=["cache"]
        )
        cache = upd["cache"]
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)


def test_greedy_generation_with_cache_matches_uncached(model_and_params):
    model, params = model_and_params
    prompt = np.array([[1, 2, 3]], np.int32)
    greedy = SamplingConfig(temperature=0.0)
    cached = Generator(model, params, greedy).generate(prompt, 9)
    reference = generate_uncached(model, params, prompt, 9, greedy)
    np.testing.assert_array_equal(cached, reference)


def test_generation_beyond_the_context_keeps_going(model_and_params):
    model, params = model_and_params
    out = Generator(model, params, SamplingConfig(0.8, top_k=5)).generate(np.array([[1]]), 40)
    assert out.shape == (1, 40) and ((out >= 0) & (out < 13)).all()


def test_sampling_is_deterministic_for_a_seed(model_and_params):
    model, params = model_and_params
    gen = Generator(model, params, SamplingConfig(temperature=1.0))
    prompt = np.array([[4, 5]], np.int32)
    a, b = gen.generate(prompt, 20, seed=7), gen.generate(prompt, 20, seed=7)
    c = gen.generate(prompt, 20, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    top2 = np.isfinite(np.asarray(filter_logits(logits, SamplingConfig(1.0, top_k=2))))
    np.testing.assert_array_equal(top2, [[True, True, False, False, False]])
    nucleus = np.isfinite(np.asarray(filter_logits(logits, SamplingConfig(1.0, top_p=0.8))))
    np.testing.assert_array_equal(nucleus, [[True, True, True, False, False]])
    tiny_p = np.isfinite(np.asarray(filter_logits(logits, SamplingConfig(1.0, top_p=0.1))))
    np.testing.assert_array_equal(tiny_p, [[True, False, False, False, False]])


def test_bad_sampling_settings():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
