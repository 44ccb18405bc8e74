"""Recurrent networks: LSTM, GRU and Elman cells, stacks, bidirectional layers and heads.

Hochreiter & Schmidhuber 1997 (LSTM, with the forget-gate bias of Gers et al. 2000 set to
1); Cho et al. 2014, https://arxiv.org/abs/1406.1078 (GRU, reset gate applied after the
recurrent projection as in cuDNN, PyTorch and Flax); Elman 1990 (tanh RNN); dropout on the
non-recurrent connections as Zaremba et al. 2014, https://arxiv.org/abs/1409.2329.

Layout: the input projection of every time step is one (L*B, D_in) x (D_in, G) matmul
outside the scan (for the first layer of a small vocabulary, the (V, E) x (E, G) projection
of the embedding table and a gather: ``Lookup``); ``lax.scan`` then runs only the recurrent
(B, D) x (D, G) matmul and the gate arithmetic per step. Between layers the activations
stay time-major (L, B, D).
Letters beyond ``nlpjax.types``: G gate width (4D LSTM, 3D GRU, D Elman), Y classes/tags.
Gate order is PyTorch's (LSTM i, f, g, o; GRU r, z, n), so weights copy across as blocks.

Masks: where ``mask_BL`` is False the state is frozen (not updated) and the output is 0,
so the final carry of a right-padded sequence is its state at its last token, and the
reversed pass of a bidirectional layer starts at each sequence's own last token.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from nlpjax.errors import ConfigError
from nlpjax.models.layers import Dense, param_with_axes
from nlpjax.models.model_config import ModelConfig
from nlpjax.models.rnn_fused import batch_layout, dot_f32, fused_scan
from nlpjax.precision import DTYPE_CHOICES, DTYPES, resolve_dtype
from nlpjax.types import Array, Bool, Float, Int

Carry = tuple  # per layer: (c_BD, h_BD) for LSTM, (h_BD,) for GRU and Elman
GATES = {"lstm": 4, "gru": 3, "elman": 1}
POOLINGS = ("final", "max", "mean")
EMBED_STD = 1.0  # token embedding init (see Encoder)
F32 = jnp.float32
SCORES = ("dot", "additive")  # attention scores, implemented in models/rnn_seq2seq.py


@dataclasses.dataclass(frozen=True)
class RNNConfig(ModelConfig):
    """Shape and options of a recurrent model. ``vocab_size=0`` means "from the tokenizer".

    ``num_classes`` is used by the classifier and tagger heads, ``pooling`` by the
    classifier, ``attention``, ``input_feeding`` and ``target_vocab_size`` by the
    encoder-decoder.
    """

    vocab_size: int = 0
    cell: str = "lstm"  # lstm | gru | elman
    num_layers: int = 2
    d_embed: int = 0  # 0 means d_hidden
    d_hidden: int = 256
    dropout: float = 0.0  # on embeddings, between layers and before the output layer
    bidirectional: bool = False  # not for language models
    tie_embeddings: bool = False  # LM output layer = embedding^T (needs d_embed == d_hidden)
    num_classes: int = 0  # classifier / tagger
    pooling: str = "final"  # final | max | mean (classifier)
    attention: str = "dot"  # dot (Luong) | additive (Bahdanau) (encoder-decoder)
    target_vocab_size: int = 0  # encoder-decoder; 0 means vocab_size (a shared vocabulary)
    input_feeding: bool = False  # encoder-decoder: feed each attentional state to the next step
    dtype: str = "auto"  # compute dtype; the carried state and the gates stay float32
    param_dtype: str = "float32"
    unroll: int = 1  # time steps per scan iteration (speed only)

    # How the model computes, not what it is: a checkpoint restores under any of these.
    RUNTIME_FIELDS = ("dtype", "unroll")

    def __post_init__(self):
        check = self.check

        check(self.vocab_size >= 0, "model.vocab_size must be >= 0 (0: from the tokenizer)")
        check(self.cell in GATES, f"model.cell must be one of {tuple(GATES)}, got {self.cell!r}")
        check(self.num_layers > 0, "model.num_layers must be > 0")
        check(self.d_hidden > 0 and self.d_embed >= 0, "model.d_hidden must be > 0, d_embed >= 0")
        check(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")
        check(self.num_classes >= 0, "model.num_classes must be >= 0")
        check(self.pooling in POOLINGS, f"model.pooling must be one of {POOLINGS}")
        check(self.attention in SCORES, f"model.attention must be one of {tuple(SCORES)}")
        check(self.target_vocab_size >= 0, "model.target_vocab_size must be >= 0")
        check(self.dtype in DTYPE_CHOICES, f"model.dtype must be one of {DTYPE_CHOICES}")
        check(self.param_dtype in DTYPES, f"model.param_dtype must be one of {tuple(DTYPES)}")
        check(self.unroll >= 1, "model.unroll must be >= 1")
        check(
            not self.tie_embeddings or self.embed_dim == self.d_hidden,
            "model.tie_embeddings needs model.d_embed == model.d_hidden (or d_embed=0)",
        )

    @property
    def embed_dim(self) -> int:
        return self.d_embed or self.d_hidden

    @property
    def output_dim(self) -> int:
        """Width of a stack's outputs (both directions of a bidirectional stack)."""
        return self.d_hidden * (2 if self.bidirectional else 1)


