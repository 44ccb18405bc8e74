"""Probes of the decoder's attention and hidden states: sinks, registers, outlier tokens.

Attention mass on the first position and on the registers, per layer and head (the
attention-sink effect, Xiao et al. 2023, https://arxiv.org/abs/2309.17453, and the
register effect, Darcet et al. 2023, https://arxiv.org/abs/2309.16588), and the fraction
of hidden states whose norm exceeds k times the median (the high-norm outlier tokens that
registers absorb). The weights come from the reference einsum attention, the one
implementation that materialises them: ``collect`` runs the model with it whatever
``model.attention`` says; the numbers are the same function of the parameters.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jaxtyping import Array, Float, Int

from nlpjax.models.decoder import Decoder

DEFAULT_OUTLIER_FACTOR = 3.0


@dataclasses.dataclass(frozen=True)
class Probe:
    """What one forward pass shows. P = prefix (sink + registers), L = tokens.

    Attributes:
      attention_LyBHQK: per layer, the (B, H, P+L, P+L) attention weights.
      hidden_LyBQD: per layer, the (B, P+L, D) residual stream after the block.
      num_prefix: P (the sink, if any, is position 0; the registers follow it).
      num_registers: how many of the P are registers.
    """

    attention_LyBHQK: np.ndarray
    hidden_LyBQD: np.ndarray
    num_prefix: int
    num_registers: int


def collect(model: Decoder, params, tokens_BL: Int[Array, "B L"]) -> Probe:
    """Runs ``model`` on ``tokens_BL`` with the reference attention and keeps what it sows."""
    reference = Decoder(dataclasses.replace(model.config, attention="reference"))

    def run(params, tokens):
        _, state = reference.apply({"params": params}, tokens, mutable=["intermediates"])
        inter = state["intermediates"]
        layers = range(model.config.num_layers)
        weights = [inter[f"block_{i}"]["attn"]["attention_weights"][0] for i in layers]
        return jnp.stack(weights), jnp.stack(inter["hidden_states"])

    weights, hidden = jax.jit(run)(params, jnp.asarray(tokens_BL))
    cfg = model.config
    return Probe(np.asarray(weights), np.asarray(hidden), cfg.num_prefix, cfg.num_registers)


def attention_mass(probe: Probe) -> dict[str, Float[np.ndarray, "Ly H"]]:
    """Mean attention that the tokens' queries put on key groups, per layer and head.

    ``first``: on position 0 of the sequence (the sink when there is one, else the first
    token); ``registers``: summed over the register positions (zeros without registers);
    ``first_token``: on the first real token. Averaged over batch and token queries.
    """
    P, R = probe.num_prefix, probe.num_registers
    queries = probe.attention_LyBHQK[:, :, :, P:, :]  # Ly B H L (P+L)
    mean = lambda x: x.mean(axis=(1, 3))  # noqa: E731  over batch and queries
    registers = queries[..., P - R : P].sum(-1)
    return {
        "first": mean(queries[..., 0]),
        "registers": mean(registers),
        "first_token": mean(queries[..., P]),
    }


def outlier_fraction(
    probe: Probe, factor: float = DEFAULT_OUTLIER_FACTOR
) -> dict[str, Float[np.ndarray, " Ly"]]:
    """Per layer: the fraction of token states whose norm exceeds ``factor`` x the median.

    ``tokens``: over the real tokens' states; ``registers``: the mean ratio of the
    registers' norms to the tokens' median (how much of the outlier role they took).
    """
    P, R = probe.num_prefix, probe.num_registers
    norms = np.linalg.norm(probe.hidden_LyBQD, axis=-1)  # Ly B (P+L)
    tokens = norms[:, :, P:].reshape(norms.shape[0], -1)
    median = np.median(tokens, axis=1)
    fraction = (tokens > factor * median[:, None]).mean(axis=1)
    regs = norms[:, :, P - R : P].reshape(norms.shape[0], -1)
    ratio = regs.mean(axis=1) / median if R else np.zeros_like(median)
    return {"tokens": fraction, "registers": ratio}


def probe_metrics(probe: Probe, factor: float = DEFAULT_OUTLIER_FACTOR) -> dict[str, float]:
    """A flat dict for the metric writers: means, and every layer/head value.

    Keys: ``attn_first_mass``, ``attn_register_mass``, ``outlier_fraction`` (means over
    layers and heads), ``attn_first_mass/L{l}H{h}``, ``attn_register_mass/L{l}H{h}``,
    ``outlier_fraction/L{l}``.
    """
    mass, outliers = attention_mass(probe), outlier_fraction(probe, factor)
    out = {
        "attn_first_mass": float(mass["first"].mean()),
        "attn_register_mass": float(mass["registers"].mean()),
        "outlier_fraction": float(outliers["tokens"].mean()),
    }
    for name, key in (("attn_first_mass", "first"), ("attn_register_mass", "registers")):
        for (layer, head), value in np.ndenumerate(mass[key]):
            out[f"{name}/L{layer}H{head}"] = float(value)
    for layer, value in enumerate(outliers["tokens"]):
        out[f"outlier_fraction/L{layer}"] = float(value)
    return out


def plot_probe(probe: Probe, output: epath.PathLike, example: int = 0) -> list[epath.Path]:
    """Writes ``OUTPUT_attention.png`` (every layer's head-mean attention map of one
    example, prefix included) and ``OUTPUT_norms.png`` (per-layer histograms of the
    hidden-state norms, registers marked). Returns the paths written.

    ``output`` is a path prefix, e.g. ``workdir/probes/step_1000``. Needs matplotlib.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlpjax.analysis.curves import save_png

    output = epath.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    layers, P = probe.attention_LyBHQK.shape[0], probe.num_prefix
    fig, axes = plt.subplots(1, layers, figsize=(3 * layers, 3.2), dpi=100, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        ax.imshow(probe.attention_LyBHQK[layer, example].mean(0), cmap="viridis", vmin=0)
        if P:
            ax.axvline(P - 0.5, color="w", lw=0.8)
            ax.axhline(P - 0.5, color="w", lw=0.8)
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("key")
    axes[0][0].set_ylabel("query")
    paths = [save_png(fig, f"{output}_attention.png")]
    norms = np.linalg.norm(probe.hidden_LyBQD, axis=-1)
    fig, axes = plt.subplots(1, layers, figsize=(3 * layers, 2.8), dpi=100, squeeze=False)
    for layer, ax in enumerate(axes[0]):
        ax.hist(norms[layer, :, P:].ravel(), bins=40, color="C0", label="tokens")
        for i, value in enumerate(norms[layer, :, :P].mean(0)):
            ax.axvline(value, color="C3", lw=1, label="sink/registers" if i == 0 else None)
        ax.set_title(f"layer {layer}: |h|")
    axes[0][0].legend(loc="upper right", fontsize=7)
    paths.append(save_png(fig, f"{output}_norms.png"))
    return paths
