"""Recurrent models: cells against NumPy and PyTorch, masks, bidirectional, carry, attention."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.errors import ConfigError
from nlpjax.models.rnn import (
    GATES,
    RNNLM,
    Lookup,
    RecurrentLayer,
    RNNClassifier,
    RNNConfig,
    RNNStack,
    RNNTagger,
    init_carry,
    pool,
    scan_cell,
    zero_carry,
)
from nlpjax.models.rnn_fused import fused_scan
from nlpjax.models.rnn_seq2seq import RNNSeq2Seq, search_cache, search_step

CELLS = ("lstm", "gru", "elman")
D_IN, D, B, L = 5, 4, 3, 6
LENGTHS = np.array([6, 2, 4])
MASK_BL = np.arange(L)[None, :] < LENGTHS[:, None]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(cell, p, carry, x):
    """One step of each cell written out from its textbook equations (float64)."""
    wi, b, wh = (np.asarray(p[k], np.float64) for k in ("input_kernel", "bias", "recurrent_kernel"))
    if cell == "lstm":
        c, h = carry
        z = x @ wi + b + h @ wh
        i, f, g, o = (z[:, k * D : (k + 1) * D] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return c, _sigmoid(o) * np.tanh(c)
    if cell == "gru":
        (h,) = carry
        bh = np.asarray(p["recurrent_bias"], np.float64)

        def block(w, k):
            return w[..., k * D : (k + 1) * D]

        r = _sigmoid(x @ block(wi, 0) + block(b, 0) + h @ block(wh, 0) + block(bh, 0))
        z = _sigmoid(x @ block(wi, 1) + block(b, 1) + h @ block(wh, 1) + block(bh, 1))
        n = np.tanh(x @ block(wi, 2) + block(b, 2) + r * (h @ block(wh, 2) + block(bh, 2)))
        return ((1 - z) * n + z * h,)
    (h,) = carry
    return (np.tanh(x @ wi + b + h @ wh),)


def numpy_run(cell, p, xs_LBD, carry):
    """The NumPy steps over a whole (unpadded) sequence: (final carry, outputs h_LBD)."""
    carry, outs = tuple(np.asarray(c, np.float64) for c in carry), []
    for x_BD in np.asarray(xs_LBD, np.float64):
        carry = numpy_step(cell, p, carry, x_BD)
        outs.append(carry[-1])
    return carry, np.stack(outs)


def _layer(cell, reverse=False, seed=0):
    """A jitted RecurrentLayer and random (not initial) parameters, so every bias matters."""
    layer = RecurrentLayer(cell, D, reverse=reverse)
    x = jnp.zeros((L, B, D_IN))
    shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(seed), x, zero_carry(cell, B, D))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda a: (0.5 * rng.standard_normal(a.shape)).astype(np.float32), nn.meta.unbox(shapes)
    )
    return jax.jit(layer.apply), params


def _inputs(seed=1, length=L):
    return jax.random.normal(jax.random.PRNGKey(seed), (length, B, D_IN))


def _random_carry(cell, seed=2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    carry = zero_carry(cell, B, D)
    return tuple(
        0.5 * jax.random.normal(k, c.shape) for k, c in zip(keys[: len(carry)], carry, strict=True)
    )


@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_numpy_equations_one_step_and_a_sequence(cell):
    apply, params = _layer(cell)
    x_LBD, carry0 = _inputs(), _random_carry(cell)
    carry, h_LBD = apply(params, x_LBD, carry0)
    one = numpy_step(cell, params["params"], [np.asarray(c) for c in carry0], np.asarray(x_LBD[0]))
    np.testing.assert_allclose(h_LBD[0], one[-1], rtol=1e-5, atol=1e-5)  # one step
    want_carry, want_h = numpy_run(cell, params["params"], x_LBD, carry0)
    np.testing.assert_allclose(h_LBD, want_h, rtol=1e-5, atol=1e-5)
    for got, want in zip(carry, want_carry, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lstm_forget_bias_starts_at_one_and_params_carry_logical_axes():
    layer = RecurrentLayer("lstm", D)
    boxed = jax.jit(layer.init)(jax.random.PRNGKey(0), _inputs(), zero_carry("lstm", B, D))
    boxed = boxed["params"]
    bias = np.asarray(nn.meta.unbox(boxed)["bias"])
    np.testing.assert_array_equal(bias, np.r_[np.zeros(D), np.ones(D), np.zeros(2 * D)])
    assert boxed["input_kernel"].names == ("embed", "mlp")
    assert boxed["recurrent_kernel"].names == (None, "mlp")


def test_first_layer_gate_inputs_start_at_unit_variance():
    """Embedding N(0, 1) through the LeCun-normal input kernel: the gate pre-activations
    x W_i start with a variance of about 1 (N(0, 0.1) gave 0.01, and a char LSTM lagged
    PyTorch by 0.16 nats after 2000 steps)."""
    cfg = RNNConfig(vocab_size=65, num_layers=1, d_hidden=256)
    tokens = jnp.arange(65, dtype=jnp.int32)[None, :]
    params = jax.jit(RNNLM(cfg).init)(jax.random.PRNGKey(0), tokens)
    params = nn.meta.unbox(params)["params"]["encoder"]
    x_VD = np.asarray(params["embedding"])
    gx_VG = x_VD @ np.asarray(params["stack"]["layer_0"]["input_kernel"])
    assert 0.9 < x_VD.std() < 1.1
    assert 0.8 < gx_VG.var() < 1.25


def _scan_bodies(jaxpr):
    """The bodies of every scan in a jaxpr, looking inside nested calls (custom_vjp, jit)."""
    bodies = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            bodies.append(eqn.params["jaxpr"].jaxpr)
            continue
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                bodies += _scan_bodies(inner)
    return bodies


def _dots(jaxpr):
    return [e.primitive.name for e in jaxpr.eqns].count("dot_general")


def _dot_lhs_shapes(jaxpr):
    """The left operand's shape of every matmul in a jaxpr, nested calls and scans included."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(eqn.invars[0].aval.shape))
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                shapes += _dot_lhs_shapes(inner)
    return shapes


