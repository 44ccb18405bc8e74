"""Decoder research features: registers, sink token, pause tokens, and the probes."""

import dataclasses
import functools
import hashlib
import json
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax import cli
from nlpjax.analysis import probes
from nlpjax.api import load_config, restore_run, train
from nlpjax.data import pipeline, transforms
from nlpjax.errors import ConfigError, DataError
from nlpjax.inference.decode import Generator, SamplingConfig, generate_uncached
from nlpjax.inference.kv_cache import broadcast_cache, prefix_cache
from nlpjax.models.decoder import Decoder, DecoderConfig, flops_per_token
from nlpjax.tasks.base import make_loss_average
from nlpjax.tasks.lm import LMTask, answer_matches
from nlpjax.training.metrics import read_metrics
from tests.conftest import TINY

VOCAB, LENGTH = 11, 8
SMALL = DecoderConfig(
    vocab_size=VOCAB, num_layers=2, num_heads=2, d_model=16, max_len=LENGTH, attention="reference"
)


@functools.cache
def _build(**fields):
    cfg = dataclasses.replace(SMALL, **fields)
    model = Decoder(cfg)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, LENGTH), jnp.int32))
    return model, nn.meta.unbox(variables["params"])


@functools.cache
def _jitted(model, **options):
    """``model.apply`` jitted for these keyword options (eager applies are slow here)."""
    return jax.jit(functools.partial(model.apply, **options))


def _apply(model, variables, tokens, **options):
    if "mutable" in options:
        options["mutable"] = tuple(options["mutable"])
    return _jitted(model, **options)(variables, tokens)


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
    assert not {"register_embedding", "sink_embedding"} & set(off_params)
    leaves = zip(*map(jax.tree_util.tree_leaves, (off_params, plain_params)), strict=True)
    for a, b in leaves:
        np.testing.assert_array_equal(a, b)
    tokens = _tokens()
    np.testing.assert_array_equal(
        _apply(off, {"params": off_params}, tokens), _apply(plain, {"params": plain_params}, tokens)
    )


# Digests of the plain decoder's initial parameters and logits computed by the code of
# commit 7fa6577, before registers, the sink and pauses existed (XLA:CPU, jax 0.10.2,
# x86-64): sha256 prefixes of the float32 bytes of the parameter leaves and of the logits,
# and the logits' sum. The current code with the defaults reproduces them bitwise.
BEFORE_THE_FEATURES = {
    "learned": ("9e9023ffc207e3b4", "4749cfb7fb4debe2", "0x1.fda779f600000p+1"),
    "rope": ("09f42fd1c4f75bdc", "ba3730e2bb950faa", "0x1.19684caa00000p+2"),
}


@pytest.mark.parametrize("positions", sorted(BEFORE_THE_FEATURES))
def test_the_default_model_is_bitwise_the_model_before_the_features(positions):
    model, params = _build(positions=positions)
    logits = np.asarray(_apply(model, {"params": params}, _tokens(seed=1)))
    leaves = b"".join(np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(params))
    digest = lambda blob: hashlib.sha256(blob).hexdigest()[:16]  # noqa: E731
    got = (digest(leaves), digest(logits.tobytes()), float(logits.astype(np.float64).sum()).hex())
    assert got == BEFORE_THE_FEATURES[positions]


def test_prefix_parameters_and_outputs_exclude_the_prefix(with_prefix):
    model, params = with_prefix
    assert params["register_embedding"].shape == (2, 16)
    assert params["sink_embedding"].shape == (1, 16)
    logits, state = _apply(model, {"params": params}, _tokens(), mutable=["intermediates"])
    assert logits.shape == (2, LENGTH, VOCAB)  # register and sink outputs are discarded
    hidden = state["intermediates"]["hidden_states"]
    assert len(hidden) == 2 and hidden[0].shape == (2, 3 + LENGTH, 16)