# ---------------------------------------------------------------------------- cells
# One step of each cell: (params, carry, gx_BG) -> new carry, where gx_BG = x @ W_i + bias
# was computed for all steps before the scan. params: "recurrent_kernel" (D, G) and, for
# GRU, "recurrent_bias" (G,) (a RecurrentLayer's parameter names).


def lstm_step(params: dict, carry: Carry, gx_BG: Float[Array, "B G"]) -> Carry:
    """c' = f*c + i*g, h' = o*tanh(c'); gates (i, f, g, o) from x @ Wi + b + h @ Wh."""
    c_BD, h_BD = carry
    g_BG = gx_BG + dot_f32(h_BD, params["recurrent_kernel"])
    i, f, g, o = jnp.split(g_BG, 4, axis=-1)
    c_BD = jax.nn.sigmoid(f) * c_BD + jax.nn.sigmoid(i) * jnp.tanh(g)
    return c_BD, jax.nn.sigmoid(o) * jnp.tanh(c_BD)


def gru_step(params: dict, carry: Carry, gx_BG: Float[Array, "B G"]) -> Carry:
    """r, z from x and h; n = tanh(x Win + b_in + r * (h Whn + b_hn)); h' = (1-z) n + z h."""
    (h_BD,) = carry
    gh_BG = (
        dot_f32(h_BD, params["recurrent_kernel"])
        + params["recurrent_bias"].astype(jnp.float32)[None, :]
    )
    xr, xz, xn = jnp.split(gx_BG, 3, axis=-1)
    hr, hz, hn = jnp.split(gh_BG, 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return ((1.0 - z) * n + z * h_BD,)


def elman_step(params: dict, carry: Carry, gx_BG: Float[Array, "B G"]) -> Carry:
    """h' = tanh(x Wi + b + h Wh)."""
    (h_BD,) = carry
    return (jnp.tanh(gx_BG + dot_f32(h_BD, params["recurrent_kernel"])),)


CELLS: dict[str, Callable[[dict, Carry, jax.Array], Carry]] = {
    "lstm": lstm_step,
    "gru": gru_step,
    "elman": elman_step,
}


def zero_carry(cell: str, batch: int, d_hidden: int) -> Carry:
    """The initial state of one layer: zeros, float32."""
    zeros = jnp.zeros((batch, d_hidden), jnp.float32)
    return (zeros, zeros) if cell == "lstm" else (zeros,)


def init_carry(cfg: RNNConfig, batch: int) -> tuple[Carry, ...]:
    """The initial state of a whole stack: one carry per layer (a pair if bidirectional)."""
    one = zero_carry(cfg.cell, batch, cfg.d_hidden)
    return tuple((one, one) if cfg.bidirectional else one for _ in range(cfg.num_layers))


def scan_cell(
    cell: str,
    params: dict,
    carry: Carry,
    gx_LBG: Float[Array, "L B G"],
    mask_LB: Bool[Array, "L B"] | None = None,
    reverse: bool = False,
    unroll: int = 1,
) -> tuple[Carry, Float[Array, "L B D"]]:
    """Runs a cell over time (time-major); returns (final carry, hidden states h_LBD).

    Where ``mask_LB`` is False the carry is kept and the output is zero.
    """
    step = CELLS[cell]

    def body(carry, inputs):
        gx_BG, m_B = inputs
        new = step(params, carry, gx_BG)
        if m_B is not None:
            keep = m_B[:, None]
            new = tuple(jnp.where(keep, n, c) for n, c in zip(new, carry, strict=True))
            return batch_layout(new), jnp.where(keep, new[-1], 0.0)
        return batch_layout(new), new[-1]

    return jax.lax.scan(body, carry, (gx_LBG, mask_LB), reverse=reverse, unroll=unroll)


# --------------------------------------------------------------------------- layers


class Lookup(NamedTuple):
    """A first layer's input given as embedding rows: x_LBD = table_VE[tokens_LB].

    ``input_projection`` then projects whichever is smaller, the table or the rows: for a
    small vocabulary (a char LM: 65 rows against L*B = 2048) one (V, E) x (E, G) matmul and
    a gather replace the (L*B, E) x (E, G) matmul, and the backward's two matmuls of that
    size (the gradients of the input kernel and of the embedding) shrink the same way.
    """

    table_VE: Float[Array, "V E"]
    tokens_LB: Int[Array, "L B"]

    def rows(self) -> Float[Array, "L B E"]:
        return jnp.take(self.table_VE, self.tokens_LB, axis=0)


def input_width(x: "Float[Array, 'L B Din'] | Lookup") -> int:
    """D_in of a layer's input, an array or a ``Lookup``."""
    return x.table_VE.shape[-1] if isinstance(x, Lookup) else x.shape[-1]


def input_projection(
    x: "Float[Array, 'L B Din'] | Lookup",
    wi_DG: Float[Array, "Din G"],
    bias_G: Float[Array, " G"],
) -> Float[Array, "L B G"]:
    """x @ wi + bias for every step as one (L*B, D_in) x (D_in, G) matmul in wi's dtype,
    returned in float32; for a ``Lookup`` with fewer table rows than L*B, the table's
    projection followed by a gather of its rows (equal up to float rounding)."""
    bias_1G = bias_G.astype(F32)[None, :]
    if isinstance(x, Lookup):
        if x.table_VE.shape[0] < x.tokens_LB.size:
            table_VG = jnp.dot(x.table_VE.astype(wi_DG.dtype), wi_DG, preferred_element_type=F32)
            return jnp.take(table_VG + bias_1G, x.tokens_LB, axis=0)
        x = x.rows()
    L, B, d_in = x.shape
    x_ND = x.reshape(L * B, d_in).astype(wi_DG.dtype)
    gx_NG = jnp.dot(x_ND, wi_DG, preferred_element_type=F32)
    return (gx_NG + bias_1G).reshape(L, B, -1)


class RecurrentLayer(nn.Module):
    """One direction of one layer: (L, B, D_in) -> (L, B, D), with carry in and out.

    Parameters: ``input_kernel`` (D_in, G) and ``bias`` (G,) for the input projection
    (LSTM forget block of the bias initialised to 1), ``recurrent_kernel`` (D, G)
    (orthogonal init) and, for GRU, ``recurrent_bias`` (G,), which the reset gate
    multiplies. The ``*kernel``/``*bias`` names give them their weight-decay roles.
    The input may be a ``Lookup`` (the embedding table and the tokens; see
    ``input_projection``).
    """

    cell: str
    d_hidden: int
    reverse: bool = False
    unroll: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_LBD: "Float[Array, 'L B Din'] | Lookup",
        carry: Carry,
        mask_LB: Bool[Array, "L B"] | None = None,
    ) -> tuple[Carry, Float[Array, "L B D"]]:
        w = cell_weights(self, self.cell, input_width(x_LBD), self.d_hidden, self.param_dtype)
        params = recurrent_params(w, self.dtype)
        gx_LBG = input_projection(x_LBD, w["input_kernel"].astype(self.dtype), w["bias"])
        return fused_scan(self.cell, self.reverse, self.unroll, params, carry, gx_LBG, mask_LB)