def test_a_small_vocabulary_projects_the_embedding_table_instead_of_its_rows():
    """A ``Lookup`` input with V < L*B: the first layer multiplies the (V, E) table, not the
    (L*B, E) gathered rows, and outputs, final carry and gradients (parameters and table)
    equal those of the gathered rows. Bidirectional with a mask: both directions of the
    first layer take the lookup (the unidirectional LM path: the next test)."""
    V = 5  # < L * B = 18
    cfg = RNNConfig(cell="lstm", num_layers=1, d_hidden=D, bidirectional=True)
    stack, carry, mask_LB = RNNStack(cfg), init_carry(cfg, B), jnp.asarray(MASK_BL.T)
    rng = np.random.default_rng(5)
    table_VE = rng.normal(size=(V, D_IN)).astype(np.float32)
    tokens_LB = jnp.asarray(rng.integers(0, V, (L, B)), jnp.int32)
    shapes = jax.eval_shape(stack.init, jax.random.PRNGKey(0), jnp.zeros((L, B, D_IN)), carry)
    params = jax.tree.map(
        lambda a: (0.5 * rng.standard_normal(a.shape)).astype(np.float32), nn.meta.unbox(shapes)
    )["params"]
    w_LBD = rng.normal(size=(L, B, cfg.output_dim))

    def loss(as_input):
        def f(p, table):
            final, h_LBD = stack.apply({"params": p}, as_input(table), carry, mask_LB)
            return jnp.sum(h_LBD * w_LBD) + sum(jnp.sum(x**2) for x in jax.tree.leaves(final))

        return f

    lookup = loss(lambda t: Lookup(t, tokens_LB))
    rows = loss(lambda t: jnp.take(t, tokens_LB, axis=0))
    got = jax.jit(jax.value_and_grad(lookup, argnums=(0, 1)))(params, table_VE)
    want = jax.jit(jax.value_and_grad(rows, argnums=(0, 1)))(params, table_VE)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
    assert np.abs(np.asarray(got[1][1])).sum() > 0  # the table gets a gradient
    dots = _dot_lhs_shapes(jax.make_jaxpr(lookup)(params, table_VE).jaxpr)
    assert (V, D_IN) in dots and (L * B, D_IN) not in dots
    assert (L * B, D_IN) in _dot_lhs_shapes(jax.make_jaxpr(rows)(params, table_VE).jaxpr)


