"""T5 encoder-decoder transformer (the v1.1 layout; v1.0 through the config).

Raffel et al., 2020, https://arxiv.org/abs/1910.10683; v1.1 (gated-GELU, untied
embeddings): Shazeer, 2020, https://arxiv.org/abs/2002.05202. Pre-norm RMSNorm (no bias,
no mean subtraction), relative position biases in log buckets computed once per stack
and shared by its layers (bidirectional in the encoder, causal in the decoder), dense
layers without biases, no scaling of the attention scores (folded into the query
initialisation). Packed inputs carry segment ids and per-segment positions.

Precision follows ``models/decoder.py``: parameters in ``param_dtype``, compute in
``model.dtype``, a float32 residual stream, norms, attention softmax and logits in
float32. Decoding: ``encode`` once, ``cross_keys_values`` once per layer, then ``decode``
with ``decode=True`` against a self-attention KV cache (``cache`` collection).
"""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from nlpjax.models import positions as pos_lib
from nlpjax.models.attention import (
    IMPLEMENTATIONS,
    causal_mask,
    choose_implementation,
    combine_masks,
    position_causal_mask,
    reference_attention,
    segment_mask,
)
from nlpjax.models.layers import ACTIVATIONS, Dense, Norm, param_with_axes
from nlpjax.models.model_config import ModelConfig
from nlpjax.precision import DTYPE_CHOICES, DTYPES, RESIDUAL_DTYPE, f32_accumulation, resolve_dtype
from nlpjax.types import Array, Float, Int

# model.feed_forward -> (activation, gated): v1.1 gates a GELU, v1.0 is a plain ReLU MLP.
FEED_FORWARDS = {
    "gated-gelu": ("gelu_tanh", True),
    "gated-silu": ("silu", True),
    "relu": ("relu", False),
}
ACTIVATION_AXES = ("act_batch", "act_length", "act_embed")
CrossKV = tuple[tuple[jax.Array, jax.Array], ...]  # per decoder layer: (k_BHSK, v_BHSK)


@dataclasses.dataclass(frozen=True)
class T5Config(ModelConfig):
    """Shape and options of a T5. ``vocab_size=0`` means "from the tokenizer".

    ``max_target_len`` is the decoder's KV-cache length (the longest decoded output);
    relative positions put no limit on the source or the training target length.
    """

    vocab_size: int = 0
    d_model: int = 256
    num_heads: int = 4
    head_dim: int = 64  # T5's d_kv; num_heads * head_dim need not equal d_model
    d_ff: int = 1024
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    feed_forward: str = "gated-gelu"  # gated-gelu (v1.1) | relu (v1.0) | gated-silu
    relative_buckets: int = 32
    relative_max_distance: int = 128
    dropout: float = 0.0
    tie_embeddings: bool = False  # v1.0 ties (and scales the logits by d_model**-0.5)
    norm_epsilon: float = 1e-6
    max_target_len: int = 64
    dtype: str = "auto"  # compute: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | ...
    param_dtype: str = "float32"
    attention: str = "auto"  # auto | reference | xla (cudnn has no bias: falls back)

    # How the model computes, not what it is: a checkpoint restores under any of these.
    RUNTIME_FIELDS = ("dtype", "attention")

    def __post_init__(self):
        check = self.check

        check(self.vocab_size >= 0, "model.vocab_size must be >= 0 (0: from the tokenizer)")
        for key in ("d_model", "num_heads", "head_dim", "d_ff", "max_target_len"):
            check(getattr(self, key) > 0, f"model.{key} must be > 0, got {getattr(self, key)}")
        layers = (self.num_encoder_layers, self.num_decoder_layers)
        check(min(layers) > 0, "model.num_encoder_layers/num_decoder_layers must be > 0")
        check(
            self.feed_forward in FEED_FORWARDS,
            f"model.feed_forward must be one of {tuple(FEED_FORWARDS)}, got {self.feed_forward!r}",
        )
        check(
            self.relative_buckets >= 4 and self.relative_buckets % 2 == 0,
            "model.relative_buckets must be even and >= 4 (T5: 32)",
        )
        check(
            self.relative_max_distance > self.relative_buckets // 2,
            "model.relative_max_distance must exceed model.relative_buckets / 2 (T5: 128)",
        )
        check(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")
        check(self.norm_epsilon > 0, "model.norm_epsilon must be > 0")
        check(self.dtype in DTYPE_CHOICES, f"model.dtype must be one of {DTYPE_CHOICES}")
        check(self.param_dtype in DTYPES, f"model.param_dtype must be one of {tuple(DTYPES)}")
        check(self.attention in IMPLEMENTATIONS, f"model.attention: one of {IMPLEMENTATIONS}")

    def types(self) -> dict:
        """``dtype``/``param_dtype`` keyword arguments of the layers."""
        return {"dtype": resolve_dtype(self.dtype), "param_dtype": DTYPES[self.param_dtype]}


def _normal(stddev: float):
    return nn.initializers.normal(stddev)


class KVCache(nn.Module):
    """A dense (B, H, max_len, K) key/value cache written at ``index``."""

    max_len: int

    @nn.compact
    def __call__(self, k_BHLK, v_BHLK, index):
        B, H, _, K = k_BHLK.shape
        shape = (B, H, self.max_len, K)
        cached_k = self.variable("cache", "k", jnp.zeros, shape, k_BHLK.dtype)
        cached_v = self.variable("cache", "v", jnp.zeros, shape, v_BHLK.dtype)
        start = (0, 0, index, 0)
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BHLK, start)
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BHLK, start)
        return cached_k.value, cached_v.value