def test_tokens_attend_to_the_registers_which_attend_only_to_each_other(with_prefix):
    model, params = with_prefix
    _, state = _apply(model, {"params": params}, _tokens(), mutable=["intermediates"])
    for layer in range(2):
        (weights,) = state["intermediates"][f"block_{layer}"]["attn"]["attention_weights"]
        weights = np.asarray(weights)  # B H (P+L) (P+L)
        assert weights.shape == (2, 2, 3 + LENGTH, 3 + LENGTH)
        assert (weights[:, :, 3:, :3].sum(-1) > 0).all(), "a token ignores the registers"
        assert (weights[:, :, :3, 3:] == 0).all(), "a register sees the input"
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_prefix_states_do_not_depend_on_the_input(with_prefix):
    model, params = with_prefix
    _, a = _apply(model, {"params": params}, _tokens(seed=1), mutable=["intermediates"])
    _, b = _apply(model, {"params": params}, _tokens(seed=2), mutable=["intermediates"])
    ha_all, hb_all = a["intermediates"]["hidden_states"], b["intermediates"]["hidden_states"]
    pairs = zip(ha_all, hb_all, strict=True)
    for ha, hb in pairs:
        np.testing.assert_array_equal(ha[:, :3], hb[:, :3])
        assert not np.array_equal(ha[:, 3:], hb[:, 3:])


def test_causality_holds_for_real_tokens_with_registers_and_sink():
    """Output t's gradient w.r.t. input j is zero for j > t and nonzero for j <= t."""
    model, params = _build(num_registers=2, sink_token=True, tie_embeddings=False)
    tokens = jnp.arange(LENGTH)[None] % VOCAB

    def outputs(emb):
        logits = model.apply({"params": {**params, "embedding": emb}}, tokens)
        return jnp.sum(logits[0] ** 2, axis=-1)

    jac = np.abs(np.asarray(jax.jit(jax.jacrev(outputs))(params["embedding"]))).sum(-1)
    sensitivity = jac[:, :LENGTH]  # tokens 0..7 use embedding rows 0..7
    assert (np.triu(sensitivity, k=1) == 0).all(), "an output position sees the future"
    assert (sensitivity[np.tril_indices(LENGTH)] > 0).all(), "an output ignores its past"


def test_tokens_keep_positions_0_to_l_and_the_prefix_gets_no_position_embedding():
    """Learned positions: every row of the (max_len, D) table reaches the token outputs
    (tokens sit at 0..L-1, not shifted by the prefix), and none reaches the prefix."""
    model, params = _build(num_registers=2, sink_token=True)  # learned positions, P = 3
    tokens = _tokens()

    def outputs(pos):
        logits, state = model.apply(
            {"params": {**params, "pos_embedding": pos}}, tokens, mutable=["intermediates"]
        )
        prefix = sum(jnp.sum(h[:, :3] ** 2) for h in state["intermediates"]["hidden_states"])
        return jnp.sum(logits**2), prefix

    pos = params["pos_embedding"]
    assert pos.shape == (LENGTH, 16)
    token_grad, prefix_grad = (
        jax.jit(jax.grad(lambda p, i=i: outputs(p)[i]))(pos) for i in range(2)
    )
    assert (np.abs(np.asarray(token_grad)).sum(-1) > 0).all(), "a token position is unused"
    assert (np.asarray(prefix_grad) == 0).all(), "the prefix got a position embedding"


def test_packed_segments_still_see_the_registers_but_not_each_other(with_prefix):
    model, params = with_prefix
    segments = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 2]])
    tokens = _tokens(batch=1)
    _, state = jax.jit(
        lambda p: model.apply({"params": p}, tokens, segments_BL=segments, mutable="intermediates")
    )(params)
    (weights,) = state["intermediates"]["block_0"]["attn"]["attention_weights"]
    weights = np.asarray(weights)[0]  # H (P+L) (P+L)
    assert (weights[:, 3 + 3 :, 3 : 3 + 3] == 0).all(), "segment 2 sees segment 1"
    assert (weights[:, 3:, :3].sum(-1) > 0).all(), "a packed token ignores the registers"


def test_the_fused_attention_path_computes_the_same_prefix_model(with_prefix):
    model, params = with_prefix
    fused = Decoder(dataclasses.replace(model.config, attention="xla"))
    tokens, segments = _tokens(), jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 2]] * 2)
    for kwargs in ({}, {"segments_BL": segments}):
        want = jax.jit(lambda p, kw=kwargs: model.apply({"params": p}, tokens, **kw))(params)
        got = jax.jit(lambda p, kw=kwargs: fused.apply({"params": p}, tokens, **kw))(params)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


