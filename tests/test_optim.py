"""Optimizer construction: which parameters AdamW decays, and that it decays only those."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.config import ConfigError, OptimConfig
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


# --- Adafactor and the rsqrt schedule ----------------------------------------------------


def test_rsqrt_schedule_is_flat_then_inverse_square_root():
    schedule = make_schedule(OptimConfig(lr=1.0, warmup_steps=100, schedule="rsqrt"), 1000)
    got = [float(schedule(s)) for s in (0, 1, 99, 100, 400, 10_000)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.1, 0.1, 0.05, 0.01], rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"name": "adafactr"}, "optim.name must be one of adamw|sgd|adafactor, got 'adafactr'"),
        ({"schedule": "rsqr"}, "optim.schedule must be one of cosine|constant|rsqrt"),
        ({"schedule": "rsqrt", "warmup_steps": 0}, "rsqrt needs optim.warmup_steps > 0"),
        ({"decay_rate": 0.0}, "optim.decay_rate must be in \\(0, 1\\]"),
        ({"clipping_threshold": -1.0}, "optim.clipping_threshold must be >= 0"),
    ],
)
def test_bad_adafactor_and_schedule_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        OptimConfig(**overrides)


def _adafactor(**overrides):
    cfg = OptimConfig(name="adafactor", lr=1.0, warmup_steps=0, schedule="constant", **overrides)
    return make_optimizer(cfg, make_schedule(cfg, 10))


def _second_moments(state) -> list:
    """Adafactor's factored states, found anywhere in a chained optimizer state."""
    is_factored = lambda x: type(x).__name__ == "FactoredState"  # noqa: E731
    leaves = jax.tree_util.tree_leaves(state, is_leaf=is_factored)
    return [x for x in leaves if is_factored(x)]


def test_adafactor_factors_the_second_moments_of_large_matrices_only():
    params = {"big_kernel": jnp.ones((256, 128)), "small_kernel": jnp.ones((8, 8))}
    (moments,) = _second_moments(_adafactor(clip_norm=0.0, weight_decay=0.0).init(params))
    # a row and a column statistic (256 + 128 numbers) instead of the (256, 128) moment
    rows_cols = {moments.v_row["big_kernel"].shape, moments.v_col["big_kernel"].shape}
    assert rows_cols == {(256,), (128,)} and moments.v["big_kernel"].size == 1
    assert moments.v["small_kernel"].shape == (8, 8)  # too small to factor: a full moment
    (unfactored,) = _second_moments(
        _adafactor(factored=False, clip_norm=0.0, weight_decay=0.0).init(params)
    )
    assert unfactored.v["big_kernel"].shape == (256, 128)


def _first_update(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def _rms(x) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(x))))


def test_adafactor_clips_updates_and_scales_them_by_the_parameters_rms():
    """Relative step: the update is lr * RMS(param) * (clipped normalized gradient)."""
    key = jax.random.PRNGKey(0)
    grads = {"a_kernel": jax.random.normal(key, (4, 6)), "b_kernel": jnp.ones((4, 6))}
    params = {"a_kernel": jnp.full((4, 6), 1.0), "b_kernel": jnp.full((4, 6), 10.0)}
    tx = _adafactor(clip_norm=0.0, weight_decay=0.0)
    updates = _first_update(tx, params, grads)
    # First step: each normalized update has RMS 1 before clipping (threshold 1.0), so
    # the update's RMS is lr * RMS(param): 1 and 10.
    assert _rms(updates["a_kernel"]) == pytest.approx(1.0, rel=1e-3)
    assert _rms(updates["b_kernel"]) == pytest.approx(10.0, rel=1e-3)
    loose = _first_update(
        _adafactor(clip_norm=0.0, weight_decay=0.0, param_scale=False), params, grads
    )
    assert _rms(loose["b_kernel"]) == pytest.approx(1.0, rel=1e-3)  # absolute step: lr only
    # Update clipping: a threshold below the update's RMS scales it down to the threshold.
    tight = _first_update(
        _adafactor(clip_norm=0.0, weight_decay=0.0, param_scale=False, clipping_threshold=0.25),
        params,
        grads,
    )
    assert _rms(tight["a_kernel"]) == pytest.approx(0.25, rel=1e-3)


def test_adafactor_weight_decay_follows_the_lr_and_the_mask_as_adamw_does():
    """With zero gradients the step is -lr * wd * p on decayed leaves and 0 elsewhere
    (optax's adafactor alone would take -wd * p, whatever the lr)."""
    params = jax.tree_util.tree_map(jnp.ones_like, nn.meta.unbox(_decoder_params()))
    cfg = OptimConfig(name="adafactor", lr=0.5, warmup_steps=0, schedule="constant", clip_norm=0.0)
    tx = make_optimizer(cfg, make_schedule(cfg, 10))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates = _first_update(tx, params, zeros)
    for (path, u), on in zip(
        jax.tree_util.tree_leaves_with_path(updates),
        jax.tree_util.tree_leaves(decay_mask(params)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(u), -0.5 * 0.1 if on else 0.0, err_msg=str(path))


def test_an_optimizer_typo_is_a_one_line_error_naming_the_choices(tmp_path, capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    bad = tmp_path / "bad"
    code = cli.main(
        ["train", f"--config={TINY}", f"--workdir={bad}", "--config.optim.name=adafactr"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "optim.name" in err[0] and "adafactor" in err[0] and not (bad / "checkpoints").exists()


def test_adafactor_tunables_may_change_on_resume_but_not_the_factoring():
    from nlpjax.training.resume import is_allowed

    assert is_allowed("optim.decay_rate") and is_allowed("optim.clipping_threshold")
    assert not is_allowed("optim.factored")  # the moments' shapes change


@pytest.mark.slow
def test_adafactor_with_rsqrt_trains_the_tiny_lm_through_the_cli(tmp_path, capsys):
    from nlpjax import cli
    from nlpjax.training.metrics import read_metrics
    from tests.conftest import TINY

    run = tmp_path / "run"
    flags = ["--config.optim.name=adafactor", "--config.optim.schedule=rsqrt"]
    flags += ["--config.optim.lr=0.3", "--config.optim.weight_decay=0"]
    code = cli.main(
        ["train", f"--config={TINY}", "--config.train.progress=false", f"--workdir={run}", *flags]
    )
    assert code == 0, capsys.readouterr()
    rows = [r for r in read_metrics(run) if "train/loss" in r]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    # the lr logged at step s is the one its last update used (at state.step s - 1)
    assert rows[-1]["train/lr"] == pytest.approx(0.3 / np.sqrt(rows[-1]["step"] - 1), rel=1e-5)
