"""Optimizer construction: which parameters AdamW decays, and that it decays only those."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.config import OptimConfig
from nlpjax.models.decoder import Decoder, DecoderConfig
from nlpjax.training.optim import decay_mask, make_optimizer, make_schedule


def _decoder_params(**overrides):
    cfg = DecoderConfig(vocab_size=7, num_layers=1, num_heads=2, d_model=8, max_len=4, **overrides)
    tokens = jnp.zeros((1, 4), jnp.int32)
    return Decoder(cfg).init(jax.random.PRNGKey(0), tokens)["params"]


def _decayed_paths(mask) -> set[str]:
    leaves = jax.tree_util.tree_leaves_with_path(nn.meta.unbox(mask))
    return {"/".join(str(k.key) for k in path) for path, on in leaves if on}


def test_decoder_decays_kernels_and_embeddings_only():
    params = nn.meta.unbox(_decoder_params())
    assert _decayed_paths(decay_mask(params)) == {
        "embedding",
        "pos_embedding",
        "block_0/attn/qkv_kernel",
        "block_0/attn/out_kernel",
        "block_0/mlp/wi/kernel",
        "block_0/mlp/wo/kernel",
    }


def test_untied_head_is_decayed_and_boxed_params_give_the_same_mask():
    boxed = _decoder_params(tie_embeddings=False, norm="rmsnorm", positions="rope")
    decayed = _decayed_paths(decay_mask(boxed))  # tx.init sees boxed params in the loop
    assert "lm_head/kernel" in decayed and "pos_embedding" not in decayed
    assert decayed == _decayed_paths(decay_mask(nn.meta.unbox(boxed)))


def test_a_parameter_without_a_role_is_an_error():
    with pytest.raises(ValueError, match="'registers' has no weight-decay role"):
        decay_mask({"registers": jnp.zeros((2, 8))})


def test_adamw_update_decays_exactly_the_masked_leaves():
    """With zero gradients AdamW's step is -lr * wd * p on decayed leaves and 0 elsewhere."""
    params = jax.tree_util.tree_map(jnp.ones_like, nn.meta.unbox(_decoder_params()))
    cfg = OptimConfig(lr=0.5, warmup_steps=0, schedule="constant", weight_decay=0.1)
    tx = make_optimizer(cfg, make_schedule(cfg, 10))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    mask = decay_mask(params)
    for (path, u), on in zip(
        jax.tree_util.tree_leaves_with_path(updates), jax.tree_util.tree_leaves(mask), strict=True
    ):
        expected = -0.5 * 0.1 if on else 0.0
        np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-6, err_msg=str(path))
    qkv_bias = updates["block_0"]["attn"]["qkv_bias"]
    assert qkv_bias.shape == (3, 2, 4) and not np.asarray(qkv_bias).any()