# -- KV cache: the prefix is computed once and reused --------------------------------------


def test_cached_decoding_with_prefix_equals_full_recomputation(with_prefix):
    model, params = with_prefix  # RoPE: the prefix's positions -3..-1 enter the scores
    tokens = _tokens()
    full = np.asarray(_apply(model, {"params": params}, tokens))
    cache = broadcast_cache(jax.jit(lambda p: prefix_cache(model, p))(params), 2)
    assert int(cache["index"]) == 0  # the prefix fills slots, not token positions
    variables = {"params": params, "cache": cache}
    logits, state = _apply(model, variables, tokens[:, :5], decode=True, mutable=["cache"])
    steps = [np.asarray(logits)]
    for t in range(5, LENGTH):
        variables = {"params": params, "cache": state["cache"]}
        step = tokens[:, t : t + 1]
        logits, state = _apply(model, variables, step, decode=True, mutable=["cache"])
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5)


def test_prefix_cache_holds_the_registers_keys_and_a_fresh_cache_does_not(with_prefix):
    model, params = with_prefix
    cache = jax.jit(lambda p: prefix_cache(model, p))(params)
    keys = np.asarray(cache["block_0"]["attn"]["k"])  # 1 H (P+max_len) K
    assert keys.shape[2] == 3 + LENGTH
    assert (np.abs(keys[:, :, :3]).sum(-1) > 0).all() and (keys[:, :, 3:] == 0).all()


@pytest.mark.slow  # a Generator compiles its own step; the prefix reuse is tested above
def test_generator_with_prefix_matches_uncached_generation():
    model, params = _build(num_registers=2, sink_token=True)  # learned positions
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


# -- pause tokens: data, loss, generation ------------------------------------------------

PAUSE = 99


def test_pause_windows_keep_the_text_in_order_and_weigh_out_exactly_the_pauses():
    window = np.arange(1, 66, dtype=np.int32)  # 65 distinct tokens, none is PAUSE
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(400):
        row = transforms.pause_pretrain_window(window, 7, PAUSE, rng)
        tokens, weights = row["tokens"], row["weights"]
        assert tokens.shape == (65,) and weights.shape == (64,)
        is_pause = tokens == PAUSE
        kept = tokens[~is_pause]
        np.testing.assert_array_equal(kept, window[: len(kept)])  # trimmed, order kept
        np.testing.assert_array_equal(weights, (~is_pause[1:]).astype(np.float32))
        counts.append(is_pause.sum())
    # 7 pauses among 72 slots, 65 kept: 7 * 65 / 72 = 6.32 survive the trim on average
    assert max(counts) <= 7 and abs(np.mean(counts) - 7 * 65 / 72) < 0.15


def test_a_filler_token_is_weighed_out_only_where_it_was_inserted():
    window = np.asarray([5, 3, 5, 5, 3, 5, 5, 5, 3], np.int32)  # 3 stands for '.'
    row = transforms.pause_pretrain_window(window, 4, 3, np.random.default_rng(1))
    marked, _ = transforms.insert_pauses(window, 4, -1, np.random.default_rng(1))
    inserted = marked < 0
    assert inserted.any() and ((row["tokens"] == 3) & ~inserted).any()  # both kinds present
    np.testing.assert_array_equal(row["weights"] == 0, inserted[1:])


def test_pause_answer_rows_weigh_only_the_answer_and_its_eos():
    row = transforms.pause_answer_row(
        np.asarray([7, 8, 9]), np.asarray([4, 5]), 2, PAUSE, eos_id=1, length=10
    )
    np.testing.assert_array_equal(row["tokens"], [7, 8, 9, PAUSE, PAUSE, 4, 5, 1, 0, 0])
    #                 predicting:   8  9  P  P  4  5  1  0  0
    np.testing.assert_array_equal(row["weights"], [0, 0, 0, 0, 1, 1, 1, 0, 0])
    assert transforms.pause_answer_row(np.arange(5), np.arange(4), 2, PAUSE, 1, 10) is None


@pytest.fixture(scope="module")
def pause_task():
    """A tiny byte-level LM with pause-pretraining (20% pauses) and 2 inference pauses."""
    overrides = {
        "data.tokenizer.kind": "byte",
        "data.pause_pretrain": "True",
        "data.pause_fraction": "0.2",
        "data.pause_inference": "2",
    }
    return LMTask(load_config(TINY, overrides))


