"""Gradient-through-time diagnostics: the (t, k) table, decay with t - k, spectral norms."""

import json

import jax
import numpy as np
import pytest

from nlpjax.analysis import rnn_diagnostics as diag

D, L, B = 8, 12, 2


@pytest.fixture(scope="module")
def elman():
    """Elman parameters whose recurrent matrix has spectral norm exactly 0.5."""
    params = diag.init_layer_params("elman", D, D, seed=3)
    wh = np.asarray(params["recurrent_kernel"], np.float64)
    params["recurrent_kernel"] = (0.5 * wh / np.linalg.norm(wh, 2)).astype(np.float32)
    x_LBD = jax.random.normal(jax.random.PRNGKey(4), (L, B, D))
    return params, x_LBD, diag.gradient_norm_table("elman", params, x_LBD)


def test_elman_gradients_decay_with_distance_under_a_small_spectral_norm(elman):
    params, _, table = elman
    assert diag.spectral_norms("elman", params["recurrent_kernel"])["all"] == pytest.approx(
        0.5, rel=1e-5
    )
    curve = diag.by_gap(table)
    np.testing.assert_allclose(curve[0], 1.0, rtol=1e-5)  # dL_t/dh_t = u, a unit vector
    assert np.all(np.diff(curve) < 0)
    assert np.all(curve <= 0.5 ** np.arange(L) * (1 + 1e-4))  # ||W_h||^(t-k) bound
    assert curve[-1] < 1e-3


def test_table_is_causal_and_matches_the_hand_derived_one_step_gradient(elman):
    params, x_LBD, table = elman
    assert np.all(np.triu(table, 1) == 0)  # L_t does not depend on later states
    wi, b, wh = (
        np.asarray(params[k], np.float64) for k in ("input_kernel", "bias", "recurrent_kernel")
    )
    u = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (D,)), np.float64)
    u /= np.linalg.norm(u)
    h, norms = np.zeros((B, D)), []
    for x in np.asarray(x_LBD, np.float64)[:2]:
        h = np.tanh(x @ wi + b + h @ wh)
    # dL_1/dh_0 = W_h diag(1 - h_1^2) u for each row, with h_1 the state after step 1
    for row in range(B):
        norms.append(np.linalg.norm(wh @ ((1 - h[row] ** 2) * u)))
    np.testing.assert_allclose(table[1, 0], np.mean(norms), rtol=1e-4)


def test_spectral_norms_per_gate_block():
    blocks = [(k + 1) * np.eye(D) for k in range(4)]
    norms = diag.spectral_norms("lstm", np.concatenate(blocks, axis=1))
    assert norms == pytest.approx(
        {"all": np.sqrt(30.0), "input": 1.0, "forget": 2.0, "cell": 3.0, "output": 4.0}
    )


def test_plot_writes_the_figure_and_its_numbers(tmp_path):
    report = diag.compare_cells(("elman", "gru"), d_hidden=D, length=6, batch=B)
    assert set(report) == {"elman", "gru"}
    assert set(report["gru"]["spectral_norm"]) == {"all", "reset", "update", "candidate"}
    path = diag.plot_gradient_decay(report, tmp_path / "decay.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "decay.json").read_text()) == report