def cell_weights(module: nn.Module, cell: str, d_in: int, d_hidden: int, param_dtype) -> dict:
    """Creates one layer's parameters on ``module`` (see ``RecurrentLayer``) and returns
    them by name: ``input_kernel``, ``bias``, ``recurrent_kernel`` (+ ``recurrent_bias``)."""
    G = GATES[cell] * d_hidden

    def bias_init(key, shape, dtype=jnp.float32):
        bias = jnp.zeros(shape, dtype)
        if cell == "lstm":  # forget gate open at the start (Gers et al. 2000)
            bias = bias.at[d_hidden : 2 * d_hidden].set(1.0)
        return bias

    def make(name, init, shape, axes):
        return param_with_axes(module, name, init, shape, axes, param_dtype)

    w = {
        "input_kernel": make(
            "input_kernel", nn.initializers.lecun_normal(), (d_in, G), ("embed", "mlp")
        ),
        "bias": make("bias", bias_init, (G,), ("mlp",)),
        "recurrent_kernel": make(
            "recurrent_kernel", nn.initializers.orthogonal(), (d_hidden, G), (None, "mlp")
        ),
    }
    if cell == "gru":
        w["recurrent_bias"] = make("recurrent_bias", nn.initializers.zeros, (G,), ("mlp",))
    return w