def test_the_loss_ignores_exactly_the_positions_whose_target_is_a_pause(pause_task):
    batch = next(pause_task.train_iterator())
    targets = batch["tokens"][:, 1:]
    is_pause = targets == pause_task.pause_id
    assert is_pause.any() and (batch["weights"] == ~is_pause).all()
    params = nn.meta.unbox(jax.jit(pause_task.init)(jax.random.PRNGKey(0))["params"])
    loss_fn = jax.jit(functools.partial(pause_task.loss, train=False))
    loss, (metrics, _) = loss_fn(params, {}, batch, jax.random.PRNGKey(1))
    logits = _apply(pause_task.model, {"params": params}, batch["tokens"][:, :-1])
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    per_token = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(float(loss), per_token[~is_pause].mean(), rtol=1e-5)
    assert float(metrics["weight"]) == (~is_pause).sum()


def test_evaluation_windows_stay_plain_text(pause_task):
    batches = pause_task.eval_batches()
    assert set(batches) == {"tokens"} and not (batches["tokens"] == pause_task.pause_id).any()


def test_the_task_generator_appends_pauses_and_bans_the_pause_id(pause_task):
    params = {}  # the generator is only built here, never run
    greedy = SamplingConfig(temperature=0.0)
    tokens = pause_task.generator(params, greedy).token_generator
    assert tokens.append_ids.tolist() == [pause_task.pause_id] * 2
    assert pause_task.pause_id in tokens.banned_ids
    for m_inf in (0, 5):  # another M_inf than the config's, e.g. M_inf != M_ft
        tokens = pause_task.generator(params, greedy, pauses=m_inf).token_generator
        assert tokens.append_ids.tolist() == [pause_task.pause_id] * m_inf


def _pause_loving_model():
    """A model whose largest logit is always id VOCAB - 1 (the 'pause'), by construction."""
    model, params = _build()
    emb = params["embedding"].at[VOCAB - 1].mul(10.0)
    norm = {"scale": jnp.zeros(16), "bias": emb[VOCAB - 1]}  # every output = the pause row
    return model, {**params, "embedding": emb, "final_norm": norm}


def test_generation_never_emits_a_pause_and_starts_after_the_appended_pauses():
    model, params = _pause_loving_model()
    pause, prompt = VOCAB - 1, np.asarray([[1, 2, 3]])
    greedy = SamplingConfig(temperature=0.0)
    unbanned = Generator(model, params, greedy, append_ids=[pause] * 2).generate(prompt, 4)
    assert (unbanned == pause).all()  # the pause is the model's first choice everywhere
    banned = Generator(model, params, greedy, banned_ids=[pause], append_ids=[pause] * 2)
    out = banned.generate(prompt, 4)
    assert out.shape == (1, 4) and not (out == pause).any()
    with_pauses = np.concatenate([prompt, [[pause, pause]]], axis=1)  # the same as appending
    expected = generate_uncached(model, params, with_pauses, 4, greedy, banned_ids=[pause])
    np.testing.assert_array_equal(out, expected)


def test_pauses_with_a_char_tokenizer_are_refused_with_a_clear_error(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("keep me")
    pauses = "--config.data.pause_pretrain=True"
    args = ["train", f"--config={TINY}", f"--workdir={workdir}", pauses]
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "char tokenizer has none" in err[0] and "data.pause_filler" in err[0]
    assert [p.name for p in workdir.iterdir()] == ["notes.txt"]
    assert (workdir / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.pause_finetune": "2"}, "set data.answer_separator"),
        ({"data.pause_pretrain": "True", "data.answer_separator": "="}, "unset one of the two"),
        ({"data.pause_fraction": "0"}, "data.pause_fraction must be in (0, 1]"),
        ({"data.pause_inference": "-1"}, "must be >= 0"),
    ],
)
def test_inconsistent_pause_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(TINY, overrides)


