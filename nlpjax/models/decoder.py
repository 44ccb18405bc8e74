"""Decoder-only transformer language model (GPT-style, pre-norm).

Radford et al., 2019 (GPT-2), https://openai.com/research/better-language-models.
Token embedding, selectable positions (learned, sinusoidal, RoPE), pre-norm blocks of
causal multi-head attention and a GELU MLP, final norm, optionally tied output
embedding. ``decode=True`` runs against a KV cache for fast generation. Optional
learned prefix vectors: registers (Darcet et al., 2023, https://arxiv.org/abs/2309.16588)
and an attention-sink token (Xiao et al., 2023, https://arxiv.org/abs/2309.17453).

Precision (``model.dtype``/``model.param_dtype``, see ``nlpjax.precision``):
parameters are stored in ``param_dtype`` and cast to the compute dtype at use; the
residual stream between sublayers stays float32, norms compute in float32 and hand the
compute dtype to the attention and MLP, whose outputs are added back in float32; the
logits come out of a float32-accumulating matmul. ``model.remat`` recomputes each
block's activations in the backward pass under a ``jax.checkpoint`` policy.
"""

import dataclasses
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from nlpjax.models import positions as pos_lib
from nlpjax.models.attention import (
    IMPLEMENTATIONS,
    MultiHeadAttention,
    position_causal_mask,
    prefix_segment_mask,
    segment_mask,
)
from nlpjax.models.cache_layout import StreamSlots, slot_layout
from nlpjax.models.layers import ACTIVATIONS, MLP, Dense, Norm, param_with_axes
from nlpjax.models.model_config import ModelConfig
from nlpjax.precision import (
    DTYPE_CHOICES,
    DTYPES,
    RESIDUAL_DTYPE,
    f32_accumulation,
    resolve_dtype,
)
from nlpjax.types import Array, Float, Int

