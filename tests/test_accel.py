"""Mixed precision, attention implementations, remat (CPU checks of the accelerator paths)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.inference.kv_cache import init_cache
from nlpjax.models import attention
from nlpjax.models.decoder import Decoder, DecoderConfig
from nlpjax.precision import resolve_dtype

VOCAB, LENGTH = 23, 16


def _cfg(**kw) -> DecoderConfig:
    base = dict(vocab_size=VOCAB, num_layers=2, num_heads=2, d_model=32, max_len=LENGTH)
    return DecoderConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.PRNGKey(1), (2, LENGTH), 0, VOCAB)


@pytest.fixture(scope="module", params=["learned", "rope"])
def reference(request, tokens):
    """(config, float32 params, float32 reference-attention logits) per position kind."""
    cfg = _cfg(positions=request.param, attention="reference", dtype="float32")
    variables = Decoder(cfg).init(jax.random.PRNGKey(0), tokens)
    params = nn.meta.unbox(variables["params"])
    return cfg, params, Decoder(cfg).apply({"params": params}, tokens)


def _logits(cfg, params, tokens, **kw):
    return Decoder(cfg).apply({"params": params}, tokens, **kw)


# -- mixed precision ----------------------------------------------------------------------


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_accelerators():
    assert resolve_dtype("auto") == jnp.float32  # the tests run on CPU
    assert resolve_dtype("auto", backend="gpu") == jnp.bfloat16
    assert resolve_dtype("auto", backend="tpu") == jnp.bfloat16
    assert resolve_dtype("float16", backend="cpu") == jnp.float16


def test_bfloat16_forward_is_close_to_float32_and_params_stay_float32(reference, tokens):
    cfg, params, ref_BLV = reference
    bf16 = dataclasses.replace(cfg, dtype="bfloat16")
    fresh = nn.meta.unbox(Decoder(bf16).init(jax.random.PRNGKey(0), tokens)["params"])
    assert {x.dtype for x in jax.tree_util.tree_leaves(fresh)} == {jnp.dtype(jnp.float32)}
    out_BLV = _logits(bf16, params, tokens)
    assert out_BLV.dtype == jnp.float32  # logits for the loss in float32
    assert not np.array_equal(out_BLV, ref_BLV)  # it really computed in bfloat16
    np.testing.assert_allclose(out_BLV, ref_BLV, atol=2e-2, rtol=2e-2)


def test_bfloat16_params_are_stored_in_bfloat16(tokens):
    cfg = _cfg(dtype="bfloat16", param_dtype="bfloat16")
    params = nn.meta.unbox(Decoder(cfg).init(jax.random.PRNGKey(0), tokens)["params"])
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize(
    "field,value", [("dtype", "bf16"), ("param_dtype", "auto"), ("attention", "flash")]
)
def test_bad_precision_or_attention_names_are_config_errors(field, value):
    from nlpjax.config import ConfigError

    with pytest.raises(ConfigError, match=f"model.{field}"):
        _cfg(**{field: value})


# -- attention implementations ------------------------------------------------------------


def test_choice_of_implementation_and_explicit_fallbacks(caplog, monkeypatch):
    monkeypatch.setattr(attention, "_reported", set())  # each fallback is logged once
    bf16, f32 = jnp.bfloat16, jnp.float32
    choose = attention.choose_implementation
    assert choose("auto", dtype=f32, head_dim=64, backend="cpu") == "reference"
    assert choose("auto", dtype=bf16, head_dim=64, backend="gpu") == "cudnn"
    assert choose("auto", dtype=f32, head_dim=64, backend="gpu") == "reference"
    assert choose("auto", dtype=bf16, head_dim=64, backend="gpu", decode=True) == "reference"
    assert choose("auto", dtype=bf16, head_dim=64, backend="gpu", dropout=True) == "reference"
    assert choose("xla", dtype=f32, head_dim=64, backend="cpu") == "xla"
    assert choose("cudnn", dtype=bf16, head_dim=64, backend="gpu") == "cudnn"
    with caplog.at_level("WARNING"):
        assert choose("cudnn", dtype=bf16, head_dim=64, backend="cpu") == "xla"
        assert choose("cudnn", dtype=f32, head_dim=64, backend="gpu") == "xla"
        assert choose("cudnn", dtype=bf16, head_dim=60, backend="gpu") == "xla"
        assert choose("cudnn", dtype=bf16, head_dim=64, backend="gpu", extra_mask=True) == "xla"
        assert choose("xla", dtype=bf16, head_dim=64, backend="gpu", dropout=True) == "reference"
    assert "needs a GPU" in caplog.text and "multiple of 8" in caplog.text
    assert "attention dropout" in caplog.text


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_xla_attention_equals_the_reference(reference, tokens, dtype, tol):
    cfg, params, ref_BLV = reference
    ref = _logits(dataclasses.replace(cfg, dtype=dtype), params, tokens)
    out = _logits(dataclasses.replace(cfg, dtype=dtype, attention="xla"), params, tokens)
    np.testing.assert_allclose(out, ref, atol=tol, rtol=tol)
    np.testing.assert_allclose(out, ref_BLV, atol=tol, rtol=tol)


def test_xla_attention_gradients_equal_the_reference(reference, tokens):
    cfg, params, _ = reference

    def loss(p, c):
        return jnp.mean(_logits(c, p, tokens) ** 2)

    g_ref = jax.grad(loss)(params, cfg)
    g_xla = jax.grad(loss)(params, dataclasses.replace(cfg, attention="xla"))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), g_xla, g_ref
    )


def test_xla_attention_with_segments_equals_the_reference(reference, tokens):
    cfg, params, _ = reference
    segments = jnp.array([[1] * 6 + [2] * 10, [1] * 11 + [2] * 3 + [0] * 2])
    ref = _logits(cfg, params, tokens, segments_BL=segments)
    out = _logits(dataclasses.replace(cfg, attention="xla"), params, tokens, segments_BL=segments)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    # the segments matter: the second segment does not see the first
    plain = _logits(cfg, params, tokens)
    assert not np.allclose(out[0, 6:], plain[0, 6:], atol=1e-3)
    np.testing.assert_allclose(out[0, :6], plain[0, :6], atol=1e-5, rtol=1e-5)


def test_xla_kv_cache_decode_equals_the_full_reference_forward(reference, tokens):
    cfg, params, ref_BLV = reference
    model = Decoder(dataclasses.replace(cfg, attention="xla"))
    cache, pieces = init_cache(model, 2), []
    for lo, hi in [(0, 5), (5, 6), (6, 7), (7, LENGTH)]:  # prefill, two single steps, a chunk
        logits, updated = model.apply(
            {"params": params, "cache": cache}, tokens[:, lo:hi], decode=True, mutable=["cache"]
        )
        cache = updated["cache"]
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), ref_BLV, atol=1e-5, rtol=1e-5)


def test_only_the_reference_path_sows_attention_weights(reference, tokens):
    cfg, params, _ = reference
    _, ref_state = Decoder(cfg).apply({"params": params}, tokens, mutable=["intermediates"])
    weights = ref_state["intermediates"]["block_0"]["attn"]["attention_weights"][0]
    assert weights.shape == (2, 2, LENGTH, LENGTH)
    xla = Decoder(dataclasses.replace(cfg, attention="xla"))
    _, xla_state = xla.apply({"params": params}, tokens, mutable=["intermediates"])
    sown = jax.tree_util.tree_flatten_with_path(xla_state.get("intermediates", {}))[0]
    names = {jax.tree_util.keystr(path) for path, _ in sown}
    assert names and not any("attention_weights" in n for n in names)  # hidden states only


# -- rematerialisation ---------------------------------------------------------------------


def _loss_and_grads(cfg, params, tokens):
    def loss(p):
        logits_BLV = Decoder(cfg).apply({"params": p}, tokens[:, :-1])
        logp = jax.nn.log_softmax(logits_BLV)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize(
    "remat",
    [
        "full",
        "dots_saveable",
        pytest.param("dots_with_no_batch_dims_saveable", marks=pytest.mark.slow),  # test-all
    ],
)
def test_remat_gives_identical_gradients_and_really_recomputes(reference, tokens, remat):
    cfg, params, _ = reference
    rematted = dataclasses.replace(cfg, remat=remat)
    loss, grads = _loss_and_grads(cfg, params, tokens)
    loss_r, grads_r = _loss_and_grads(rematted, params, tokens)
    assert float(loss_r) == float(loss)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), grads_r, grads
    )
    # the same parameter tree (checkpoints do not depend on remat), and a remat in the graph
    assert jax.tree_util.tree_structure(grads_r) == jax.tree_util.tree_structure(grads)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: _logits(rematted, p, tokens).sum()))(params))
    assert "remat" in jaxpr or "checkpoint" in jaxpr


def test_bad_remat_policy_is_a_config_error():
    from nlpjax.config import ConfigError

    with pytest.raises(ConfigError, match="model.remat must be one of"):
        _cfg(remat="everything")