def test_a_filler_that_is_not_one_token_is_refused():
    with pytest.raises(ConfigError, match="data.pause_filler='ab' encodes to 2 tokens"):
        LMTask(load_config(TINY, {"data.pause_pretrain": "True", "data.pause_filler": "ab"}))
    task = LMTask(load_config(TINY, {"data.pause_pretrain": "True", "data.pause_filler": "."}))
    assert task.pause_id == int(task.tokenizer.encode(".")[0])


# -- probes -------------------------------------------------------------------------------


def test_probe_mass_on_registers_and_first_position(with_prefix):
    model, params = with_prefix
    probe = probes.collect(model, params, _tokens())
    assert probe.attention_LyBHQK.shape == (2, 2, 2, 3 + LENGTH, 3 + LENGTH)
    mass = probes.attention_mass(probe)
    assert mass["registers"].shape == (2, 2) and (mass["registers"] > 0).all()
    weights = probe.attention_LyBHQK[1, :, 0, 3:, :]  # layer 1, head 0: B L (P+L)
    np.testing.assert_allclose(mass["registers"][1, 0], weights[..., 1:3].sum(-1).mean(), 1e-6)
    np.testing.assert_allclose(mass["first"][1, 0], weights[..., 0].mean(), 1e-6)  # the sink
    np.testing.assert_allclose(mass["first_token"][1, 0], weights[..., 3].mean(), 1e-6)
    metrics = probes.probe_metrics(probe)
    assert metrics["attn_register_mass"] == pytest.approx(float(mass["registers"].mean()))
    assert len([k for k in metrics if k.startswith("attn_first_mass/L")]) == 4


def test_the_lm_task_probes_its_first_validation_batch(pause_task):
    params = nn.meta.unbox(jax.jit(pause_task.init)(jax.random.PRNGKey(0))["params"])
    probe = pause_task.probe(params)
    batch = pause_task.eval_batches()["tokens"][0]
    assert probe.hidden_LyBQD.shape == (2, *batch[:, :-1].shape, 32)
    assert (probe.attention_LyBHQK[:, :, :, 0, 0] == 1).all()  # token 0 sees only itself


def test_probe_without_a_prefix_puts_no_mass_on_registers():
    model, params = _build()
    mass = probes.attention_mass(probes.collect(model, params, _tokens()))
    assert (mass["registers"] == 0).all() and (mass["first"] > 0).all()
    np.testing.assert_array_equal(mass["first"], mass["first_token"])


def test_outlier_fraction_counts_states_above_k_times_the_median():
    hidden = np.zeros((1, 1, 1 + 4, 2), np.float32)  # one register, four tokens
    hidden[0, 0, :, 0] = [50.0, 1.0, 1.0, 1.0, 10.0]  # token norms 1, 1, 1, 10: median 1
    probe = probes.Probe(np.zeros((1, 1, 1, 5, 5)), hidden, num_prefix=1, num_registers=1)
    out = probes.outlier_fraction(probe, factor=3.0)
    assert out["tokens"].tolist() == [0.25] and out["registers"].tolist() == [50.0]
    assert probes.outlier_fraction(probe, factor=20.0)["tokens"].tolist() == [0.0]


