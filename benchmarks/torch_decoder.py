"""PyTorch eager twin of ``nlpjax.models.decoder.Decoder`` and its training step.

The benchmark baseline: the same decoder-only char LM as nlpjax (pre-norm blocks, fused
QKV projection, learned positions, LayerNorm eps 1e-5, tanh GELU, tied embeddings,
biases, no dropout), the same GPT-2 style init (normal 0.02; 0.02 / sqrt(2 * layers)
for the residual output projections), the same loss (mean next-token cross-entropy)
and the same optimizer: global-norm clipping at 1.0, then AdamW with linear warmup and
cosine decay, weight decay only on 2-D weights (the Linear weights and the two embedding
tables: the same leaves as nlpjax's `decay_mask`, which decides by name). Plain idiomatic
PyTorch, eager mode by default; the accelerator harness (``benchmarks/accel_torch.py``) runs
it the way nanoGPT does on a GPU: ``torch.compile``, bfloat16 autocast (``amp_dtype``), SDPA
attention (``fused_attention=True``, flash attention on CUDA) and fused AdamW.

Hyperparameters come from an nlpjax ``Config`` (its ``model``, ``optim`` and ``data``
sections), so both frameworks always train the same thing. ``load_jax_params`` copies an
nlpjax parameter tree into the module, which lets the benchmark check that both compute
the same loss.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, out_std: float, fused_attention: bool):
        super().__init__()
        self.num_heads = num_heads
        self.fused_attention = fused_attention
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        nn.init.normal_(self.qkv.weight, std=0.02)
        nn.init.zeros_(self.qkv.bias)
        nn.init.normal_(self.out.weight, std=out_std)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H = self.num_heads
        # (B, L, 3, H, K) -> three (B, H, L, K): the same q | k | v layout as nlpjax.
        q, k, v = self.qkv(x).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)
        if self.fused_attention:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q * (D // H) ** -0.5) @ k.transpose(-2, -1)
            causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            y = scores.softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str, out_std: float):
        super().__init__()
        self.wi = nn.Linear(d_model, d_ff)
        self.wo = nn.Linear(d_ff, d_model)
        self.activation = ACTIVATIONS[activation]
        nn.init.normal_(self.wi.weight, std=0.02)
        nn.init.zeros_(self.wi.bias)
        nn.init.normal_(self.wo.weight, std=out_std)
        nn.init.zeros_(self.wo.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.activation(self.wi(x)))


class Block(nn.Module):
    """Pre-norm: x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, cfg, fused_attention: bool):
        super().__init__()
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        self.attn_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.num_heads, out_std, fused_attention)
        self.mlp_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.mlp = MLP(cfg.d_model, cfg.ff_dim, cfg.activation, out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TorchDecoder(nn.Module):
    """tokens (B, L) -> logits (B, L, V), the same model as ``nlpjax`` ``Decoder``."""

    def __init__(self, cfg, fused_attention: bool = True):
        super().__init__()
        supported = (
            cfg.positions == "learned"
            and cfg.norm == "layernorm"
            and cfg.tie_embeddings
            and cfg.use_bias
            and cfg.dropout == 0.0
        )
        if not supported:
            raise ValueError(
                "TorchDecoder covers learned positions, LayerNorm, tied embeddings, biases and "
                "no dropout (the benchmark config)"
            )
        self.embedding = nn.Parameter(torch.randn(cfg.vocab_size, cfg.d_model) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg, fused_attention) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[1]
        x = self.embedding[tokens] + self.pos_embedding[:L]
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x) @ self.embedding.T  # tied output embedding


def lm_loss(model: TorchDecoder, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: inputs tokens[:, :-1], targets tokens[:, 1:]."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def lr_lambda(optim_cfg, total_steps: int):
    """Multiplier on ``lr`` at step s: optax.warmup_cosine_decay_schedule(0, lr, ...)."""
    warmup = optim_cfg.warmup_steps
    decay_steps = max(total_steps, warmup + 1)
    end = optim_cfg.min_lr_ratio

    def factor(step: int) -> float:
        if optim_cfg.schedule == "constant":
            return min(1.0, step / warmup) if warmup else 1.0
        if step < warmup:
            return step / warmup
        t = min(step - warmup, decay_steps - warmup) / (decay_steps - warmup)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def make_optimizer(model: nn.Module, optim_cfg, total_steps: int, fused: bool | None = None):
    """AdamW (decay on 2-D weights only) and its warmup + cosine LambdaLR scheduler."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": optim_cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(
        groups,
        lr=optim_cfg.lr,
        betas=(optim_cfg.b1, optim_cfg.b2),
        eps=optim_cfg.eps,
        fused=fused,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(optim_cfg, total_steps))
    return opt, sched


def train_step(
    model,
    opt,
    sched,
    tokens: torch.Tensor,
    clip_norm: float = 1.0,
    amp_dtype: torch.dtype | None = None,
    loss_fn=lm_loss,
) -> torch.Tensor:
    """One step: loss, backward, global-norm clip, AdamW update, schedule tick.

    With ``amp_dtype`` (e.g. ``torch.bfloat16``) the forward pass runs under autocast:
    matmuls in that dtype, softmax, norms and the loss in float32, float32 weights.
    ``loss_fn(model, tokens)`` is the loss (another model's, with its own inputs in
    ``tokens``: ``benchmarks/bench_t5.py`` passes Hugging Face T5's).
    """
    if amp_dtype is None:
        loss = loss_fn(model, tokens)
    else:
        with torch.autocast(tokens.device.type, dtype=amp_dtype):
            loss = loss_fn(model, tokens)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    sched.step()
    return loss.detach()


def load_jax_params(model: TorchDecoder, params) -> None:
    """Copies an (unboxed) nlpjax ``Decoder`` parameter tree into ``model``."""

    def t(x):
        return torch.from_numpy(np.array(x, dtype=np.float32))

    with torch.no_grad():
        model.embedding.copy_(t(params["embedding"]))
        model.pos_embedding.copy_(t(params["pos_embedding"]))
        for i, block in enumerate(model.blocks):
            p = params[f"block_{i}"]
            d = block.attn.qkv.in_features
            for norm, name in ((block.attn_norm, "attn_norm"), (block.mlp_norm, "mlp_norm")):
                norm.weight.copy_(t(p[name]["scale"]))
                norm.bias.copy_(t(p[name]["bias"]))
            a = p["attn"]
            block.attn.qkv.weight.copy_(t(a["qkv_kernel"]).reshape(d, -1).T)
            block.attn.qkv.bias.copy_(t(a["qkv_bias"]).reshape(-1))
            block.attn.out.weight.copy_(t(a["out_kernel"]).reshape(-1, d).T)
            block.attn.out.bias.copy_(t(a["out_bias"]))
            for lin, name in ((block.mlp.wi, "wi"), (block.mlp.wo, "wo")):
                lin.weight.copy_(t(p["mlp"][name]["kernel"]).T)
                lin.bias.copy_(t(p["mlp"][name]["bias"]))
        model.final_norm.weight.copy_(t(params["final_norm"]["scale"]))
        model.final_norm.bias.copy_(t(params["final_norm"]["bias"]))
