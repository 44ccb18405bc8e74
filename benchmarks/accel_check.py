"""Does each attention implementation compute the reference function on this machine?

    python benchmarks/accel_check.py [--json=FILE]

The CPU tests compare ``model.attention=xla`` with the reference; cuDNN flash attention
can only be checked on a GPU, which is what this script is for (the last stage of
``benchmarks/accelerator.sh``). A 2-layer decoder (4 heads of width 64, context 256,
batch 4) computes logits and parameter gradients of a next-token loss with the float32
reference attention, then in bfloat16 with ``reference``, ``xla`` and ``cudnn``; prints
one JSON line with, per implementation, the one that really ran (``choose_implementation``)
and the largest deviations from the float32 reference.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nlpjax.models.attention import choose_implementation  # noqa: E402
from nlpjax.models.decoder import Decoder, DecoderConfig  # noqa: E402
from nlpjax.precision import resolve_dtype  # noqa: E402


def loss_and_grads(cfg, params, tokens):
    def loss(p):
        logits_BLV = Decoder(cfg).apply({"params": p}, tokens[:, :-1])
        logp = jax.nn.log_softmax(logits_BLV)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)), logits_BLV

    (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return float(value), np.asarray(logits), grads


def check() -> dict:
    cfg = DecoderConfig(
        vocab_size=65, num_layers=2, num_heads=4, d_model=256, max_len=256, dtype="float32"
    )
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 257), 0, 65)
    params = nn.meta.unbox(Decoder(cfg).init(jax.random.PRNGKey(0), tokens[:, :-1])["params"])
    ref_cfg = dataclasses.replace(cfg, attention="reference")
    ref_loss, ref_logits, ref_grads = loss_and_grads(ref_cfg, params, tokens)
    result = {"backend": jax.default_backend(), "devices": str(jax.devices()), "rows": {}}
    for impl in ("reference", "xla", "cudnn"):
        c = dataclasses.replace(cfg, dtype="bfloat16", attention=impl)
        ran = choose_implementation(impl, dtype=resolve_dtype("bfloat16"), head_dim=c.head_dim)
        try:
            value, logits, grads = loss_and_grads(c, params, tokens)
        except Exception as e:  # noqa: BLE001 (report, do not hide, a failing kernel)
            result["rows"][impl] = {"ran": ran, "error": f"{type(e).__name__}: {e}"[:300]}
            continue
        rel = jax.tree_util.tree_map(
            lambda g, r: float(jnp.linalg.norm(g - r) / (jnp.linalg.norm(r) + 1e-12)),
            grads,
            ref_grads,
        )
        result["rows"][impl] = {
            "ran": ran,
            "loss_diff": abs(value - ref_loss),
            "max_abs_logit_diff": float(np.max(np.abs(logits - ref_logits))),
            "max_rel_grad_diff": max(jax.tree_util.tree_leaves(rel)),
        }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    line = json.dumps(check())
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
