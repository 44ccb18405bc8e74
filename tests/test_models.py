"""Decoder shapes, causality, position variants and mask builders."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.models import attention, positions
from nlpjax.models.decoder import Decoder, DecoderConfig
from nlpjax.training.state import count_params


def _init(cfg, length=8, batch=2):
    model = Decoder(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((batch, length), jnp.int32))
    return model, nn.meta.unbox(variables["params"]), variables


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_output_shape_and_param_count(pos, norm):
    cfg = DecoderConfig(
        vocab_size=11, num_layers=2, num_heads=2, d_model=16, max_len=8, positions=pos, norm=norm
    )
    model, params, _ = _init(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 5), 0, 11)
    logits = model.apply({"params": params}, tokens)
    assert logits.shape == (3, 5, 11)
    assert np.isfinite(np.asarray(logits)).all()
    per_layer = (
        4 * 16 * 16
        + 4 * 16
        + 2 * 16 * 64
        + 64
        + 16
        + 2 * 2 * 16 * (norm == "layernorm" and 1 or 0.5)
    )
    expected = 2 * per_layer + 11 * 16 + 16 * (1 + (norm == "layernorm"))
    expected += 8 * 16 if pos == "learned" else 0
    assert count_params(params) == int(expected)


def test_untied_head_adds_a_vocab_projection():
    base = DecoderConfig(vocab_size=11, num_layers=1, num_heads=2, d_model=16, max_len=8)
    untied = DecoderConfig(**{**base.__dict__, "tie_embeddings": False})
    assert count_params(_init(untied)[1]) - count_params(_init(base)[1]) == 16 * 11


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
def test_causality_gradient_of_position_t_wrt_later_inputs_is_zero(pos):
    """Tokens 0..L-1 each use their own embedding row, so row j's gradient is input j's."""
    length = 8
    cfg = DecoderConfig(
        vocab_size=length,
        num_layers=2,
        num_heads=2,
        d_model=16,
        max_len=length,
        positions=pos,
        tie_embeddings=False,
    )
    model, params, _ = _init(cfg, length, 1)
    tokens = jnp.arange(length)[None]

    def outputs(emb):  # one scalar per output position
        logits = model.apply({"params": {**params, "embedding": emb}}, tokens)
        return jnp.sum(logits[0] ** 2, axis=-1)

    jac = np.asarray(jax.jit(jax.jacrev(outputs))(params["embedding"]))  # (t, j, D)
    sensitivity = np.abs(jac).sum(axis=-1)  # output t w.r.t. input position j
    assert (np.triu(sensitivity, k=1) == 0).all(), "an output position sees the future"
    assert (sensitivity[np.tril_indices(length)] > 0).all(), "an output ignores its past"


def test_sequence_longer_than_context_is_rejected():
    cfg = DecoderConfig(vocab_size=5, num_layers=1, num_heads=1, d_model=8, max_len=4)
    model, params, _ = _init(cfg, 4)
    with pytest.raises(ValueError, match="exceeds model.max_len=4"):
        model.apply({"params": params}, jnp.zeros((1, 5), jnp.int32))


def test_params_carry_logical_axis_names():
    cfg = DecoderConfig(vocab_size=5, num_layers=1, num_heads=2, d_model=8, max_len=4)
    _, _, variables = _init(cfg, 4)
    specs = nn.get_partition_spec(variables)["params"]
    assert tuple(specs["embedding"]) == ("vocab", "embed")
    assert tuple(specs["block_0"]["attn"]["qkv_kernel"]) == ("embed", None, "heads", "kv")
    assert tuple(specs["block_0"]["mlp"]["wi"]["kernel"]) == ("embed", "mlp")


def test_mask_builders():
    causal = np.asarray(attention.causal_mask(3))[0, 0]
    np.testing.assert_array_equal(causal, np.tril(np.ones((3, 3), bool)))
    seg = np.asarray(attention.segment_mask(jnp.array([[1, 1, 2]]), jnp.array([[1, 1, 2]])))[0, 0]
    np.testing.assert_array_equal(seg, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    pad = attention.padding_mask(jnp.array([[True, False]]))
    both = np.asarray(attention.combine_masks(attention.causal_mask(2), pad, None))[0, 0]
    np.testing.assert_array_equal(both, [[1, 0], [1, 0]])
    pos = np.asarray(attention.position_causal_mask(jnp.array([[2]]), jnp.array([[0, 1, 2, 3]])))
    np.testing.assert_array_equal(pos[0, 0, 0], [1, 1, 1, 0])


def test_rope_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 1, 8))

    def score(i, j):
        qi = positions.rope(q, jnp.array([[i]]))
        kj = positions.rope(k, jnp.array([[j]]))
        return float(jnp.sum(qi * kj))

    assert score(3, 1) == pytest.approx(score(10, 8), rel=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)