def test_lm_projects_its_table_unless_embedding_dropout_is_on():
    tokens = jnp.zeros((B, 5), jnp.int32)  # L * B = 15 rows of width 6, vocabulary 7
    for dropout, train, table_projected in ((0.0, True, True), (0.5, False, True),
                                            (0.5, True, False)):  # fmt: skip
        cfg = RNNConfig(vocab_size=7, num_layers=1, d_embed=6, d_hidden=D, dropout=dropout)
        model = RNNLM(cfg)
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)
        run = functools.partial(model.apply, train=train, rngs={"dropout": jax.random.PRNGKey(1)})
        dots = _dot_lhs_shapes(jax.make_jaxpr(run)(params, tokens).jaxpr)
        assert ((7, 6) in dots) == table_projected and ((15, 6) in dots) != table_projected


@pytest.mark.parametrize("cell", CELLS)
def test_only_the_recurrent_matmul_runs_inside_the_forward_and_backward_scans(cell):
    _, params = _layer(cell)
    layer, x_LBD, carry = RecurrentLayer(cell, D), _inputs(), zero_carry(cell, B, D)
    forward = jax.make_jaxpr(lambda p: layer.apply(p, x_LBD, carry))(params).jaxpr
    assert _dots(forward) == 1  # the input projection of all steps, outside the scan
    assert [_dots(body) for body in _scan_bodies(forward)] == [1]
    grad = jax.make_jaxpr(jax.grad(lambda p: layer.apply(p, x_LBD, carry)[1].sum()))(params)
    # backward: dW_h is one matmul after the scan; the scan keeps only dG_t W_h^T
    assert [_dots(body) for body in _scan_bodies(grad.jaxpr)] == [1, 1]


@pytest.mark.parametrize("cell", CELLS)
def test_hand_written_backward_equals_autodiff_of_the_reference_scan(cell):
    rng = np.random.default_rng(8)
    G = GATES[cell] * D
    params = {"recurrent_kernel": rng.normal(size=(D, G)).astype(np.float32) * 0.5}
    if cell == "gru":
        params["recurrent_bias"] = rng.normal(size=(G,)).astype(np.float32)
    carry = tuple(rng.normal(size=(B, D)).astype(np.float32) for _ in zero_carry(cell, B, D))
    gx_LBG = rng.normal(size=(L, B, G)).astype(np.float32)
    w_LBD, w_BD = rng.normal(size=(L, B, D)), rng.normal(size=(B, D))

    def loss(scan, mask, reverse):
        def f(p, c, gx):
            final, h_LBD = scan(p, c, gx, mask, reverse)
            return jnp.sum(h_LBD * w_LBD) + sum(jnp.sum(x * w_BD) for x in final)

        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))

    def fused(p, c, gx, mask, reverse):
        return fused_scan(cell, reverse, 1, p, c, gx, mask)

    def reference(p, c, gx, mask, reverse):
        return scan_cell(cell, p, c, gx, mask, reverse)

    for mask, reverse in ((None, False), (MASK_BL.T, True)):
        want = loss(reference, mask, reverse)(params, carry, gx_LBG)
        got = loss(fused, mask, reverse)(params, carry, gx_LBG)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