def recurrent_params(w: dict, dtype) -> dict:
    """The per-step part of ``cell_weights`` that the cells read (recurrent kernel in the
    compute dtype)."""
    params = {"recurrent_kernel": w["recurrent_kernel"].astype(dtype)}
    if "recurrent_bias" in w:
        params["recurrent_bias"] = w["recurrent_bias"]
    return params


class CellWeights(nn.Module):
    """Only the parameters of one recurrent layer, for models that run the cell steps in
    their own loop (the input-feeding decoder of ``models/rnn_seq2seq.py``)."""

    cell: str
    d_in: int
    d_hidden: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> dict:
        return cell_weights(self, self.cell, self.d_in, self.d_hidden, self.param_dtype)


class Bidirectional(nn.Module):
    """Two layers with separate parameters, one run on the reversed sequence; outputs
    concatenated (forward first). Carry: (forward carry, backward carry)."""

    cell: str
    d_hidden: int
    unroll: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_LBD: "Float[Array, 'L B Din'] | Lookup",
        carry: tuple[Carry, Carry],
        mask_LB: Bool[Array, "L B"] | None = None,
    ) -> tuple[tuple[Carry, Carry], Float[Array, "L B D2"]]:
        kw = {"unroll": self.unroll, "dtype": self.dtype, "param_dtype": self.param_dtype}
        fwd = RecurrentLayer(self.cell, self.d_hidden, name="forward", **kw)
        bwd = RecurrentLayer(self.cell, self.d_hidden, reverse=True, name="backward", **kw)
        carry_f, h_f = fwd(x_LBD, carry[0], mask_LB)
        carry_b, h_b = bwd(x_LBD, carry[1], mask_LB)
        return (carry_f, carry_b), jnp.concatenate([h_f, h_b], axis=-1)


class RNNStack(nn.Module):
    """``num_layers`` recurrent layers (time-major), dropout between them."""

    config: RNNConfig

    @nn.compact
    def __call__(
        self,
        x_LBD: "Float[Array, 'L B Din'] | Lookup",
        carry: tuple[Carry, ...],
        mask_LB: Bool[Array, "L B"] | None = None,
        train: bool = False,
    ) -> tuple[tuple[Carry, ...], Float[Array, "L B D"]]:
        cfg = self.config
        kw = {
            "unroll": cfg.unroll,
            "dtype": resolve_dtype(cfg.dtype),
            "param_dtype": DTYPES[cfg.param_dtype],
        }
        new_carry = []
        for i in range(cfg.num_layers):
            if i > 0:
                x_LBD = nn.Dropout(cfg.dropout)(x_LBD, deterministic=not train)
            if cfg.bidirectional:
                layer = Bidirectional(cfg.cell, cfg.d_hidden, name=f"layer_{i}", **kw)
            else:
                layer = RecurrentLayer(cfg.cell, cfg.d_hidden, name=f"layer_{i}", **kw)
            layer_carry, x_LBD = layer(x_LBD, carry[i], mask_LB)
            new_carry.append(layer_carry)
        return tuple(new_carry), x_LBD


