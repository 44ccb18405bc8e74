"""Hugging Face ``transformers`` T5 checkpoints <-> nlpjax T5 parameters (v1.0 and v1.1).

A Hugging Face T5 directory holds ``config.json`` and the weights as ``model.safetensors``
or ``pytorch_model.bin`` (or shards of either, with an ``.index.json``). Safetensors are
read with the ``safetensors`` package's numpy API, ``.bin`` files with torch: both come
with the ``hf`` extra (``pip install 'nlpjax[hf]'``). Layouts: v1.0 (ReLU feed-forward,
the output layer tied to the embedding and its input scaled by d_model**-0.5) and v1.1 /
mT5 (gated-GELU, an untied ``lm_head``, no scaling). Every tensor maps to one nlpjax
parameter (transposed or reshaped, never rescaled), so a round trip is exact.

Token ids: nlpjax puts ``<pause>``, ``<sink>`` and registers after the SentencePiece pieces
and the sentinels at the very top (``data.special_tokens``); Hugging Face puts its
``extra_ids`` sentinels right after the pieces and leaves the rest of the (padded)
vocabulary unused. ``VocabLayout`` is the permutation of embedding and output rows
between the two (the identity when the directory has no SentencePiece model).
"""

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nlpjax.errors import DataError
from nlpjax.models.t5 import T5Config

HF_EXTRA = "pip install 'nlpjax[hf]'"
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
SPM_FILE = "spiece.model"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
T5_MODEL_TYPES = ("t5", "mt5")
# Hugging Face feed_forward_proj -> model.feed_forward
FEED_FORWARDS = {"relu": "relu", "gated-gelu": "gated-gelu", "gated-silu": "gated-silu"}
# Tensors a checkpoint may hold that carry nothing of their own: tied copies of
# shared.weight, and a cross-attention bias T5 never uses.
IGNORED = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)

Params = dict  # nested {name: {...: np.ndarray}}, as model.init()["params"] after unboxing


def _missing_package(package: str, why: str) -> DataError:
    return DataError(f"{why} needs the '{package}' package: {HF_EXTRA}")


# -- the mapping -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One Hugging Face tensor and the nlpjax parameter it becomes.

    ``kind``: ``dense`` (HF (out, in) = kernel.T), ``q`` (HF (H*K, D) = (D, H, K) kernel),
    ``o`` (HF (D, H*K) = (H, K, D) kernel), ``copy``, ``rows`` (vocabulary rows, permuted),
    ``head`` (the output layer: HF (V, D) = (D, V) kernel.T, rows permuted).
    """

    name: str
    path: tuple[str, ...]
    kind: str


def _attention(hf: str, ours: tuple[str, ...]) -> list[Tensor]:
    kinds = {"q": "q", "k": "q", "v": "q", "o": "o"}
    names = {"q": "q_kernel", "k": "k_kernel", "v": "v_kernel", "o": "out_kernel"}
    return [Tensor(f"{hf}.{p}.weight", (*ours, names[p]), kinds[p]) for p in "qkvo"]


def _feed_forward(hf: str, ours: tuple[str, ...], gated: bool) -> list[Tensor]:
    inner = ("wi_0", "wi_1") if gated else ("wi",)
    return [Tensor(f"{hf}.{w}.weight", (*ours, w, "kernel"), "dense") for w in (*inner, "wo")]


def _norm(hf: str, ours: tuple[str, ...]) -> Tensor:
    return Tensor(f"{hf}.weight", (*ours, "scale"), "copy")


def tensor_map(cfg: T5Config) -> list[Tensor]:
    """Every tensor of a Hugging Face T5 with ``cfg``'s shape, in checkpoint order."""
    gated = cfg.feed_forward != "relu"
    out = [Tensor("shared.weight", ("embedding",), "rows")]
    for i in range(cfg.num_encoder_layers):
        hf, ours = f"encoder.block.{i}.layer", f"encoder_{i}"
        out += _attention(f"{hf}.0.SelfAttention", (ours, "attn"))
        out.append(_norm(f"{hf}.0.layer_norm", (ours, "attn_norm")))
        out += _feed_forward(f"{hf}.1.DenseReluDense", (ours, "mlp"), gated)
        out.append(_norm(f"{hf}.1.layer_norm", (ours, "mlp_norm")))
    for i in range(cfg.num_decoder_layers):
        hf, ours = f"decoder.block.{i}.layer", f"decoder_{i}"
        out += _attention(f"{hf}.0.SelfAttention", (ours, "self_attn"))
        out.append(_norm(f"{hf}.0.layer_norm", (ours, "self_attn_norm")))
        out += _attention(f"{hf}.1.EncDecAttention", (ours, "cross_attn"))
        out.append(_norm(f"{hf}.1.layer_norm", (ours, "cross_attn_norm")))
        out += _feed_forward(f"{hf}.2.DenseReluDense", (ours, "mlp"), gated)
        out.append(_norm(f"{hf}.2.layer_norm", (ours, "mlp_norm")))
    for stack in ("encoder", "decoder"):
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        out.append(Tensor(bias, (f"{stack}_bias", "rel_embedding"), "copy"))
        out.append(_norm(f"{stack}.final_layer_norm", (f"{stack}_norm",)))
    if not cfg.tie_embeddings:
        out.append(Tensor("lm_head.weight", ("lm_head", "kernel"), "head"))
    return out