POSITIONS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
ACTIVATION_AXES = ("act_batch", "act_length", "act_embed")
# model.remat -> jax.checkpoint policy (what a block keeps for the backward pass).
REMAT_POLICIES = {
    "full": None,  # keep only the block's inputs; recompute everything
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep all matmul outputs
    # keep the weight matmuls, recompute the attention scores and values (batched dots)
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_CHOICES = ("none", *REMAT_POLICIES)


@dataclasses.dataclass(frozen=True)
class DecoderConfig(ModelConfig):
    """Shape and options of the decoder. ``vocab_size=0`` means "from the tokenizer"."""

    vocab_size: int = 0
    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    d_ff: int = 0  # 0 means 4 * d_model
    max_len: int = 64  # context length
    positions: str = "learned"
    norm: str = "layernorm"
    activation: str = "gelu_tanh"
    dropout: float = 0.0
    tie_embeddings: bool = True
    use_bias: bool = True
    rope_base: float = 10000.0
    dtype: str = "auto"  # compute: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | ...
    param_dtype: str = "float32"  # storage (and checkpoint) dtype of the parameters
    attention: str = "auto"  # auto | reference | xla | cudnn (see nlpjax.models.attention)
    remat: str = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
    num_registers: int = 0  # learned register vectors in front of every sequence
    sink_token: bool = False  # one learned sink vector at the very start (before registers)

    # How the model computes, not what it is: a checkpoint restores under any of these.
    RUNTIME_FIELDS = ("dtype", "attention", "remat")

    def __post_init__(self):
        check = self.check

        check(self.vocab_size >= 0, "model.vocab_size must be >= 0 (0: from the tokenizer)")
        check(self.num_layers > 0 and self.num_heads > 0, "model.num_layers/num_heads must be > 0")
        check(
            self.d_model % self.num_heads == 0,
            f"model.d_model={self.d_model} must be divisible by model.num_heads={self.num_heads}",
        )
        check(self.positions in POSITIONS, f"model.positions must be one of {POSITIONS}")
        check(self.norm in NORMS, f"model.norm must be one of {NORMS}")
        check(self.activation in ACTIVATIONS, f"model.activation: one of {tuple(ACTIVATIONS)}")
        check(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")
        check(self.max_len > 0, "model.max_len must be > 0")
        check(self.dtype in DTYPE_CHOICES, f"model.dtype must be one of {DTYPE_CHOICES}")
        check(self.param_dtype in DTYPES, f"model.param_dtype must be one of {tuple(DTYPES)}")
        check(self.attention in IMPLEMENTATIONS, f"model.attention: one of {IMPLEMENTATIONS}")
        check(self.remat in REMAT_CHOICES, f"model.remat must be one of {REMAT_CHOICES}")
        check(self.num_registers >= 0, "model.num_registers must be >= 0 (0: no registers)")
        if self.positions == "rope":
            check(self.head_dim % 2 == 0, "RoPE needs an even head dim (d_model / num_heads)")
        if self.positions == "sinusoidal":
            check(self.d_model % 2 == 0, "sinusoidal positions need an even model.d_model")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def num_prefix(self) -> int:
        """P: learned positions in front of the tokens (the sink, then the registers)."""
        return int(self.sink_token) + self.num_registers


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(Norm(x)); x + MLP(Norm(x)).

    Arguments are positional so ``nn.remat`` can mark ``causal``, ``train`` and
    ``decode`` static (argnums 4-6, counting ``self``). ``cache_slots``: the KV cache's
    length when decoding (0: the prefix and ``max_len`` tokens); ``key_positions_BS``:
    the cached keys' rotary positions when the cache holds keys before RoPE (streaming).
    """

    config: DecoderConfig
    cache_slots: int = 0

    @nn.compact
    def __call__(
        self, x_BLD, mask, positions_BL, causal, train, decode, cache_index, key_positions_BS=None
    ):
        cfg = self.config
        types = {"dtype": resolve_dtype(cfg.dtype), "param_dtype": DTYPES[cfg.param_dtype]}
        out_init = nn.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))
        h = Norm(cfg.norm, name="attn_norm", **types)(x_BLD)
        h = MultiHeadAttention(
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            max_len=self.cache_slots or cfg.num_prefix + cfg.max_len,  # prefix, then tokens
            use_rope=cfg.positions == "rope",
            rope_base=cfg.rope_base,
            dropout=cfg.dropout,
            use_bias=cfg.use_bias,
            out_init=out_init,
            implementation=cfg.attention,
            name="attn",
            **types,
        )(
            h,
            mask,
            positions_BL,
            causal=causal,
            train=train,
            decode=decode,
            cache_index=cache_index,
            key_positions_BS=key_positions_BS,
        )
        x_BLD = x_BLD + nn.Dropout(cfg.dropout)(h, deterministic=not train)
        h = Norm(cfg.norm, name="mlp_norm", **types)(x_BLD)
        h = MLP(cfg.ff_dim, cfg.activation, cfg.use_bias, out_init, name="mlp", **types)(h)
        return x_BLD + nn.Dropout(cfg.dropout)(h, deterministic=not train)


def block_class(remat: str, decode: bool) -> type[nn.Module]:
    """``Block``, or ``Block`` under ``nn.remat`` with the policy named by ``remat``."""
    if remat == "none" or decode:  # decoding keeps no activations for a backward pass
        return Block
    return nn.remat(Block, policy=REMAT_POLICIES[remat], static_argnums=(4, 5, 6))


class Decoder(nn.Module):
    """Causal transformer LM: tokens (B, L) -> next-token logits (B, L, V).

    With ``num_registers`` or ``sink_token`` (P = ``config.num_prefix``), P learned
    vectors (the sink first, then the registers) sit in front of every sequence at
    positions -P..-1 (no learned/sinusoidal position is added to them; RoPE rotates them
    by those positions). Every token may attend to them, they attend only to each other,
    and their outputs are dropped before the final norm, so the logits still cover the L
    tokens. Because they never see the input, their keys and values depend on the
    parameters only: ``fill_prefix=True`` computes them once into a KV cache, and
    decoding then reuses them (cache slots 0..P-1; the tokens' slots follow).

    ``stream`` (a ``StreamSlots``) makes ``decode=True`` a streaming cache of fixed size
    (``nlpjax.models.cache_layout``): one token per call, keys cached before RoPE and
    rotated by their position inside the cache, the first ``n_sink`` tokens kept and the
    ``window`` most recent in a ring. Parameters are the same as without it.
    """

    config: DecoderConfig
    stream: StreamSlots | None = None

    @nn.compact
    def __call__(
        self,
        tokens_BL: Int[Array, "B L"],
        *,
        segments_BL: Int[Array, "B L"] | None = None,
        train: bool = False,
        decode: bool = False,
        fill_prefix: bool = False,
    ) -> Float[Array, "B L V"]:
        """Next-token logits, float32 whatever the compute dtype.

        Args:
          tokens_BL: token ids.
          segments_BL: packed-sequence ids; a token attends only within its segment (and
            to the registers and sink).
          train: dropout on.
          decode: run against (and update) the KV cache in the ``cache`` collection.
          fill_prefix: with ``decode=True`` and ``tokens_BL`` of length 0: write the
            registers' and sink's keys and values into the cache (returns (B, 0, V)).
        """
        cfg = self.config
        dtype, param_dtype = resolve_dtype(cfg.dtype), DTYPES[cfg.param_dtype]
        chex.assert_rank(tokens_BL, 2)
        B, L = tokens_BL.shape
        P = cfg.num_prefix
        if cfg.max_len < L:
            raise ValueError(f"sequence length {L} exceeds model.max_len={cfg.max_len}")
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size is 0: set it from the tokenizer before init")
        if fill_prefix and not (decode and P and L == 0):
            raise ValueError("fill_prefix needs decode=True, registers or a sink, and 0 tokens")

        if decode and self.stream is not None:
            positions_BL, mask, slot, key_positions_BS = self._stream_layout(B, L, fill_prefix)
            causal = False
        else:
            positions_BL, mask, causal, slot = self._layout(B, L, segments_BL, decode, fill_prefix)
            key_positions_BS = None

        embedding = param_with_axes(
            self,
            "embedding",
            nn.initializers.normal(0.02),
            (cfg.vocab_size, cfg.d_model),
            ("vocab", "embed"),
            param_dtype,
        )
        x_BLD = self._embed_tokens(embedding, tokens_BL, positions_BL)
        with_prefix = P > 0 and (fill_prefix or not decode)
        if with_prefix:  # [sink, registers, tokens] at positions [-P..-1, 0..L-1]
            prefix_PD = self._prefix_vectors().astype(RESIDUAL_DTYPE)
            x_BLD = jnp.concatenate([jnp.broadcast_to(prefix_PD, (B, P, cfg.d_model)), x_BLD], 1)
            positions_BL = _prefix_positions(B, P, positions_BL)
        x_BLD = nn.Dropout(cfg.dropout)(x_BLD, deterministic=not train)

        block_cls = block_class(cfg.remat, decode)
        cache_slots = P + self.stream.size if self.stream is not None else 0
        for i in range(cfg.num_layers):
            # Activation layout at block boundaries (a no-op without a mesh in context).
            x_BLD = nn.with_logical_constraint(x_BLD, ACTIVATION_AXES)
            x_BLD = block_cls(cfg, cache_slots, name=f"block_{i}")(
                x_BLD, mask, positions_BL, causal, train, decode, slot, key_positions_BS
            )
            self.sow("intermediates", "hidden_states", x_BLD)  # probes (no-op otherwise)
        if with_prefix:  # the registers' and sink's outputs are discarded
            x_BLD = x_BLD[:, P:]
        x_BLD = Norm(cfg.norm, name="final_norm", dtype=dtype, param_dtype=param_dtype)(x_BLD)
        f32 = f32_accumulation(dtype)
        if cfg.tie_embeddings:
            x_ND = x_BLD.reshape(B * L, cfg.d_model)
            logits = jnp.dot(x_ND, embedding.T.astype(dtype), preferred_element_type=f32)
        else:
            logits = Dense(
                cfg.vocab_size,
                ("embed", "vocab"),
                False,
                name="lm_head",
                dtype=dtype,
                param_dtype=param_dtype,
                out_dtype=f32,
            )(x_BLD)
        logits_BLV = logits.reshape(B, L, cfg.vocab_size)
        chex.assert_shape(logits_BLV, (B, L, cfg.vocab_size))
        return logits_BLV

    def _layout(self, B, L, segments_BL, decode, fill_prefix):
        """(token positions, extra mask, causal flag, cache slot) of this call.

        Decoding: positions continue from the cache's ``index`` (which counts tokens
        only), the keys are the P prefix slots (positions -P..-1) and max_len token
        slots, and this call writes at slot P + index (slot 0 when filling the prefix).
        """
        cfg, P = self.config, self.config.num_prefix
        if decode:
            if segments_BL is not None:
                raise ValueError("segments_BL is not supported with decode=True")
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            start = index.value
            positions_BL = jnp.broadcast_to(start + jnp.arange(L), (B, L))
            keys = jnp.broadcast_to(jnp.arange(P + cfg.max_len) - P, (B, P + cfg.max_len))
            queries = _prefix_positions(B, P, positions_BL) if fill_prefix else positions_BL
            index.value = start + L
            slot = jnp.zeros((), jnp.int32) if fill_prefix else start + P
            return positions_BL, position_causal_mask(queries, keys), False, slot
        positions_BL = jnp.broadcast_to(jnp.arange(L), (B, L))
        mask = None  # the attention applies the causal mask itself
        if segments_BL is not None:
            mask = (
                prefix_segment_mask(segments_BL, P) if P else segment_mask(segments_BL, segments_BL)
            )
        return positions_BL, mask, True, None

    def _stream_layout(self, B, L, fill_prefix):
        """(query positions, mask, write slot, key positions) of a streaming-cache call.

        One token per call (or the prefix fill); the cache's ``index`` counts the tokens
        seen, and ``cache_layout.slot_layout`` places this one.
        """
        P = self.config.num_prefix
        expected = 0 if fill_prefix else 1
        if expected != L:
            raise ValueError(f"a streaming cache takes one token per call, got {L}")
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        layout = slot_layout(self.stream, P, index.value)
        index.value = index.value + L
        key_positions_BS = jnp.broadcast_to(layout.key_positions_S, (B, layout.valid_S.size))
        if fill_prefix:  # the P prefix vectors at -P..-1, into slots 0..P-1
            queries_BL = _prefix_positions(B, P, jnp.zeros((B, 0), jnp.int32))
            slot = jnp.zeros((), jnp.int32)
        else:
            queries_BL = jnp.broadcast_to(layout.query_position, (B, 1))
            slot = layout.write_slot
        mask = position_causal_mask(queries_BL, key_positions_BS) & layout.valid_S[None, None, None]
        positions_BL = jnp.broadcast_to(layout.query_position, (B, L))
        return positions_BL, mask, slot, key_positions_BS

    def _embed_tokens(self, embedding, tokens_BL, positions_BL) -> Float[Array, "B L D"]:
        """Token embeddings plus learned or sinusoidal positions, in the residual dtype."""
        cfg = self.config
        # Gather from a table whose width is whole on every device: with ``embed`` sharded
        # over fsdp, XLA cannot turn the width-sharded gather output into the batch-sharded
        # activations and falls back to replicating everything ("involuntary full
        # rematerialization"). This is the all-gather FSDP does before any use of a
        # weight; the vocabulary stays split over ``tensor`` (a no-op without a mesh).
        table = nn.with_logical_constraint(embedding, ("vocab", None))
        x_BLD = jnp.take(table, tokens_BL, axis=0).astype(RESIDUAL_DTYPE)
        if cfg.positions == "learned":
            table = param_with_axes(
                self,
                "pos_embedding",
                nn.initializers.normal(0.02),
                (cfg.max_len, cfg.d_model),
                (None, "embed"),
                DTYPES[cfg.param_dtype],
            )
            table = nn.with_logical_constraint(table, (None, None))  # as for the tokens
            x_BLD = x_BLD + jnp.take(table, positions_BL, axis=0).astype(RESIDUAL_DTYPE)
        elif cfg.positions == "sinusoidal":
            x_BLD = x_BLD + pos_lib.sinusoidal(positions_BL, cfg.d_model)
        return x_BLD

    def _prefix_vectors(self) -> Float[Array, "P D"]:
        """The learned sink (if any) followed by the ``num_registers`` register vectors."""
        cfg = self.config
        parts = []
        for name, count in (
            ("sink_embedding", int(cfg.sink_token)),
            ("register_embedding", cfg.num_registers),
        ):
            if count:
                table = param_with_axes(
                    self,
                    name,
                    nn.initializers.normal(0.02),
                    (count, cfg.d_model),
                    (None, "embed"),
                    DTYPES[cfg.param_dtype],
                )
                parts.append(nn.with_logical_constraint(table, (None, None)))
        return jnp.concatenate(parts, axis=0)


def _prefix_positions(batch: int, num_prefix: int, positions_BL: jax.Array) -> jax.Array:
    """Positions -P..-1 of the sink and registers, in front of ``positions_BL``."""
    prefix_BP = jnp.broadcast_to(jnp.arange(num_prefix) - num_prefix, (batch, num_prefix))
    return jnp.concatenate([prefix_BP.astype(positions_BL.dtype), positions_BL], axis=1)


def flops_per_token(cfg: DecoderConfig, context: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), matmuls only.

    6 * (non-embedding matmul params + output projection) + attention scores and
    values: 12 * num_layers * context * d_model (PaLM, appendix B). Registers and the
    sink (P per sequence) run through the blocks but not the output projection, and
    lengthen every attention by P: the cost per real token grows by those P positions.
    """
    d, f, layers = cfg.d_model, cfg.ff_dim, cfg.num_layers
    per_layer = 4 * d * d + 2 * d * f  # qkv + out, mlp in + out
    if cfg.num_prefix == 0:
        matmul_params = layers * per_layer + d * cfg.vocab_size
        return 6.0 * matmul_params + 12.0 * layers * context * d
    blocks = layers * per_layer * (context + cfg.num_prefix) / context
    return 6.0 * (blocks + d * cfg.vocab_size) + 12.0 * layers * (context + cfg.num_prefix) * d