@pytest.mark.slow  # generation (or matplotlib) costs seconds on a busy 2-core CPU
def test_probe_plots_are_png_files(with_prefix, tmp_path):
    model, params = with_prefix
    paths = probes.plot_probe(probes.collect(model, params, _tokens()), tmp_path / "p" / "s10")
    assert [p.name for p in paths] == ["s10_attention.png", "s10_norms.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


# -- exact resume with every feature on ------------------------------------------------------

ALL_FEATURES = {
    "data.tokenizer.kind": "byte",
    "model.num_registers": "2",
    "model.sink_token": "True",
    "data.pause_pretrain": "True",
    "train.progress": "false",
    "checkpoint.every": "20",
    "checkpoint.max_to_keep": "5",
}


@pytest.mark.slow
def test_resume_with_registers_sink_and_pauses_is_exact(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(load_config(TINY, ALL_FEATURES), whole)  # 40 steps, checkpoints at 20 and 40
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "checkpoints" / "40")  # as if killed after step 20's checkpoint
    train(load_config(TINY, ALL_FEATURES), resumed)

    def losses(workdir):
        return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}

    assert sorted(losses(whole)) == list(range(5, 41, 5))  # train.log_every=5
    assert losses(resumed) == losses(whole)  # bitwise: JSON floats round-trip exactly
    params = [jax.tree_util.tree_leaves(restore_run(w)[0].state.params) for w in (whole, resumed)]
    assert any(leaf.shape == (2, 32) for leaf in params[0])  # the registers were trained
    for a, b in zip(*params, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flops_per_token_count_the_prefix_positions():
    plain = dataclasses.replace(SMALL)
    with_registers = dataclasses.replace(SMALL, num_registers=4)
    extra = flops_per_token(with_registers, 8) - flops_per_token(plain, 8)
    per_layer = 4 * 16 * 16 + 2 * 16 * 64
    assert extra == pytest.approx(6 * 2 * per_layer * 4 / 8 + 12 * 2 * 4 * 16)


def _answer_files(tmp_path, train_lines, valid_lines=("5+5=10",)):
    (tmp_path / "train.txt").write_text("\n".join(train_lines) + "\n")
    (tmp_path / "valid.txt").write_text("\n".join(valid_lines) + "\n")
    return f"files:{tmp_path / 'train.txt'};validation={tmp_path / 'valid.txt'}"


def test_prompt_answer_lines_get_pauses_after_the_prompt_and_loss_on_the_answer(tmp_path):
    lines = ["12+34=46", "7+8=15", "50+50=100", "1+2=3"]
    spec = _answer_files(tmp_path, lines)
    overrides = {"data.tokenizer.kind": "byte", "data.dataset": spec}
    overrides |= {"data.answer_separator": "=", "data.pause_finetune": "3"}
    task = LMTask(load_config(TINY, overrides))
    batch = next(task.train_iterator())
    assert batch["tokens"].shape == (4, 17) and batch["weights"].shape == (4, 16)
    texts = sorted(task.tokenizer.decode(row) for row in batch["tokens"])
    expected = [line.replace("=", "=<pause><pause><pause>") + "</s>" for line in lines]
    assert texts == sorted(expected)
    for row, weights in zip(batch["tokens"], batch["weights"], strict=True):
        answer_start = int(np.flatnonzero(row == task.pause_id)[-1]) + 1
        answer_end = int(np.flatnonzero(row == task.tokenizer.eos_id)[0])
        expected_weights = np.zeros(16)
        expected_weights[answer_start - 1 : answer_end] = 1  # predicting answer and EOS
        np.testing.assert_array_equal(weights, expected_weights)
    batches = task.eval_batches()  # validation: "5+5=10", repeated
    rows = batches["tokens"].shape[0] * batches["tokens"].shape[1]
    assert task.text_units(batches) == {"characters": 3 * rows, "bytes": 3 * rows}  # "10\n"
    too_long = _answer_files(tmp_path, ["123456789=12345678"])
    task = LMTask(load_config(TINY, {**overrides, "data.dataset": too_long}))
    with pytest.raises(DataError, match=r"needs 13 \+ 9 tokens, more than data.context \+ 1"):
        task.train_iterator()


def test_a_line_without_the_separator_is_refused_by_the_cli(tmp_path, capsys):
    spec = _answer_files(tmp_path, ["1+1=2", "no separator here"])
    workdir = tmp_path / "run"
    args = [
        "train",
        f"--config={TINY}",
        f"--workdir={workdir}",
        "--config.data.tokenizer.kind=byte",
    ]
    args += [f"--config.data.dataset={spec}", "--config.data.answer_separator=="]
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "no data.answer_separator '='" in err[0] and "'no separator here'" in err[0]


def test_answer_matches_needs_the_answer_then_eos():
    answer = np.asarray([5, 6])
    assert answer_matches(np.asarray([5, 6, 1, 9]), answer, eos_id=1)  # after EOS: ignored
    assert not answer_matches(np.asarray([5, 6, 7]), answer, eos_id=1)  # no EOS: too long
    assert not answer_matches(np.asarray([5, 1, 1]), answer, eos_id=1)  # too short
    assert not answer_matches(np.asarray([5, 6]), answer, eos_id=1)  # cut before the EOS
    assert answer_matches(np.asarray([1, 4]), np.asarray([], np.int32), eos_id=1)


@pytest.mark.slow  # generation (or matplotlib) costs seconds on a busy 2-core CPU
def test_exact_match_generates_after_the_pauses_and_scores_up_to_eos(tmp_path):
    """A model that always says EOS gets exactly the examples with an empty answer right."""
    spec = _answer_files(tmp_path, ["1+1=2"], valid_lines=["1+1=", "2+2=4", "3+3=", "4+4=8"])
    overrides = {"data.tokenizer.kind": "byte", "data.dataset": spec}
    overrides |= {"data.answer_separator": "=", "data.pause_inference": "2"}
    task = LMTask(load_config(TINY, overrides))
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0))["params"])
    eos = task.tokenizer.eos_id
    emb = params["embedding"].at[eos].mul(10.0)
    norm = {"scale": jnp.zeros(32), "bias": emb[eos]}  # every position predicts EOS
    params = {**params, "embedding": emb, "final_norm": norm}
    assert task.exact_match(params) == {"exact_match": 0.5, "examples": 4.0}
    assert task.exact_match(params, limit=1, pauses=0) == {"exact_match": 1.0, "examples": 1.0}