@dataclasses.dataclass(frozen=True)
class VocabLayout:
    """Which Hugging Face row each nlpjax token id uses: ``hf_of_ours[i]``.

    With a SentencePiece model of P pieces, S sentinels and V rows: ids below P are the
    same; nlpjax's reserved ids P..V-S-1 use HF's unused rows P+S..V-1, and nlpjax's
    sentinels V-S..V-1 (``<extra_id_{S-1}>``..``<extra_id_0>``) use HF's P..P+S-1 (the same
    sentinels, in the same order). A rotation of the rows past the pieces.
    """

    vocab_size: int
    num_pieces: int = -1  # -1: no tokenizer, the identity
    num_sentinels: int = 0

    @property
    def hf_of_ours(self) -> np.ndarray:
        V, P, S = self.vocab_size, self.num_pieces, self.num_sentinels
        if P < 0:
            return np.arange(V)
        return np.concatenate([np.arange(P), np.arange(P + S, V), np.arange(P, P + S)])

    @property
    def ours_of_hf(self) -> np.ndarray:
        return np.argsort(self.hf_of_ours)


def _to_ours(t: Tensor, x: np.ndarray, cfg: T5Config, layout: VocabLayout) -> np.ndarray:
    H, K, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    if t.kind == "q":
        return x.T.reshape(D, H, K)
    if t.kind == "o":
        return x.T.reshape(H, K, D)
    if t.kind == "dense":
        return x.T
    if t.kind == "rows":
        return x[layout.hf_of_ours]
    if t.kind == "head":
        return x[layout.hf_of_ours].T
    return x


def _to_hf(t: Tensor, x: np.ndarray, cfg: T5Config, layout: VocabLayout) -> np.ndarray:
    H, K, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    if t.kind == "q":
        return x.reshape(D, H * K).T
    if t.kind == "o":
        return x.reshape(H * K, D).T
    if t.kind == "dense":
        return x.T
    if t.kind == "rows":
        return x[layout.ours_of_hf]
    if t.kind == "head":
        return x.T[layout.ours_of_hf]
    return x


def hf_shape(t: Tensor, cfg: T5Config) -> tuple[int, ...]:
    """The shape Hugging Face stores ``t`` in for ``cfg``."""
    D, F, V, HK = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.num_heads * cfg.head_dim
    if t.kind == "q":
        return (HK, D)
    if t.kind == "o":
        return (D, HK)
    if t.kind in ("rows", "head"):
        return (V, D)
    if t.kind == "dense":
        return (D, F) if t.path[-2] == "wo" else (F, D)
    if t.path[-1] == "rel_embedding":
        return (cfg.relative_buckets, cfg.num_heads)
    return (D,)


# -- config ----------------------------------------------------------------------------------


def scales_output(hf_config: dict) -> bool:
    """Whether HF multiplies the decoder output by d_model**-0.5 (v1.0): transformers 5
    writes ``scale_decoder_outputs``; earlier versions read it from ``tie_word_embeddings``."""
    if "scale_decoder_outputs" in hf_config:
        return bool(hf_config["scale_decoder_outputs"])
    return hf_config.get("tie_word_embeddings", True) is not False


def t5_config_from_hf(hf: dict, where: str, *, untied_head: bool) -> T5Config:
    """The ``T5Config`` of a Hugging Face T5 config dict; another architecture, or a
    combination nlpjax's T5 cannot express, is a ``DataError`` naming ``where``."""
    model_type = hf.get("model_type")
    if model_type not in T5_MODEL_TYPES:
        archs = ", ".join(hf.get("architectures") or []) or "none listed"
        raise DataError(
            f"{where}: model_type is {model_type!r} (architectures: {archs}), not a T5; "
            f"--from=hf-t5 reads model_type {' or '.join(T5_MODEL_TYPES)}"
        )
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in FEED_FORWARDS:
        raise DataError(
            f"{where}: feed_forward_proj {proj!r} is not supported; nlpjax's T5 has "
            f"{', '.join(FEED_FORWARDS)}"
        )
    scaled = scales_output(hf)
    if scaled and untied_head:
        raise DataError(
            f"{where}: an untied lm_head with the v1.0 output scaling (tie_word_embeddings "
            "true) is not a layout nlpjax's T5 has (v1.0 ties, v1.1 unties without scaling)"
        )
    layers = hf.get("num_layers", 6)
    return T5Config(
        vocab_size=hf.get("vocab_size", 32128),
        d_model=hf.get("d_model", 512),
        num_heads=hf.get("num_heads", 8),
        head_dim=hf.get("d_kv", 64),
        d_ff=hf.get("d_ff", 2048),
        num_encoder_layers=layers,
        num_decoder_layers=hf.get("num_decoder_layers") or layers,
        feed_forward=FEED_FORWARDS[proj],
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        dropout=hf.get("dropout_rate", 0.1),
        tie_embeddings=scaled,
        norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
    )