def final_hidden(cfg: RNNConfig, carry: tuple[Carry, ...]) -> Float[Array, "B D"]:
    """The last layer's final h (B, output_dim); both directions' if bidirectional."""
    last = carry[-1]
    if cfg.bidirectional:
        return jnp.concatenate([last[0][-1], last[1][-1]], axis=-1)
    return last[-1]


def embedding_table(module: nn.Module, vocab_size: int, cfg: RNNConfig) -> jax.Array:
    """Creates a token embedding (V, embed_dim) on ``module``: N(0, ``EMBED_STD``), see
    ``Encoder``."""
    shape = (max(vocab_size, 1), cfg.embed_dim)
    init = nn.initializers.normal(EMBED_STD)
    return param_with_axes(
        module, "embedding", init, shape, ("vocab", "embed"), DTYPES[cfg.param_dtype]
    )


def token_input(
    table_VE: Float[Array, "V E"], tokens_BL: Int[Array, "B L"], dropout: nn.Dropout, train: bool
) -> "Float[Array, 'L B E'] | Lookup":
    """A first layer's input, time-major: a ``Lookup`` (the layer projects the table when
    it is the smaller side), or the gathered rows after dropout when training with it."""
    x = Lookup(table_VE, tokens_BL.T)
    if train and dropout.rate > 0.0:
        return dropout(x.rows(), deterministic=False)
    return x