class DecodeIndex(nn.Module):
    """The decoder's KV-cache write index: returns where this call starts, then advances."""

    @nn.compact
    def __call__(self, length: int) -> jax.Array:
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        start = index.value
        index.value = start + length
        return start


class T5Attention(nn.Module):
    """Multi-head attention with separate q/k/v/o kernels (self- or cross-attention).

    Scores are ``q k^T + bias`` without a 1/sqrt(K) factor (T5 folds it into the query
    initialisation). ``project_kv`` gives the keys and values of a memory once
    (cross-attention reuses them at every decoding step).
    """

    config: T5Config
    max_len: int = 0  # self-attention KV-cache length (decoder only)

    def setup(self):
        cfg = self.config
        D, H, K = cfg.d_model, cfg.num_heads, cfg.head_dim
        pdt = DTYPES[cfg.param_dtype]
        axes_in, axes_out = ("embed", "heads", "kv"), ("heads", "kv", "embed")
        self.q_kernel = param_with_axes(
            self, "q_kernel", _normal((D * K) ** -0.5), (D, H, K), axes_in, pdt
        )
        self.k_kernel = param_with_axes(self, "k_kernel", _normal(D**-0.5), (D, H, K), axes_in, pdt)
        self.v_kernel = param_with_axes(self, "v_kernel", _normal(D**-0.5), (D, H, K), axes_in, pdt)
        self.out_kernel = param_with_axes(
            self, "out_kernel", _normal((H * K) ** -0.5), (H, K, D), axes_out, pdt
        )
        self.weights_dropout = nn.Dropout(cfg.dropout)
        if self.max_len:
            self.cache = KVCache(self.max_len)

    def _project(self, x_BLD, kernel) -> Float[Array, "B H L K"]:
        B, L, D = x_BLD.shape
        dtype = resolve_dtype(self.config.dtype)
        H, K = kernel.shape[1:]
        y = jnp.dot(x_BLD.reshape(B * L, D).astype(dtype), kernel.reshape(D, H * K).astype(dtype))
        return y.reshape(B, L, H, K).transpose(0, 2, 1, 3)

    def project_kv(self, memory_BSD: Float[Array, "B S D"]) -> tuple[jax.Array, jax.Array]:
        """(k_BHSK, v_BHSK) of a memory (the encoder output for cross-attention)."""
        return self._project(memory_BSD, self.k_kernel), self._project(memory_BSD, self.v_kernel)

    def __call__(
        self,
        x_BLD: Float[Array, "B L D"],
        kv: tuple[jax.Array, jax.Array] | None,
        mask: jax.Array | None,
        bias: Float[Array, "#B H L S"] | None,
        *,
        train: bool = False,
        cache_index: jax.Array | None = None,
    ) -> Float[Array, "B L D"]:
        """Attends from ``x_BLD`` to ``kv`` (None: to itself; through the KV cache when
        ``cache_index`` is given). ``mask``/``bias`` broadcast to (B, H, L, S)."""
        cfg = self.config
        dtype = resolve_dtype(cfg.dtype)
        B, L, D = x_BLD.shape
        q_BHLK = self._project(x_BLD, self.q_kernel)
        k_BHSK, v_BHSK = self.project_kv(x_BLD) if kv is None else kv
        if cache_index is not None:
            k_BHSK, v_BHSK = self.cache(k_BHSK, v_BHSK, cache_index)
        impl = choose_implementation(
            cfg.attention,
            dtype=dtype,
            head_dim=cfg.head_dim,
            decode=cache_index is not None,
            extra_mask=True,  # the position bias is a dense extra term
            dropout=train and cfg.dropout > 0,
        )
        if impl == "reference":

            def on_weights(weights):
                self.sow("intermediates", "attention_weights", weights)
                return self.weights_dropout(weights, deterministic=not train)

            out_BHLK = reference_attention(
                q_BHLK, k_BHSK, v_BHSK, mask, bias=bias, dtype=dtype, on_weights=on_weights
            )
        else:  # jax.nn.dot_product_attention on (B, L, H, K)
            out_BLHK = jax.nn.dot_product_attention(
                q_BHLK.transpose(0, 2, 1, 3),
                k_BHSK.transpose(0, 2, 1, 3),
                v_BHSK.transpose(0, 2, 1, 3),
                bias=None if bias is None else bias.astype(dtype),
                mask=mask,
                scale=1.0,
                implementation=impl,
            )
            out_BHLK = out_BLHK.transpose(0, 2, 1, 3)
        H, K = cfg.num_heads, cfg.head_dim
        out_NF = out_BHLK.transpose(0, 2, 1, 3).reshape(B * L, H * K)
        y = jnp.dot(out_NF, self.out_kernel.reshape(H * K, D).astype(dtype))
        return y.reshape(B, L, D)