def hf_config_from_t5(cfg: T5Config) -> dict:
    """The Hugging Face ``config.json`` of ``cfg`` (read by transformers 4 and 5)."""
    tied = cfg.tie_embeddings
    proj = {v: k for k, v in FEED_FORWARDS.items()}[cfg.feed_forward]
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.head_dim,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_buckets,
        "relative_attention_max_distance": cfg.relative_max_distance,
        "dropout_rate": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_epsilon,
        "feed_forward_proj": proj,
        "tie_word_embeddings": tied,
        "scale_decoder_outputs": tied,
        "is_encoder_decoder": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "dtype": "float32",
    }


# -- reading and writing the weights ---------------------------------------------------------


def _read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise _missing_package("safetensors", f"reading {files[0]}") from None
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _read_torch(files: list[Path]) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise _missing_package("torch", f"reading {files[0]}") from None
    out = {}
    for f in files:
        try:
            state = torch.load(str(f), map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged or non-PyTorch file
            raise DataError(f"{f}: not a readable PyTorch state dict ({e})") from None
        for k, v in state.items():
            out[k] = v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
    return out


def _shards(directory: Path, single: str) -> list[Path]:
    """``[directory/single]``, or the shards its ``.index.json`` lists, or []."""
    if (directory / single).is_file():
        return [directory / single]
    index = directory / f"{single}.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / n for n in names]
    return []


def read_hf_tensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint in ``directory`` (safetensors preferred); floating
    tensors (float16, bfloat16, float32) widened exactly to float32."""
    readers: tuple[tuple[str, Callable], ...] = (
        (SAFETENSORS_FILE, _read_safetensors),
        (TORCH_FILE, _read_torch),
    )
    for single, reader in readers:
        files = _shards(directory, single)
        if files:
            tensors = reader(files)  # bfloat16 reads as ml_dtypes' (jax registers it)
            return {
                k: v if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32)
                for k, v in tensors.items()
            }
    raise DataError(
        f"{directory}: no {SAFETENSORS_FILE} or {TORCH_FILE} (nor a sharded .index.json); "
        "pass the directory that save_pretrained wrote"
    )


def write_hf_tensors(directory: Path, tensors: dict[str, np.ndarray]) -> Path:
    """Writes ``model.safetensors`` into ``directory``."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise _missing_package("safetensors", "nlpjax export --to=hf-t5") from None
    path = directory / SAFETENSORS_FILE
    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(contiguous, str(path), metadata={"format": "pt"})
    return path


def has_untied_head(tensors: dict[str, np.ndarray]) -> bool:
    """Whether the checkpoint's ``lm_head.weight`` exists and differs from the embedding."""
    head, shared = tensors.get("lm_head.weight"), tensors.get("shared.weight")
    if head is None:
        return False
    return shared is None or head.shape != shared.shape or not np.array_equal(head, shared)


def _listed(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def params_from_hf(
    tensors: dict[str, np.ndarray], cfg: T5Config, layout: VocabLayout, where: str
) -> Params:
    """nlpjax T5 parameters from Hugging Face tensors; missing, unexpected or misshapen
    tensors are one ``DataError`` listing them."""
    mapping = tensor_map(cfg)
    if not cfg.tie_embeddings and "lm_head.weight" not in tensors:  # tied weights, unscaled
        tensors = {**tensors, "lm_head.weight": tensors.get("shared.weight")}
    known = {t.name for t in mapping} | set(IGNORED) | {"lm_head.weight"}
    missing = [t.name for t in mapping if tensors.get(t.name) is None]
    unexpected = sorted(set(tensors) - known)
    misshapen = [
        f"{t.name} {tuple(tensors[t.name].shape)} (expected {hf_shape(t, cfg)})"
        for t in mapping
        if tensors.get(t.name) is not None and tuple(tensors[t.name].shape) != hf_shape(t, cfg)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listed(missing)}")
    if unexpected:
        problems.append(f"tensors of another architecture: {_listed(unexpected)}")
    if misshapen:
        problems.append(f"tensors of the wrong shape: {_listed(misshapen)}")
    if problems:
        raise DataError(
            f"{where} is not a T5 checkpoint matching its config.json ({'; '.join(problems)}); "
            "convert a complete T5ForConditionalGeneration checkpoint"
        )
    params: Params = {}
    for t in mapping:
        node = params
        for key in t.path[:-1]:
            node = node.setdefault(key, {})
        node[t.path[-1]] = np.asarray(_to_ours(t, tensors[t.name], cfg, layout), np.float32)
    return params


def hf_from_params(params: Params, cfg: T5Config, layout: VocabLayout) -> dict[str, np.ndarray]:
    """Hugging Face tensors (float32) of nlpjax T5 parameters: ``params_from_hf``'s inverse."""
    out = {}
    for t in tensor_map(cfg):
        node = params
        for key in t.path:
            node = node[key]
        out[t.name] = np.asarray(_to_hf(t, np.asarray(node, np.float32), cfg, layout))
    return out