class Encoder(nn.Module):
    """Token embedding and a recurrent stack: tokens (B, L) -> (carry, outputs (L, B, D)).

    The embedding starts at N(0, 1), as ``flax.linen.Embed`` and ``torch.nn.Embedding``
    do: the first layer's LeCun-normal input kernel (std 1/sqrt(d_embed)) then gives gate
    pre-activations of about unit variance, the scale that initialiser is made for.
    (N(0, 0.1), used before, put them at 0.1: the char LSTM learned its input path slowly
    and ended 0.16 nats/char behind PyTorch after 2000 steps; ``benchmarks/bench_rnn.py
    --converge``.)
    """

    config: RNNConfig
    vocab_size: int

    def setup(self):
        cfg = self.config
        self.embedding = embedding_table(self, self.vocab_size, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.stack = RNNStack(cfg)

    def __call__(
        self,
        tokens_BL: Int[Array, "B L"],
        carry: tuple[Carry, ...] | None = None,
        mask_BL: Bool[Array, "B L"] | None = None,
        train: bool = False,
    ) -> tuple[tuple[Carry, ...], Float[Array, "L B D"]]:
        cfg = self.config
        chex.assert_rank(tokens_BL, 2)
        if self.vocab_size <= 0:
            raise ValueError("model.vocab_size is 0: set it from the tokenizer before init")
        x = token_input(
            self.embedding.astype(resolve_dtype(cfg.dtype)), tokens_BL, self.dropout, train
        )
        carry = init_carry(cfg, tokens_BL.shape[0]) if carry is None else carry
        mask_LB = None if mask_BL is None else jnp.asarray(mask_BL, bool).T
        return self.stack(x, carry, mask_LB, train)


# --------------------------------------------------------------------------- models


class RNNLM(nn.Module):
    """Recurrent language model: tokens (B, L), carry -> next-token logits (B, L, V), carry.

    Pass the carry returned by one batch into the next for truncated BPTT over streams.
    """

    config: RNNConfig

    @nn.compact
    def __call__(
        self,
        tokens_BL: Int[Array, "B L"],
        carry: tuple[Carry, ...] | None = None,
        train: bool = False,
    ) -> tuple[Float[Array, "B L V"], tuple[Carry, ...]]:
        cfg = self.config
        if cfg.bidirectional:
            raise ConfigError("a language model cannot be bidirectional: model.bidirectional")
        B, L = tokens_BL.shape
        encoder = Encoder(cfg, cfg.vocab_size, name="encoder")
        carry, h_LBD = encoder(tokens_BL, carry, None, train)
        h_LBD = nn.Dropout(cfg.dropout)(h_LBD, deterministic=not train)
        h_BLD = h_LBD.transpose(1, 0, 2)
        logits_BLV = _output_layer(self, cfg, h_BLD, cfg.vocab_size, encoder)
        chex.assert_shape(logits_BLV, (B, L, cfg.vocab_size))
        return logits_BLV, carry


def _output_layer(module, cfg, h_BLD, vocab, encoder=None):
    """Logits in float32: tied to the encoder's embedding, or a Dense ``lm_head``."""
    if cfg.tie_embeddings and encoder is not None:
        table = encoder.embedding
        B, L, D = h_BLD.shape
        logits = jnp.dot(h_BLD.reshape(B * L, D).astype(jnp.float32), table.T.astype(jnp.float32))
        return logits.reshape(B, L, vocab)
    dense = Dense(
        vocab,
        ("embed", "vocab"),
        name="lm_head",
        dtype=resolve_dtype(cfg.dtype),
        param_dtype=DTYPES[cfg.param_dtype],
        out_dtype=jnp.float32,
    )
    return dense(h_BLD)


def pool(
    pooling: str,
    h_LBD: Float[Array, "L B D"],
    final_BD: Float[Array, "B D"],
    mask_BL: Bool[Array, "B L"] | None,
) -> Float[Array, "B D"]:
    """Sentence vector: the final state, or the max / mean of the outputs over the mask."""
    if pooling == "final":
        return final_BD
    L, B, _ = h_LBD.shape
    valid_LB1 = (jnp.ones((L, B), bool) if mask_BL is None else mask_BL.T)[:, :, None]
    if pooling == "max":
        return jnp.max(jnp.where(valid_LB1, h_LBD, -jnp.inf), axis=0)
    count_B1 = jnp.maximum(jnp.sum(valid_LB1, axis=0), 1).astype(jnp.float32)
    return jnp.sum(jnp.where(valid_LB1, h_LBD, 0.0), axis=0) / count_B1


class RNNClassifier(nn.Module):
    """Sentence classifier: tokens (B, L) and mask -> class logits (B, Y)."""

    config: RNNConfig

    @nn.compact
    def __call__(
        self,
        tokens_BL: Int[Array, "B L"],
        mask_BL: Bool[Array, "B L"] | None = None,
        train: bool = False,
    ) -> Float[Array, "B Y"]:
        cfg = self.config
        if cfg.num_classes <= 0:
            raise ConfigError("model.num_classes must be > 0 for a classifier")
        carry, h_LBD = Encoder(cfg, cfg.vocab_size, name="encoder")(tokens_BL, None, mask_BL, train)
        sentence_BD = pool(cfg.pooling, h_LBD, final_hidden(cfg, carry), mask_BL)
        sentence_BD = nn.Dropout(cfg.dropout)(sentence_BD, deterministic=not train)
        return _head(cfg, cfg.num_classes, "classifier")(sentence_BD)


class RNNTagger(nn.Module):
    """Per-token tagger: tokens (B, L) and mask -> tag logits (B, L, Y)."""

    config: RNNConfig

    @nn.compact
    def __call__(
        self,
        tokens_BL: Int[Array, "B L"],
        mask_BL: Bool[Array, "B L"] | None = None,
        train: bool = False,
    ) -> Float[Array, "B L Y"]:
        cfg = self.config
        if cfg.num_classes <= 0:
            raise ConfigError("model.num_classes (the number of tags) must be > 0 for a tagger")
        _, h_LBD = Encoder(cfg, cfg.vocab_size, name="encoder")(tokens_BL, None, mask_BL, train)
        h_LBD = nn.Dropout(cfg.dropout)(h_LBD, deterministic=not train)
        return _head(cfg, cfg.num_classes, "tagger")(h_LBD.transpose(1, 0, 2))


def _head(cfg: RNNConfig, features: int, name: str) -> nn.Module:
    return Dense(
        features,
        ("embed", None),
        name=name,
        dtype=resolve_dtype(cfg.dtype),
        param_dtype=DTYPES[cfg.param_dtype],
        out_dtype=jnp.float32,
    )
