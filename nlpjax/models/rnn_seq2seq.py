"""Recurrent encoder-decoder with attention, returning the alignment weights.

Luong et al. 2015, https://arxiv.org/abs/1508.04025 (the "general" dot score
h_t^T W h_s and the attentional hidden state tanh(W_c [c_t; h_t])); Bahdanau et al. 2014,
https://arxiv.org/abs/1409.0473 (the additive score v^T tanh(W_q h_t + W_k h_s)).
Both scores use Luong's layout: the decoder LSTM runs first, and attention reads its
outputs, so teacher-forced training computes every target position's attention in one
batched contraction. With ``input_feeding`` (Luong's section 3.3) the attentional state
of step t-1 is also an input of step t (``FeedingDecoder``): attention then runs inside
the loop over target steps. The decoder starts from a projection of the
encoder's final state (``bridge``). ``decode`` on one target token with the carry it
returned is the incremental step used for greedy and beam search.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nlpjax.errors import ConfigError
from nlpjax.models.layers import Dense, default_kernel_init, param_with_axes
from nlpjax.models.rnn import (
    CELLS,
    GATES,
    Carry,
    CellWeights,
    Encoder,
    RNNConfig,
    embedding_table,
    final_hidden,
    input_projection,
    recurrent_params,
    token_input,
    zero_carry,
)
from nlpjax.models.rnn_fused import batch_layout, dot_f32
from nlpjax.precision import DTYPES, resolve_dtype
from nlpjax.types import Array, Bool, Float, Int

# Letters: S source length, T target length, D decoder width, E encoder output width,
# A additive-attention width (= D).


class Attention(nn.Module):
    """Scores decoder states against the encoder memory; softmax over unmasked sources.

    Attributes:
      kind: ``dot`` (Luong general: q . (W k)) or ``additive`` (Bahdanau: v . tanh(Wq q + Wk k)).
    """

    kind: str = "dot"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        query_BTD: Float[Array, "B T D"],
        memory_BSE: Float[Array, "B S E"],
        mask_BS: Bool[Array, "B S"] | None,
    ) -> tuple[Float[Array, "B T E"], Float[Array, "B T S"]]:
        """(context vectors, attention weights); weights sum to 1 over the source."""
        D = query_BTD.shape[-1]
        types = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        keys_BSD = Dense(D, ("embed", "mlp"), use_bias=False, name="key", **types)(memory_BSE)
        v_D = None
        if self.kind == "additive":
            query_BTD = Dense(D, ("embed", "mlp"), use_bias=False, name="query", **types)(query_BTD)
            v_D = param_with_axes(
                self, "v", nn.initializers.normal(D**-0.5), (D,), ("mlp",), self.param_dtype
            )
        return attend(query_BTD, keys_BSD, memory_BSE, mask_BS, v_D, self.dtype)


def attend(
    query_BTD: Float[Array, "B T D"],
    keys_BSD: Float[Array, "B S D"],
    memory_BSE: Float[Array, "B S E"],
    mask_BS: Bool[Array, "B S"] | None,
    v_D: Float[Array, " D"] | None,
    dtype: Any,
) -> tuple[Float[Array, "B T E"], Float[Array, "B T S"]]:
    """Scores, softmax (float32) and context vectors from projected keys: the dot score
    q . k when ``v_D`` is None, else the additive score v . tanh(q + k) (q projected)."""
    if v_D is None:
        scores_BTS = jnp.einsum(
            "btd,bsd->bts", query_BTD, keys_BSD, preferred_element_type=jnp.float32
        )
    else:
        hidden_BTSD = jnp.tanh(query_BTD[:, :, None, :] + keys_BSD[:, None, :, :])
        scores_BTS = jnp.einsum(
            "btsd,d->bts", hidden_BTSD, v_D.astype(dtype), preferred_element_type=jnp.float32
        )
    if mask_BS is not None:
        floor = jnp.finfo(jnp.float32).min
        scores_BTS = jnp.where(mask_BS[:, None, :], scores_BTS, floor)
    weights_BTS = jax.nn.softmax(scores_BTS.astype(jnp.float32), axis=-1)
    context_BTE = jnp.einsum("bts,bse->bte", weights_BTS.astype(dtype), memory_BSE.astype(dtype))
    return context_BTE, weights_BTS


class FeedingDecoder(nn.Module):
    """The decoder with Luong's input feeding: step t's first layer reads the target token
    and the attentional state of step t-1, so attention runs inside the loop over time.

    State: (per-layer carries, attentional state (B, D)), the latter zero at the start.
    The token half of the first layer's input projection is computed for all steps before
    the loop (as in ``RecurrentLayer``); per step come the recurrent and feed matmuls, the
    upper layers' input projections, the attention over the source and the combine layer.
    Dropout (``config.dropout``) on the embeddings, between layers and on the attentional
    state, which is both fed back and returned (as OpenNMT does); the per-step masks are
    drawn before the loop.
    """

    config: RNNConfig
    vocab_size: int
    kind: str = "dot"

    @nn.compact
    def __call__(
        self,
        tokens_BT: Int[Array, "B T"],
        memory_BSE: Float[Array, "B S E"],
        mask_BS: Bool[Array, "B S"] | None,
        state: tuple[tuple[Carry, ...], Float[Array, "B D"]],
        train: bool = False,
    ) -> tuple[Float[Array, "T B D"], tuple, Float[Array, "T B S"]]:
        """(attentional states, final state, attention weights), time-major."""
        cfg = self.config
        dtype, pdt = resolve_dtype(cfg.dtype), DTYPES[cfg.param_dtype]
        n, D, E = cfg.num_layers, cfg.d_hidden, memory_BSE.shape[-1]
        G = GATES[cfg.cell] * D

        def param(name, init, shape, axes=("embed", "mlp")):
            return param_with_axes(self, name, init, shape, axes, pdt)

        embedding = embedding_table(self, self.vocab_size, cfg)
        layers = [
            CellWeights(cfg.cell, cfg.embed_dim if i == 0 else D, D, pdt, name=f"layer_{i}")()
            for i in range(n)
        ]
        feed_DG = param("feed_kernel", nn.initializers.lecun_normal(), (D, G)).astype(dtype)
        combine = param("combine_kernel", default_kernel_init, (E + D, D)).astype(dtype)
        keys_BSD = Dense(D, use_bias=False, name="key", dtype=dtype, param_dtype=pdt)(memory_BSE)
        query_DD = v_D = None
        if self.kind == "additive":
            query_DD = param("query_kernel", default_kernel_init, (D, D)).astype(dtype)
            v_D = param("v", nn.initializers.normal(D**-0.5), (D,), ("mlp",))

        x = token_input(embedding.astype(dtype), tokens_BT, nn.Dropout(cfg.dropout), train)
        dropout = train and cfg.dropout > 0.0
        gx_TBG = input_projection(x, layers[0]["input_kernel"].astype(dtype), layers[0]["bias"])
        masks = None  # (n, T, B, D): [0] the attentional state, [i] layer i's input
        if dropout:
            keep = 1.0 - cfg.dropout
            shape = (n, *tokens_BT.shape[::-1], D)
            masks = jax.random.bernoulli(self.make_rng("dropout"), keep, shape) / keep
            masks = masks.transpose(1, 0, 2, 3)  # time first, for the scan
        wi = [w["input_kernel"].astype(dtype) for w in layers]
        rec = [recurrent_params(w, dtype) for w in layers]
        step = CELLS[cfg.cell]

        def body(state, xs):
            carries, feed_BD = state
            g_BG, m = xs
            g_BG = g_BG + dot_f32(feed_BD, feed_DG)
            new = []
            for i in range(n):
                if i > 0:
                    h_BD = new[-1][-1] if m is None else new[-1][-1] * m[i]
                    g_BG = dot_f32(h_BD, wi[i]) + layers[i]["bias"].astype(jnp.float32)[None, :]
                new.append(batch_layout(step(rec[i], carries[i], g_BG)))
            h_BD = new[-1][-1]
            q_B1D = (h_BD if query_DD is None else dot_f32(h_BD, query_DD))[:, None, :]
            ctx_B1E, w_B1S = attend(q_B1D.astype(dtype), keys_BSD, memory_BSE, mask_BS, v_D, dtype)
            both = jnp.concatenate([ctx_B1E[:, 0], h_BD.astype(dtype)], axis=-1)
            att_BD = jnp.tanh(dot_f32(both, combine))
            if m is not None:
                att_BD = att_BD * m[0]
            (att_BD,) = batch_layout((att_BD,))
            return (tuple(new), att_BD), (att_BD, w_B1S[:, 0])

        state, (att_TBD, w_TBS) = jax.lax.scan(body, state, (gx_TBG, masks))
        return att_TBD, state, w_TBS


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Memory:
    """What the decoder reads from an encoded source."""

    memory_BSE: jax.Array
    mask_BS: jax.Array | None
    carry: tuple  # the decoder's initial state (per-layer carries; with input feeding,
    # (per-layer carries, attentional state))


class RNNSeq2Seq(nn.Module):
    """Encoder-decoder: source (B, S) and shifted targets (B, T) -> logits (B, T, V), weights.

    ``config.bidirectional`` applies to the encoder; the decoder is unidirectional with
    ``config.num_layers`` layers of ``config.d_hidden``; ``config.attention`` picks the score.
    """

    config: RNNConfig

    def setup(self):
        cfg = self.config
        if cfg.vocab_size <= 0:
            raise ConfigError("model.vocab_size is 0: set it from the tokenizer before init")
        types = {"dtype": resolve_dtype(cfg.dtype), "param_dtype": DTYPES[cfg.param_dtype]}
        self.encoder = Encoder(cfg, cfg.vocab_size)
        decoder_cfg = dataclasses.replace(cfg, bidirectional=False)
        self.bridge = Dense(cfg.num_layers * cfg.d_hidden, ("embed", "mlp"), **types)
        if cfg.input_feeding:
            self.decoder = FeedingDecoder(decoder_cfg, self.target_vocab, cfg.attention)
        else:
            self.decoder = Encoder(decoder_cfg, self.target_vocab)
            self.attention = Attention(cfg.attention, **types)
            self.combine = Dense(cfg.d_hidden, ("embed", "mlp"), use_bias=False, **types)
            self.dropout = nn.Dropout(cfg.dropout)
        self.head = Dense(self.target_vocab, ("embed", "vocab"), out_dtype=jnp.float32, **types)

    @property
    def target_vocab(self) -> int:
        return self.config.target_vocab_size or self.config.vocab_size

    def __call__(
        self,
        inputs_BS: Int[Array, "B S"],
        decoder_inputs_BT: Int[Array, "B T"],
        inputs_mask_BS: Bool[Array, "B S"] | None = None,
        train: bool = False,
    ) -> tuple[Float[Array, "B T V"], Float[Array, "B T S"]]:
        """Teacher-forced logits and the attention weights (alignments)."""
        memory = self.encode(inputs_BS, inputs_mask_BS, train)
        logits_BTV, _, weights_BTS = self.decode(memory, decoder_inputs_BT, None, train)
        return logits_BTV, weights_BTS

    def encode(
        self,
        inputs_BS: Int[Array, "B S"],
        inputs_mask_BS: Bool[Array, "B S"] | None = None,
        train: bool = False,
    ) -> Memory:
        """Encodes the source once; the result feeds every ``decode`` call."""
        cfg = self.config
        carry, h_SBE = self.encoder(inputs_BS, None, inputs_mask_BS, train)
        B = inputs_BS.shape[0]
        init_BN = jnp.tanh(self.bridge(final_hidden(cfg, carry)).astype(jnp.float32))
        starts = jnp.split(init_BN, cfg.num_layers, axis=-1)
        dec_carry = tuple(
            zero_carry(cfg.cell, B, cfg.d_hidden)[:-1] + (h_BD,) for h_BD in starts
        )  # LSTM: c = 0, h from the bridge
        if cfg.input_feeding:  # and the attentional state of "step 0"
            dec_carry = (dec_carry, jnp.zeros((B, cfg.d_hidden), jnp.float32))
        mask = None if inputs_mask_BS is None else jnp.asarray(inputs_mask_BS, bool)
        return Memory(h_SBE.transpose(1, 0, 2), mask, dec_carry)

    def decode(
        self,
        memory: Memory,
        decoder_inputs_BT: Int[Array, "B T"],
        carry: tuple[Carry, ...] | None = None,
        train: bool = False,
    ) -> tuple[Float[Array, "B T V"], tuple[Carry, ...], Float[Array, "B T S"]]:
        """(logits, decoder carry, attention weights) for T target tokens from ``carry``
        (None: the start state ``memory.carry``). T=1 with the returned carry is one step."""
        carry = memory.carry if carry is None else carry
        if self.config.input_feeding:
            att_TBD, carry, weights_TBS = self.decoder(
                decoder_inputs_BT, memory.memory_BSE, memory.mask_BS, carry, train
            )
            logits_BTV = self.head(att_TBD.transpose(1, 0, 2))
            return logits_BTV, carry, weights_TBS.transpose(1, 0, 2)
        carry, h_TBD = self.decoder(decoder_inputs_BT, carry, None, train)
        h_BTD = h_TBD.transpose(1, 0, 2)
        context_BTE, weights_BTS = self.attention(h_BTD, memory.memory_BSE, memory.mask_BS)
        both = jnp.concatenate([context_BTE.astype(h_BTD.dtype), h_BTD], axis=-1)
        attentional_BTD = jnp.tanh(self.combine(both))
        attentional_BTD = self.dropout(attentional_BTD, deterministic=not train)
        return self.head(attentional_BTD), carry, weights_BTS


# -- the searches' interface (greedy, sampling and beam search over a cached step) -------


def search_cache(
    model: RNNSeq2Seq, variables, inputs_BS, inputs_mask_BS=None, width: int = 1
) -> tuple[Memory, tuple[Carry, ...]]:
    """The cache a search starts from: the encoded source and the decoder's start state,
    every row repeated ``width`` times (row b * width + w is beam w of input b)."""
    memory = model.apply(variables, inputs_BS, inputs_mask_BS, method=RNNSeq2Seq.encode)
    cache = (memory, memory.carry)
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, width, axis=0), cache)


def search_step(model: RNNSeq2Seq, variables):
    """``step_fn(tokens_N1, cache) -> (logits_N1V, cache)``, the one-token step that the
    model-agnostic searches (greedy, sampling, beam) call; ``cache`` from ``search_cache``."""

    def step_fn(tokens_N1, cache):
        memory, carry = cache
        logits, carry, _ = model.apply(
            variables, memory, tokens_N1, carry, method=RNNSeq2Seq.decode
        )
        return logits, (memory, carry)

    return step_fn
