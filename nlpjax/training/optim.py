"""optax optimizers from the ``optim`` config section.

Adafactor: Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235 (T5's optimizer,
with the rsqrt schedule of Raffel et al., 2020, https://arxiv.org/abs/1910.10683).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from nlpjax.config import OptimConfig
from nlpjax.training.loss_scale import dynamic_loss_scale


def rsqrt_schedule(lr: float, warmup_steps: int) -> optax.Schedule:
    """T5's inverse square root: ``lr / sqrt(max(step, warmup_steps))``.

    Flat at ``lr / sqrt(warmup_steps)`` for the first ``warmup_steps`` steps, then decaying
    as ``1 / sqrt(step)`` (T5: ``lr=1.0, warmup_steps=10000``, so 0.01 at first).
    """

    def schedule(step):
        step = jnp.maximum(jnp.asarray(step, jnp.float32), float(warmup_steps))
        return lr * jax.lax.rsqrt(step)

    return schedule


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` (or constant);
    or T5's ``rsqrt`` (see ``rsqrt_schedule``)."""
    if cfg.schedule == "rsqrt":
        return rsqrt_schedule(cfg.lr, cfg.warmup_steps)
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


def make_adafactor(cfg: OptimConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Adafactor as T5 trains with it: factored second moments (matrices whose two
    smallest dims are >= 128), decay ``1 - step**-decay_rate``, updates clipped to RMS
    ``clipping_threshold`` and scaled by the parameter's RMS (the "relative step"; the
    schedule gives the absolute part), no momentum. ``weight_decay`` is decoupled, masked
    and scaled by the schedule as for AdamW (``-lr * weight_decay * param``; 0 in T5).

    Its state is made from unboxed parameters, so it carries no logical axis names and
    is replicated: the factored row and column statistics have other shapes than the
    parameters, whose names would not fit them (they are small; with ``factored=False``
    the full second moments of large matrices are replicated too).
    """
    tx = optax.adafactor(
        schedule,
        decay_rate=cfg.decay_rate,
        multiply_by_parameter_scale=cfg.param_scale,
        clipping_threshold=cfg.clipping_threshold or None,
        factored=cfg.factored,
        # optax adds the decay after the lr scaling: follow the schedule, as AdamW does
        weight_decay_rate=(lambda step: cfg.weight_decay * schedule(step))
        if cfg.weight_decay
        else None,
        weight_decay_mask=decay_mask if cfg.weight_decay else None,
    )
    return optax.GradientTransformation(lambda params: tx.init(nn.meta.unbox(params)), tx.update)


def make_optimizer(cfg: OptimConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """AdamW (masked weight decay), Adafactor or SGD following ``schedule``
    (``make_schedule``'s, built once by the caller, who also logs it), after global-norm
    clipping."""
    if cfg.name == "adafactor":
        opt = make_adafactor(cfg, schedule)
    elif cfg.name == "adamw":
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