def test_pause_windows_are_the_same_on_one_host_and_split_over_two():
    tokens = np.arange(1, 300, dtype=np.int32)

    def transform(window, rng):
        return transforms.pause_pretrain_window(window, 3, PAUSE, rng)

    whole = pipeline.lm_windows(tokens, 17, 4, 5, transform=transform)[2]
    halves = [
        pipeline.lm_windows(tokens, 17, 4, 5, pipeline.Shard(i, 2), transform)[2] for i in (0, 1)
    ]
    for key in ("tokens", "weights"):
        np.testing.assert_array_equal(whole[key][0::2], halves[0][key])
        np.testing.assert_array_equal(whole[key][1::2], halves[1][key])
    assert (whole["tokens"] == PAUSE).any()
    again = pipeline.lm_windows(tokens, 17, 4, 5, transform=transform)[2]
    np.testing.assert_array_equal(again["tokens"], whole["tokens"])  # a function of (seed, i)


# -- nlpjax analyze ----------------------------------------------------------------------------


def _analyze(capsys, *args):
    code = cli.main(["analyze", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_analyze_refuses_a_bad_factor_and_a_missing_workdir(tmp_path, capsys):
    code, _, err = _analyze(capsys, f"--workdir={tmp_path}", "--factor=0")
    assert code == 2 and err.strip() == "error: --factor must be > 0, got 0.0"
    code, _, err = _analyze(capsys, f"--workdir={tmp_path / 'nothing'}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "nothing" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_analyze_prints_and_writes_the_probes_of_a_checkpoint(tmp_path, capsys):
    workdir = tmp_path / "run"
    train(load_config(TINY, {**ALL_FEATURES, "train.steps": "20"}), workdir)
    capsys.readouterr()
    code, out, err = _analyze(capsys, f"--workdir={workdir}", "--factor=2")
    assert code == 0, err
    assert "step 20, split validation: 2 registers, sink on" in out
    saved = json.loads((workdir / "probes" / "step_20_probes.json").read_text())
    params = restore_run(workdir)[0].state.params
    task = LMTask(load_config(TINY, ALL_FEATURES), workdir)
    expected = probes.probe_metrics(task.probe(nn.meta.unbox(params)), factor=2.0)
    assert saved == pytest.approx(expected)
    assert f"attn_register_mass {expected['attn_register_mass']:.4f}" in out
    for name in ("step_20_attention.png", "step_20_norms.png"):
        assert (workdir / "probes" / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # compiles the loss average and the probe
def test_eval_probes_add_the_probe_means_to_the_default_evaluation():
    plain = LMTask(load_config(TINY, {"model.num_registers": "2"}))
    assert not hasattr(plain, "evaluate")  # without eval.probes: the loop's default
    task = LMTask(load_config(TINY, {"model.num_registers": "2", "eval.probes": "True"}))
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0))["params"])
    key = jax.random.PRNGKey(1)
    got = task.evaluate(params, {"carry": {}, "step": 0}, key)
    batches = jax.tree_util.tree_map(jnp.asarray, task.eval_batches())
    default = task.eval_summary(make_loss_average(task)(params, batches, key))
    means = {k: v for k, v in probes.probe_metrics(task.probe(params)).items() if "/" not in k}
    assert got == default | means and got["attn_register_mass"] > 0
