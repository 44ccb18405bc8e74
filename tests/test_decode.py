"""KV-cache decoding equals the uncached model (also past the context); sampling filters,
banned ids, determinism; streamed text equals the whole decoded text."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.data.tokenizers import ByteTokenizer, CharTokenizer
from nlpjax.data.word_tokenizer import WordTokenizer
from nlpjax.inference.decode import (
    Generator,
    SamplingConfig,
    filter_logits,
    generate_uncached,
    sample,
)
from nlpjax.inference.kv_cache import init_cache
from nlpjax.inference.text_stream import TextStream
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


def _sliding_reference(model, params, prompt_BL, max_new_tokens, sampling, seed=0):
    """The cached path's windows, each encoded from scratch without a cache.

    The window starts as the prompt's last max_len tokens and grows by one token per
    step; once it holds max_len tokens, the next window is the last max_len // 2 tokens.
    Windows are right-padded to max_len (causal: padding after a position cannot change
    its logits), so the model compiles once.
    """
    max_len, key = model.config.max_len, jax.random.PRNGKey(seed)
    apply = jax.jit(lambda p, t: model.apply({"params": p}, t))
    tokens = [int(t) for t in prompt_BL[0]]
    window, out = tokens[-max_len:], []
    for i in range(max_new_tokens):
        padded = jnp.asarray([window + [0] * (max_len - len(window))], jnp.int32)
        logits_V = apply(params, padded)[0, len(window) - 1]
        out.append(int(sample(logits_V[None], jax.random.fold_in(key, i), sampling)[0]))
        tokens.append(out[-1])
        window = tokens[-(max_len // 2) :] if len(window) == max_len else window + [out[-1]]
    return np.asarray([out], np.int32)


# A 20-token prompt: make test-all (the window arithmetic is the same as from 1 token).
@pytest.mark.parametrize("prompt_len", [1, pytest.param(20, marks=pytest.mark.slow)])
def test_generation_past_the_context_equals_the_uncached_windows(model_and_params, prompt_len):
    model, params = model_and_params  # max_len 12: 40 new tokens re-encode five times or more
    prompt = np.asarray(jax.random.randint(jax.random.PRNGKey(prompt_len), (1, prompt_len), 0, 13))
    for sampling in (SamplingConfig(temperature=0.0), SamplingConfig(temperature=1.0)):
        cached = Generator(model, params, sampling).generate(prompt, 40, seed=2)
        reference = _sliding_reference(model, params, prompt, 40, sampling, seed=2)
        np.testing.assert_array_equal(cached, reference)
    assert len(set(cached[0].tolist())) > 3  # sampled: not a trivially constant sequence


def test_zero_new_tokens_and_streaming_agree(model_and_params):
    model, params = model_and_params
    gen = Generator(model, params, SamplingConfig(temperature=1.0))
    assert gen.generate(np.array([[1, 2]]), 0).shape == (1, 0)
    streamed = np.stack(list(gen.stream(np.array([[1, 2]]), 30, seed=5)), axis=1)
    np.testing.assert_array_equal(streamed, gen.generate(np.array([[1, 2]]), 30, seed=5))


def test_banned_ids_are_never_chosen_even_with_the_largest_logit(model_and_params):
    model, params = model_and_params
    logits = jnp.array([[0.0, 9.0, 1.0, 8.0]])
    banned = jnp.array([False, True, False, True])
    assert int(sample(logits, jax.random.PRNGKey(0), SamplingConfig(0.0), banned)[0]) == 2
    draws = [
        int(sample(logits, jax.random.PRNGKey(i), SamplingConfig(1.0), banned)[0])
        for i in range(50)
    ]
    assert set(draws) <= {0, 2} and set(draws) == {0, 2}
    greedy = Generator(model, params, SamplingConfig(temperature=0.0))
    favourite = int(np.bincount(greedy.generate(np.array([[3]]), 30)[0]).argmax())
    out = Generator(model, params, SamplingConfig(0.0), banned_ids=[favourite])
    assert favourite not in out.generate(np.array([[3]]), 30)
    reference = generate_uncached(
        model, params, np.array([[3]]), 9, SamplingConfig(0.0), banned_ids=[favourite]
    )
    np.testing.assert_array_equal(out.generate(np.array([[3]]), 9), reference)
    with pytest.raises(ValueError, match="every id"):
        Generator(model, params, SamplingConfig(0.0), banned_ids=range(13))


@pytest.mark.parametrize(
    "tokenizer",
    [
        ByteTokenizer(),
        CharTokenizer.from_text("héllo wörld ✓ 𝄞 abc\n"),
        WordTokenizer.from_text("to be or not to be"),
    ],
    ids=["byte", "char", "word"],
)
def test_streamed_text_is_the_whole_decoded_text(tokenizer):
    if tokenizer.kind == "word":
        ids = tokenizer.encode("to be or not to be not").tolist() + [tokenizer.pause_id, 4]
    else:
        ids = tokenizer.encode("héllo wörld ✓ 𝄞 abc\n" * 2).tolist()
    if tokenizer.kind == "byte":
        ids += [0xE2 + 4, 0x82 + 4, ord("A") + 4, 0xF0 + 4]  # an invalid, then a cut-off char
    stream = TextStream(tokenizer)
    pieces = [stream.push([i]) for i in ids]
    pieces.append(stream.flush())
    assert "".join(pieces) == tokenizer.decode(ids)
    if tokenizer.kind == "byte":  # never half a character: "✓" is 3 bytes, "𝄞" 4
        assert all("\ufffd" not in p for p in pieces[:-6])


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