class RelativeBias(nn.Module):
    """Per-head biases of the relative position buckets: (#B, H, Lq, Lk), float32."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, q_positions_BL: Int[Array, "B L"], k_positions_BS: Int[Array, "B S"]):
        cfg = self.config
        table = param_with_axes(
            self,
            "rel_embedding",
            _normal(cfg.d_model**-0.5),
            (cfg.relative_buckets, cfg.num_heads),
            (None, "heads"),
            DTYPES[cfg.param_dtype],
        )
        relative_BLS = k_positions_BS[:, None, :] - q_positions_BL[:, :, None]
        buckets_BLS = pos_lib.relative_position_bucket(
            relative_BLS,
            bidirectional=self.bidirectional,
            num_buckets=cfg.relative_buckets,
            max_distance=cfg.relative_max_distance,
        )
        bias_BLSH = jnp.take(table.astype(jnp.float32), buckets_BLS, axis=0)
        return bias_BLSH.transpose(0, 3, 1, 2)


class FeedForward(nn.Module):
    """Gated (``act(x W0) * (x W1)``) or plain (``act(x W)``) MLP without biases."""

    config: T5Config

    @nn.compact
    def __call__(self, x_ND: Float[Array, "N D"], train: bool) -> Float[Array, "N D"]:
        cfg = self.config
        activation, gated = FEED_FORWARDS[cfg.feed_forward]
        inner = {
            "axes": ("embed", "mlp"),
            "use_bias": False,
            "kernel_init": _normal(cfg.d_model**-0.5),
        }
        if gated:
            h = ACTIVATIONS[activation](Dense(cfg.d_ff, name="wi_0", **inner, **cfg.types())(x_ND))
            h = h * Dense(cfg.d_ff, name="wi_1", **inner, **cfg.types())(x_ND)
        else:
            h = ACTIVATIONS[activation](Dense(cfg.d_ff, name="wi", **inner, **cfg.types())(x_ND))
        h = nn.Dropout(cfg.dropout)(h, deterministic=not train)
        out_init = _normal(cfg.d_ff**-0.5)
        return Dense(cfg.d_model, ("mlp", "embed"), False, out_init, name="wo", **cfg.types())(h)


def _norm(cfg: T5Config, name: str) -> Norm:
    return Norm("rmsnorm", cfg.norm_epsilon, name=name, **cfg.types())


class EncoderLayer(nn.Module):
    """x + Attn(Norm(x)); x + FF(Norm(x)) (dropout on each branch)."""

    config: T5Config

    @nn.compact
    def __call__(self, x_BSD, mask, bias, train: bool):
        cfg = self.config
        drop = nn.Dropout(cfg.dropout)
        h = T5Attention(cfg, name="attn")(
            _norm(cfg, "attn_norm")(x_BSD), None, mask, bias, train=train
        )
        x_BSD = x_BSD + drop(h, deterministic=not train)
        h = FeedForward(cfg, name="mlp")(_norm(cfg, "mlp_norm")(x_BSD), train)
        return x_BSD + drop(h, deterministic=not train)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder, feed-forward; all pre-norm."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.self_attn = T5Attention(cfg, max_len=cfg.max_target_len)
        self.cross_attn = T5Attention(cfg)
        self.mlp = FeedForward(cfg)
        self.self_attn_norm, self.cross_attn_norm = (
            _norm(cfg, "self_attn_norm"),
            _norm(cfg, "cross_attn_norm"),
        )
        self.mlp_norm = _norm(cfg, "mlp_norm")
        self.drop = nn.Dropout(cfg.dropout)

    def cross_kv(self, encoded_BSD):
        return self.cross_attn.project_kv(encoded_BSD)

    def __call__(self, x_BTD, cross_kv, self_mask, self_bias, cross_mask, train, cache_index):
        deterministic = not train
        h = self.self_attn(
            self.self_attn_norm(x_BTD),
            None,
            self_mask,
            self_bias,
            train=train,
            cache_index=cache_index,
        )
        x_BTD = x_BTD + self.drop(h, deterministic=deterministic)
        h = self.cross_attn(self.cross_attn_norm(x_BTD), cross_kv, cross_mask, None, train=train)
        x_BTD = x_BTD + self.drop(h, deterministic=deterministic)
        h = self.mlp(self.mlp_norm(x_BTD), train)
        return x_BTD + self.drop(h, deterministic=deterministic)


def default_positions(tokens_BL, positions_BL):
    """Given per-segment positions, or 0..L-1 shared by the batch (shape (1, L))."""
    if positions_BL is not None:
        return positions_BL
    return jnp.arange(tokens_BL.shape[1])[None, :]


def encoder_segments(tokens_BS, segments_BS, pad_id: int = 0):
    """Given segment ids, or 1 for tokens and 0 for padding (``pad_id``)."""
    if segments_BS is not None:
        return segments_BS
    return (tokens_BS != pad_id).astype(jnp.int32)


class T5(nn.Module):
    """T5: source tokens (B, S) and decoder input tokens (B, T) -> logits (B, T, V).

    Token id 0 is padding (and the decoder's start token, as in T5). Without segment ids,
    source padding is masked out; with them (packing), every attention stays within a
    segment and relative positions come from the given per-segment positions.
    """

    config: T5Config

    def setup(self):
        cfg = self.config
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size is 0: set it from the tokenizer before init")
        self.embedding = param_with_axes(
            self,
            "embedding",
            _normal(1.0),
            (cfg.vocab_size, cfg.d_model),
            ("vocab", "embed"),
            DTYPES[cfg.param_dtype],
        )
        self.encoder_bias = RelativeBias(cfg, bidirectional=True)
        self.encoder_layers = [
            EncoderLayer(cfg, name=f"encoder_{i}") for i in range(cfg.num_encoder_layers)
        ]
        self.encoder_norm = _norm(cfg, "encoder_norm")
        self.decoder_bias = RelativeBias(cfg, bidirectional=False)
        self.decoder_layers = [
            DecoderLayer(cfg, name=f"decoder_{i}") for i in range(cfg.num_decoder_layers)
        ]
        self.decoder_norm = _norm(cfg, "decoder_norm")
        self.decode_index = DecodeIndex()
        if not cfg.tie_embeddings:
            self.lm_head = Dense(
                cfg.vocab_size,
                ("embed", "vocab"),
                False,
                _normal(cfg.d_model**-0.5),
                out_dtype=f32_accumulation(resolve_dtype(cfg.dtype)),
                **cfg.types(),
            )
        self.drop = nn.Dropout(cfg.dropout)

    def _embed(self, tokens_BL, train):
        table = nn.with_logical_constraint(self.embedding, ("vocab", None))
        x_BLD = jnp.take(table, tokens_BL, axis=0).astype(RESIDUAL_DTYPE)
        return self.drop(x_BLD, deterministic=not train)

    def encode(
        self,
        tokens_BS: Int[Array, "B S"],
        *,
        segments_BS: Int[Array, "B S"] | None = None,
        positions_BS: Int[Array, "B S"] | None = None,
        train: bool = False,
    ) -> Float[Array, "B S D"]:
        """The encoder output (float32): bidirectional within a segment."""
        chex.assert_rank(tokens_BS, 2)
        segments_BS = encoder_segments(tokens_BS, segments_BS)
        positions = default_positions(tokens_BS, positions_BS)
        mask = segment_mask(segments_BS, segments_BS)
        bias = self.encoder_bias(positions, positions)  # once, shared by every layer
        x_BSD = self._embed(tokens_BS, train)
        for layer in self.encoder_layers:
            x_BSD = nn.with_logical_constraint(x_BSD, ACTIVATION_AXES)
            x_BSD = layer(x_BSD, mask, bias, train)
        x_BSD = self.encoder_norm(x_BSD).astype(RESIDUAL_DTYPE)
        return self.drop(x_BSD, deterministic=not train)

    def cross_keys_values(self, encoded_BSD: Float[Array, "B S D"]) -> CrossKV:
        """Every decoder layer's cross-attention keys and values: computed once per input."""
        return tuple(layer.cross_kv(encoded_BSD) for layer in self.decoder_layers)

    def decode(
        self,
        tokens_BT: Int[Array, "B T"],
        cross_kv: CrossKV,
        encoder_segments_BS: Int[Array, "B S"],
        *,
        segments_BT: Int[Array, "B T"] | None = None,
        positions_BT: Int[Array, "B T"] | None = None,
        train: bool = False,
        decode: bool = False,
    ) -> Float[Array, "B T V"]:
        """Next-token logits (float32) of the decoder inputs, attending to the encoder.

        Args:
          tokens_BT: decoder inputs (targets shifted right, starting with 0).
          cross_kv: ``cross_keys_values`` of the encoder output.
          encoder_segments_BS: the source's segment ids (0 = padding, never attended).
          segments_BT: packed target segment ids (must match the source's segment ids).
          positions_BT: per-segment target positions.
          train: dropout on.
          decode: continue from (and update) the KV cache in the ``cache`` collection.
        """
        cfg = self.config
        chex.assert_rank(tokens_BT, 2)
        B, T = tokens_BT.shape
        queries_BT = jnp.ones_like(tokens_BT) if segments_BT is None else segments_BT
        cross_mask = segment_mask(queries_BT, encoder_segments_BS)
        if decode:
            if segments_BT is not None:
                raise ValueError("segments_BT is not supported with decode=True")
            start = self.decode_index(T)
            q_positions = start + jnp.arange(T)[None, :]
            k_positions = jnp.arange(cfg.max_target_len)[None, :]
            self_mask = position_causal_mask(q_positions, k_positions)
        else:
            start = None
            q_positions = k_positions = default_positions(tokens_BT, positions_BT)
            self_mask = combine_masks(
                causal_mask(T),
                None if segments_BT is None else segment_mask(segments_BT, segments_BT),
            )
        self_bias = self.decoder_bias(q_positions, k_positions)  # once, shared by every layer
        x_BTD = self._embed(tokens_BT, train)
        for layer, kv in zip(self.decoder_layers, cross_kv, strict=True):
            x_BTD = nn.with_logical_constraint(x_BTD, ACTIVATION_AXES)
            x_BTD = layer(x_BTD, kv, self_mask, self_bias, cross_mask, train, start)
        x_BTD = self.drop(self.decoder_norm(x_BTD), deterministic=not train)
        return self._logits(x_BTD)

    def _logits(self, x_BTD) -> Float[Array, "B T V"]:
        cfg = self.config
        B, T, D = x_BTD.shape
        if cfg.tie_embeddings:  # T5 v1.0: rescale before the shared embedding
            dtype = resolve_dtype(cfg.dtype)
            x_ND = (x_BTD * D**-0.5).reshape(B * T, D).astype(dtype)
            logits = jnp.dot(
                x_ND, self.embedding.T.astype(dtype), preferred_element_type=f32_accumulation(dtype)
            )
        else:
            logits = self.lm_head(x_BTD.reshape(B * T, D))
        logits_BTV = logits.reshape(B, T, cfg.vocab_size).astype(jnp.float32)
        chex.assert_shape(logits_BTV, (B, T, cfg.vocab_size))
        return logits_BTV

    def __call__(
        self,
        source_BS: Int[Array, "B S"],
        decoder_inputs_BT: Int[Array, "B T"],
        *,
        source_segments_BS: Int[Array, "B S"] | None = None,
        source_positions_BS: Int[Array, "B S"] | None = None,
        target_segments_BT: Int[Array, "B T"] | None = None,
        target_positions_BT: Int[Array, "B T"] | None = None,
        train: bool = False,
    ) -> Float[Array, "B T V"]:
        """Teacher-forced logits: encode the source, decode the shifted targets."""
        encoded = self.encode(
            source_BS, segments_BS=source_segments_BS, positions_BS=source_positions_BS, train=train
        )
        return self.decode(
            decoder_inputs_BT,
            self.cross_keys_values(encoded),
            encoder_segments(source_BS, source_segments_BS),
            segments_BT=target_segments_BT,
            positions_BT=target_positions_BT,
            train=train,
        )


def shift_right(
    targets_BT: Int[Array, "B T"], segments_BT: Int[Array, "B T"] | None = None, start_id: int = 0
) -> Int[Array, "B T"]:
    """Decoder inputs: targets moved one step right, ``start_id`` at each segment's start."""
    shifted = jnp.concatenate(
        [jnp.full_like(targets_BT[:, :1], start_id), targets_BT[:, :-1]], axis=1
    )
    if segments_BT is None:
        return shifted
    starts = jnp.concatenate(
        [jnp.ones_like(segments_BT[:, :1], bool), segments_BT[:, 1:] != segments_BT[:, :-1]], axis=1
    )
    return jnp.where(starts, start_id, shifted)


def token_losses(
    logits_BTV: Float[Array, "B T V"],
    targets_BT: Int[Array, "B T"],
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> tuple[Float[Array, "B T"], Float[Array, "B T"]]:
    """(loss_BT, z_BT): cross-entropy per token with optional label smoothing and z-loss.

    Label smoothing spreads ``label_smoothing`` of the target mass uniformly over the
    other ids; the loss is offset by the smoothed targets' entropy, so a perfect
    prediction scores 0 (as T5X does). The z-loss ``z_loss * logsumexp(logits)**2``
    (PaLM, https://arxiv.org/abs/2204.02311) keeps the softmax normaliser near 1; it is
    included in ``loss_BT`` and also returned alone for logging. Weight and average the
    tokens outside (padding gets weight 0).
    """
    logits_BTV = logits_BTV.astype(jnp.float32)
    V = logits_BTV.shape[-1]
    lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
    log_probs = logits_BTV - lse_BT[..., None]
    nll_BT = -jnp.take_along_axis(log_probs, targets_BT[..., None], axis=-1)[..., 0]
    loss_BT = nll_BT
    if label_smoothing > 0:
        on, off = 1.0 - label_smoothing, label_smoothing / (V - 1)
        others_BT = -jnp.sum(log_probs, axis=-1) - nll_BT  # minus the other ids' log-probs
        entropy = -(on * jnp.log(on) + (V - 1) * off * jnp.log(off + 1e-20))
        loss_BT = on * nll_BT + off * others_BT - entropy
    z_BT = z_loss * jnp.square(lse_BT)
    return loss_BT + z_BT, z_BT


def flops_per_token(cfg: T5Config, source_len: int, target_len: int) -> float:
    """Training FLOPs per (source + target) token, matmuls only: 6 x (parameters applied
    to each token) plus 3 x the attention scores and values (4 x width x keys per query)."""
    d, f, hk = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.head_dim
    ff = (3 if FEED_FORWARDS[cfg.feed_forward][1] else 2) * d * f
    per_source = cfg.num_encoder_layers * (4 * d * hk + ff) + cfg.num_decoder_layers * 2 * d * hk
    per_target = cfg.num_decoder_layers * (6 * d * hk + ff) + d * cfg.vocab_size
    keys = cfg.num_encoder_layers * source_len**2 + cfg.num_decoder_layers * (
        target_len**2 + target_len * source_len
    )
    total = 6 * (per_source * source_len + per_target * target_len) + 3 * 4 * hk * keys
    return total / (source_len + target_len)