@pytest.mark.slow  # importing torch alone takes seconds
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_layer_stack_equals_pytorch_with_copied_weights(cell):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D_IN, D, num_layers=2)
    cfg = RNNConfig(cell=cell, num_layers=2, d_hidden=D)
    params = {}
    for k in range(2):

        def w(name, k=k):
            return getattr(ref, f"{name}_l{k}").detach().numpy()

        layer = {"input_kernel": w("weight_ih").T, "recurrent_kernel": w("weight_hh").T}
        if cell == "lstm":
            layer["bias"] = w("bias_ih") + w("bias_hh")
        else:
            layer["bias"], layer["recurrent_bias"] = w("bias_ih"), w("bias_hh")
        params[f"layer_{k}"] = layer
    x_LBD = np.array(_inputs())
    carry, h_LBD = RNNStack(cfg).apply({"params": params}, jnp.asarray(x_LBD), init_carry(cfg, B))
    with torch.no_grad():
        want, state = ref(torch.from_numpy(x_LBD))
    np.testing.assert_allclose(h_LBD, want.numpy(), rtol=1e-5, atol=1e-5)
    h_n = state[0] if cell == "lstm" else state
    np.testing.assert_allclose(np.stack([c[-1] for c in carry]), h_n.numpy(), atol=1e-5)
    if cell == "lstm":
        np.testing.assert_allclose(np.stack([c[0] for c in carry]), state[1].numpy(), atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_mask_freezes_the_state_past_each_sequence_end(cell):
    apply, params = _layer(cell)
    x_LBD = _inputs()
    carry, h_LBD = apply(params, x_LBD, zero_carry(cell, B, D), jnp.asarray(MASK_BL.T))
    for b, n in enumerate(LENGTHS):  # each sequence alone, unpadded, in NumPy
        alone, h_alone = numpy_run(
            cell, params["params"], x_LBD[:n, b : b + 1], (np.zeros((1, D)),) * len(carry)
        )
        for got, want in zip(carry, alone, strict=True):
            np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h_LBD[:n, b], h_alone[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(h_LBD[n:, b], 0.0)


@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_equals_two_layers_forward_and_on_the_reversed_input(cell):
    cfg = RNNConfig(cell=cell, num_layers=1, d_hidden=D, bidirectional=True)
    stack = RNNStack(cfg)
    x_LBD, mask_LB = _inputs(), jnp.asarray(MASK_BL.T)
    params = jax.jit(stack.init)(jax.random.PRNGKey(0), x_LBD, init_carry(cfg, B))
    carry, h_LBD = jax.jit(stack.apply)(params, x_LBD, init_carry(cfg, B), mask_LB)
    p = nn.meta.unbox(params)["params"]["layer_0"]
    assert not np.allclose(
        p["forward"]["recurrent_kernel"], p["backward"]["recurrent_kernel"]
    )  # separate parameters
    zeros = (np.zeros((1, D)),) * len(carry[0][0])
    for b, n in enumerate(LENGTHS):  # forward, and each sequence's own tokens reversed
        x_L1D = x_LBD[:n, b : b + 1]
        fwd_carry, h_fwd = numpy_run(cell, p["forward"], x_L1D, zeros)
        back_carry, h_back = numpy_run(cell, p["backward"], x_L1D[::-1], zeros)
        np.testing.assert_allclose(h_LBD[:n, b, :D], h_fwd[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h_LBD[:n, b, D:], h_back[::-1, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carry[0][0][-1][b], fwd_carry[-1][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carry[0][1][-1][b], back_carry[-1][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(h_LBD[n:, b], 0.0)


@pytest.mark.parametrize(
    "cell", ["lstm"] + [pytest.param(c, marks=pytest.mark.slow) for c in ("gru", "elman")]
)  # the rnn_lm task's test covers the carry through real streams
def test_lm_carry_continues_a_sequence_split_in_two(cell):
    cfg = RNNConfig(vocab_size=7, cell=cell, num_layers=2, d_hidden=D, d_embed=3)
    model = RNNLM(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, 8), 0, 7)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
    apply = jax.jit(model.apply)
    whole, carry_whole = apply(params, tokens)
    first, carry = apply(params, tokens[:, :4])
    second, carry_two = apply(params, tokens[:, 4:], carry)
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), carry_two, carry_whole)
    fresh, _ = apply(params, tokens[:, 4:])  # and the carry matters
    assert not np.allclose(fresh, second, atol=1e-4)


def test_pooling_reads_only_unmasked_positions():
    h_LBD = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (L, B, D)))
    final_BD = h_LBD[0]
    valid = MASK_BL.T[:, :, None]
    np.testing.assert_array_equal(pool("final", h_LBD, final_BD, MASK_BL), final_BD)
    want_max = np.stack([h_LBD[:n, b].max(0) for b, n in enumerate(LENGTHS)])
    want_mean = np.stack([h_LBD[:n, b].mean(0) for b, n in enumerate(LENGTHS)])
    np.testing.assert_allclose(pool("max", h_LBD, final_BD, MASK_BL), want_max)
    np.testing.assert_allclose(pool("mean", h_LBD, final_BD, MASK_BL), want_mean, rtol=1e-6)
    spiked = np.where(valid, h_LBD, 100.0)  # huge values under the padding are ignored
    np.testing.assert_allclose(pool("max", spiked, final_BD, MASK_BL), want_max)


def test_classifier_final_state_ignores_padding():
    cfg = RNNConfig(
        vocab_size=9, cell="gru", num_layers=2, d_hidden=D, bidirectional=True, num_classes=3
    )
    model = RNNClassifier(cfg)
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(4), (B, L), 1, 9))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, MASK_BL)
    apply = jax.jit(model.apply)
    logits = apply(params, tokens, MASK_BL)
    assert logits.shape == (B, 3)
    other = np.where(MASK_BL, tokens, 8 - tokens)  # different tokens under the padding
    np.testing.assert_allclose(apply(params, other, MASK_BL), logits, atol=1e-6)
    assert not np.allclose(apply(params, other, np.ones_like(MASK_BL)), logits, atol=1e-4)


