"""optax optimizers from the ``optim`` config section."""

import jax
import optax

from nlpjax.config import OptimConfig
from nlpjax.training.loss_scale import dynamic_loss_scale


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` (or constant)."""
    if cfg.schedule == "constant":
        if cfg.warmup_steps == 0:
            return optax.constant_schedule(cfg.lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps), optax.constant_schedule(cfg.lr)],
            [cfg.warmup_steps],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=max(cfg.decay_steps or total_steps, cfg.warmup_steps + 1),
        end_value=cfg.lr * cfg.min_lr_ratio,
    )


# Weight decay by a parameter's role, read from its name (the last key of its path):
# matrices that multiply activations and embedding tables are decayed; biases and norm
# scales are not. Learned position embeddings are embeddings and are decayed, as in
# GPT-2 / nanoGPT and in the PyTorch twin (benchmarks/torch_decoder.py). The rank does
# not decide: the fused QKV bias has shape (3, H, K) and is still a bias.
DECAYED_SUFFIXES = ("kernel", "embedding")
NOT_DECAYED_SUFFIXES = ("bias", "scale")


def decays(name: str) -> bool:
    """Whether a parameter named ``name`` (e.g. ``qkv_kernel``, ``scale``) is decayed."""
    if name.endswith(DECAYED_SUFFIXES):
        return True
    if name.endswith(NOT_DECAYED_SUFFIXES):
        return False
    raise ValueError(
        f"parameter {name!r} has no weight-decay role: name it *kernel or *embedding "
        "(decayed) or *bias or *scale (not decayed), or extend the suffixes in "
        "nlpjax/training/optim.py"
    )


def _param_name(path) -> str:
    """The last dict key of a pytree path (boxed params end in a ``.value`` attribute)."""
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return str(keys[-1]) if keys else ""


def decay_mask(params):
    """True for the leaves AdamW decays: kernels and embeddings, not biases or norm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: decays(_param_name(path)), params)


def make_optimizer(cfg: OptimConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """AdamW (masked weight decay) or SGD following ``schedule`` (``make_schedule``'s,
    built once by the caller, who also logs it), after global-norm clipping."""
    if cfg.name == "adamw":
        opt = optax.adamw(
            schedule,
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    else:
        opt = optax.sgd(schedule)
    if cfg.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt


def make_tx(
    cfg: OptimConfig, total_steps: int, compute_dtype: str = "float32"
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule) of a run: the one place that assembles them, for training,
    ``nlpjax plan`` and the resume checks alike. float16 compute adds dynamic loss scaling."""
    schedule = make_schedule(cfg, total_steps)
    tx = make_optimizer(cfg, schedule)
    if compute_dtype == "float16":
        tx = dynamic_loss_scale(tx)
    return tx, schedule
