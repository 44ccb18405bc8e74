"""Vanishing and exploding gradients in recurrent cells: ||dL_t/dh_k|| against t - k.

Bengio et al. 1994; Pascanu et al. 2013, https://arxiv.org/abs/1211.5063. A cell runs over
a sequence with a zero perturbation eps_k added to its hidden state after every step
(h_k + eps_k); L_t = u . h_t for a fixed unit readout u, so dL_t/d eps_k = dL_t/dh_k, and one
reverse-mode Jacobian gives the whole (t, k) table. For an Elman cell
||dL_t/dh_k|| <= ||W_h||_2^(t-k) (tanh' <= 1): a recurrent spectral norm below 1 makes the
gradient vanish geometrically. ``python -m nlpjax.analysis.rnn_diagnostics OUT_DIR`` plots
Elman, LSTM and GRU at their initialisation side by side (PNG + JSON).
"""

import argparse
import io
import json
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from etils import epath

from nlpjax.models.rnn import CELLS, GATES, RecurrentLayer, zero_carry

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GATE_NAMES = {
    "lstm": ("input", "forget", "cell", "output"),
    "gru": ("reset", "update", "candidate"),
    "elman": ("recurrent",),
}


def spectral_norms(cell: str, wh_DG: np.ndarray) -> dict[str, float]:
    """Largest singular value of the recurrent matrix, whole (``all``) and per gate block."""
    wh = np.asarray(wh_DG, np.float64)
    d = wh.shape[0]
    norms = {"all": float(np.linalg.norm(wh, 2))}
    for k, name in enumerate(GATE_NAMES[cell]):
        norms[name] = float(np.linalg.norm(wh[:, k * d : (k + 1) * d], 2))
    return norms


def gradient_norm_table(cell: str, params: Mapping, x_LBD: jax.Array, seed: int = 0) -> np.ndarray:
    """(L, L) table: entry [t, k] = batch mean of ||dL_t/dh_k|| (0 above the diagonal).

    Args:
      cell: ``lstm``, ``gru`` or ``elman``.
      params: one ``RecurrentLayer``'s parameters (``wi``, ``bias``, ``wh``, GRU ``bh``).
      x_LBD: time-major inputs.
      seed: picks the readout direction u.
    """
    L, B, _ = x_LBD.shape
    D = params["recurrent_kernel"].shape[0]
    gx_LBG = (
        jnp.einsum("lbi,ig->lbg", x_LBD, params["input_kernel"]) + params["bias"][None, None, :]
    )
    u_D = jax.random.normal(jax.random.PRNGKey(seed), (D,))
    u_D = u_D / jnp.linalg.norm(u_D)
    step = CELLS[cell]

    def losses(eps_LBD):
        def body(carry, inputs):
            gx_BG, eps_BD = inputs
            new = step(params, carry, gx_BG)
            h_BD = new[-1] + eps_BD
            return new[:-1] + (h_BD,), h_BD

        _, h_LBD = jax.lax.scan(body, zero_carry(cell, B, D), (gx_LBG, eps_LBD))
        return jnp.einsum("lbd,d->l", h_LBD, u_D)  # L_t summed over independent rows

    jac_LLBD = jax.jit(jax.jacrev(losses))(jnp.zeros((L, B, D)))
    return np.asarray(jnp.linalg.norm(jac_LLBD, axis=-1).mean(axis=-1))


def by_gap(table_LL: np.ndarray) -> np.ndarray:
    """Mean of table[t, t - g] over t, for each gap g = 0 .. L-1."""
    L = table_LL.shape[0]
    return np.array([np.mean(np.diagonal(table_LL, offset=-g)) for g in range(L)])


def init_layer_params(cell: str, d_in: int, d_hidden: int, seed: int = 0) -> dict:
    """A ``RecurrentLayer``'s parameters at their initialisation."""
    layer = RecurrentLayer(cell, d_hidden)
    x = jnp.zeros((1, 1, d_in))
    variables = jax.jit(layer.init)(jax.random.PRNGKey(seed), x, zero_carry(cell, 1, d_hidden))
    return nn.meta.unbox(variables)["params"]


def compare_cells(
    cells=tuple(GATES), d_hidden: int = 64, length: int = 40, batch: int = 16, seed: int = 0
) -> dict[str, dict]:
    """Gradient norm against gap and recurrent spectral norms of freshly initialised cells."""
    x_LBD = jax.random.normal(jax.random.PRNGKey(seed + 1), (length, batch, d_hidden))
    report = {}
    for cell in cells:
        params = init_layer_params(cell, d_hidden, d_hidden, seed)
        curve = by_gap(gradient_norm_table(cell, params, x_LBD, seed))
        report[cell] = {
            "grad_norm_by_gap": [float(v) for v in curve],
            "spectral_norm": spectral_norms(cell, params["recurrent_kernel"]),
        }
    return report


def plot_gradient_decay(report: Mapping[str, Mapping], output: epath.PathLike) -> epath.Path:
    """Log-scale plot of ||dL_t/dh_k|| against t - k per cell; the numbers go to a JSON
    file beside it (same name, ``.json``)."""
    output = epath.Path(output)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for cell, entry in report.items():
        curve = np.asarray(entry["grad_norm_by_gap"])
        label = f"{cell} (||W_h||_2 = {entry['spectral_norm']['all']:.2f})"
        ax.semilogy(np.arange(len(curve)), np.maximum(curve, 1e-30), "o-", ms=2, label=label)
    ax.set_xlabel("t - k (steps back)")
    ax.set_ylabel("mean ||dL_t / dh_k||")
    ax.set_title("gradient through time")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())
    output.with_suffix(".json").write_text(json.dumps(report, indent=1))
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="where gradient_decay.png and .json are written")
    parser.add_argument("--d_hidden", type=int, default=64)
    parser.add_argument("--length", type=int, default=40)
    args = parser.parse_args(argv)
    report = compare_cells(d_hidden=args.d_hidden, length=args.length)
    print(plot_gradient_decay(report, epath.Path(args.out_dir) / "gradient_decay.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