def test_bidirectional_tagger_tags_real_tokens_whatever_the_padding():
    cfg = RNNConfig(
        vocab_size=9, cell="lstm", num_layers=1, d_hidden=D, bidirectional=True, num_classes=5
    )
    model = RNNTagger(cfg)
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(4), (B, L), 1, 9))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, MASK_BL)
    apply = jax.jit(model.apply)
    logits_BLY = np.asarray(apply(params, tokens, MASK_BL))
    assert logits_BLY.shape == (B, L, 5)
    other = np.asarray(apply(params, np.where(MASK_BL, tokens, 8 - tokens), MASK_BL))
    np.testing.assert_allclose(other[MASK_BL], logits_BLY[MASK_BL], atol=1e-6)


def test_tied_lm_has_no_output_layer_and_dropout_acts_only_in_training():
    tied = RNNConfig(vocab_size=7, num_layers=1, d_hidden=D, tie_embeddings=True)
    shapes = jax.eval_shape(RNNLM(tied).init, jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))
    assert set(shapes["params"]) == {"encoder"}  # the embedding doubles as the output layer
    model = RNNLM(RNNConfig(vocab_size=7, num_layers=2, d_hidden=D, dropout=0.5))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, 5), 0, 7)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)

    @functools.partial(jax.jit, static_argnums=1)
    def run(key, train):
        return model.apply(params, tokens, train=train, rngs={"dropout": key})[0]

    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    np.testing.assert_array_equal(run(keys[0], True), run(keys[0], True))
    assert not np.allclose(run(keys[0], True), run(keys[1], True))
    np.testing.assert_array_equal(run(keys[0], False), run(keys[1], False))


@pytest.fixture(scope="module", params=["dot", "additive", "dot+feeding"])
def seq2seq(request):
    attention, _, feeding = request.param.partition("+")
    cfg = RNNConfig(
        vocab_size=11, target_vocab_size=13, num_layers=2, d_hidden=D, bidirectional=True,
        attention=attention, input_feeding=bool(feeding),
    )  # fmt: skip
    model = RNNSeq2Seq(cfg)
    src = np.asarray(jax.random.randint(jax.random.PRNGKey(5), (B, L), 1, 11))
    tgt = np.asarray(jax.random.randint(jax.random.PRNGKey(6), (B, 4), 1, 13))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), src, tgt, MASK_BL)
    return model, jax.jit(model.apply, static_argnames="method"), params, src, tgt


def test_attention_weights_sum_to_one_and_respect_the_source_mask(seq2seq):
    _, apply, params, src, tgt = seq2seq
    logits, weights_BTS = apply(params, src, tgt, MASK_BL)
    assert logits.shape == (B, 4, 13) and weights_BTS.shape == (B, 4, L)
    np.testing.assert_allclose(weights_BTS.sum(-1), 1.0, atol=1e-5)
    valid_BTS = np.broadcast_to(MASK_BL[:, None], weights_BTS.shape)
    np.testing.assert_array_equal(np.asarray(weights_BTS)[~valid_BTS], 0.0)
    assert (np.asarray(weights_BTS)[valid_BTS] > 0).all()
    other = np.where(MASK_BL, src, 10 - src)  # padded source tokens change nothing
    np.testing.assert_allclose(apply(params, other, tgt, MASK_BL)[0], logits, atol=1e-6)


def test_step_by_step_decoding_equals_teacher_forcing(seq2seq):
    _, apply, params, src, tgt = seq2seq
    logits, weights = apply(params, src, tgt, MASK_BL)
    memory = apply(params, src, MASK_BL, method="encode")
    carry, steps, step_weights = None, [], []
    for t in range(tgt.shape[1]):
        out, carry, w = apply(params, memory, tgt[:, t : t + 1], carry, method="decode")
        steps.append(out)
        step_weights.append(w)
    np.testing.assert_allclose(np.concatenate(steps, 1), logits, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(step_weights, 1), weights, atol=1e-6)


@pytest.mark.parametrize("attention", ["dot", pytest.param("additive", marks=pytest.mark.slow)])
def test_input_feeding_with_a_zero_feed_kernel_is_the_decoder_without_feeding(attention):
    """The feeding decoder's parameters copied into the plain one: with the feed kernel at
    zero the two models agree at every step; with it, only the first step (whose fed
    state is zero) still agrees."""
    kw = {"vocab_size": 11, "target_vocab_size": 13, "num_layers": 2, "d_hidden": D}
    plain = RNNSeq2Seq(RNNConfig(**kw, bidirectional=True, attention=attention))
    feeding = RNNSeq2Seq(
        RNNConfig(**kw, bidirectional=True, attention=attention, input_feeding=True)
    )
    src = np.asarray(jax.random.randint(jax.random.PRNGKey(5), (B, L), 1, 11))
    tgt = np.asarray(jax.random.randint(jax.random.PRNGKey(6), (B, 4), 1, 13))
    fed = nn.meta.unbox(feeding.init(jax.random.PRNGKey(0), src, tgt, MASK_BL))["params"]
    fed = jax.tree.map(lambda x: x * 3.0, fed)  # sharper than the initialisation,
    dec = fed["decoder"]  # and attentional states far from 0 (combine init std 0.02)
    dec["combine_kernel"] = dec["combine_kernel"] * 10.0
    as_plain = {
        "encoder": fed["encoder"], "bridge": fed["bridge"], "head": fed["head"],
        "decoder": {
            "embedding": dec["embedding"],
            "stack": {"layer_0": dec["layer_0"], "layer_1": dec["layer_1"]},
        },
        "attention": {"key": dec["key"]},
        "combine": {"kernel": dec["combine_kernel"]},
    }  # fmt: skip
    if attention == "additive":
        as_plain["attention"].update(query={"kernel": dec["query_kernel"]}, v=dec["v"])
    want, want_w = plain.apply({"params": as_plain}, src, tgt, MASK_BL)
    got, got_w = feeding.apply({"params": fed}, src, tgt, MASK_BL)
    np.testing.assert_allclose(got[:, 0], want[:, 0], atol=1e-6)
    change = np.abs(np.asarray(got[:, 1:] - want[:, 1:])).max()
    assert change > 0.05 * np.abs(np.asarray(want)).max()  # the fed state acts
    zero_feed = {**fed, "decoder": {**dec, "feed_kernel": jnp.zeros_like(dec["feed_kernel"])}}
    got, got_w = feeding.apply({"params": zero_feed}, src, tgt, MASK_BL)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got_w, want_w, atol=1e-6)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"cell": "rnn"}, "model.cell must be one of"),
        ({"d_embed": 3, "tie_embeddings": True}, "model.tie_embeddings needs"),
        ({"pooling": "sum"}, "model.pooling"),
        ({"attention": "general"}, "model.attention"),
        ({"dropout": 1.0}, "model.dropout"),
    ],
)
def test_config_rejects_bad_values_with_the_key(fields, message):
    with pytest.raises(ConfigError, match=message):
        RNNConfig(**fields)


def test_signature_leaves_out_runtime_fields():
    cfg = RNNConfig(vocab_size=5)
    assert cfg.signature() == dataclasses.replace(cfg, unroll=4, dtype="float32").signature()
    assert "unroll" not in cfg.signature() and cfg.signature()["cell"] == "lstm"


def test_language_model_refuses_bidirectional():
    model = RNNLM(RNNConfig(vocab_size=5, bidirectional=True, d_hidden=D))
    with pytest.raises(ConfigError, match="bidirectional"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))


@pytest.mark.parametrize(
    "rules", ["default", pytest.param("mlp=fsdp+tensor", marks=pytest.mark.slow)]
)
def test_gradients_on_a_sharded_mesh_equal_the_one_device_gradients(rules):
    """The batch over data x fsdp on 8 simulated devices, the gate axis of every kernel
    over tensor (default rules) or over fsdp x tensor, as in the XLA scan-gradient bug
    the project guards against (README, "Writing a task")."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from nlpjax.training.parallel import RULES, parse_rules

    rules = RULES if rules == "default" else parse_rules("mlp=fsdp+tensor,embed=")

    cfg = RNNConfig(vocab_size=16, cell="lstm", num_layers=2, d_hidden=16, d_embed=16)
    model = RNNLM(cfg)
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(9), (8, 6), 0, 16))
    boxed = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"]
    params = nn.meta.unbox(boxed)

    def loss(p, t):
        logits, carry = model.apply({"params": p}, t)
        return jnp.mean(logits**2) + sum(jnp.sum(x**2) for x in jax.tree.leaves(carry))

    expected = jax.jit(jax.grad(loss))(params, tokens)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
        placed = jax.device_put(params, shardings)
        batch = jax.device_put(tokens, NamedSharding(mesh, P(("data", "fsdp"))))
        got = jax.jit(jax.grad(loss))(placed, batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, expected)


@pytest.mark.slow  # the beam search test (slow) drives search_step too
def test_search_step_follows_each_beam_row_like_teacher_forcing(seq2seq):
    """The cache repeats each source W times; every beam row then decodes like its source."""
    model, apply, params, src, tgt = seq2seq
    logits, _ = apply(params, src, tgt, MASK_BL)
    width = 2
    cache = search_cache(model, params, src, MASK_BL, width)
    assert jax.tree.leaves(cache)[0].shape[0] == B * width
    step = jax.jit(search_step(model, params))
    for t in range(tgt.shape[1]):
        out_N1V, cache = step(jnp.repeat(tgt[:, t : t + 1], width, axis=0), cache)
        want = np.repeat(np.asarray(logits[:, t : t + 1]), width, axis=0)
        np.testing.assert_allclose(out_N1V, want, atol=1e-5)


@pytest.mark.slow  # three while-loop searches per score: ~10 s of compilation here
def test_beam_search_of_width_one_equals_greedy_decoding(seq2seq):
    """The shared searches (inference/search.py) drive the RNN through search_step."""
    from nlpjax.inference.decode import SamplingConfig
    from nlpjax.inference.search import beam_search, sample_loop

    model, _, params, src, _ = seq2seq
    step = search_step(model, params)
    kw = {"start_id": 1, "eos_id": 2}
    greedy = sample_loop(
        step, search_cache(model, params, src, MASK_BL), B, 7,
        sampling=SamplingConfig(temperature=0.0), rng=jax.random.PRNGKey(0), **kw,
    )  # fmt: skip
    beams, _ = beam_search(step, search_cache(model, params, src, MASK_BL, 1), B, 1, 7, **kw)
    np.testing.assert_array_equal(beams[:, 0], greedy)
    wide, scores = beam_search(step, search_cache(model, params, src, MASK_BL, 3), B, 3, 7, **kw)
    assert wide.shape == (B, 3, 7) and np.all(np.diff(np.asarray(scores), axis=1) <= 0)
