"""The PyTorch twin's training speed for the accelerator harness (one JSON line out).

    python benchmarks/accel_torch.py --size=gpt2-small [--steps=100] [--json=FILE]

Trains ``torch_decoder.TorchDecoder`` at a shape of ``experiments/gpt2_small_char.py``
(read from that file's ``SHAPES``, without importing nlpjax or ml_collections) the way
nanoGPT runs on a GPU: ``torch.compile`` of the model, bfloat16 autocast, SDPA attention
(flash attention on CUDA), fused AdamW, TF32 for any float32 matmul. On a CPU the same
runs eagerly with autocast off unless asked (``--compile``, ``--amp=bfloat16``), so the
harness can be dry-run here. If ``torch.compile`` fails (no compiler on the machine), the
twin is timed in eager mode and the JSON says so (``compile: false``, ``compile_error``).
Tokens are random ids over the 65-character vocabulary, kept on the device (no input
pipeline cost: the twin's number is its best case). The
first ``--warmup`` steps (compilation) are not timed; the timed steps end with a device
synchronisation.
"""

import argparse
import ast
import json
import math
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_decoder  # noqa: E402

CONFIG_FILE = Path(__file__).resolve().parents[1] / "experiments" / "gpt2_small_char.py"
VOCAB = 65  # Tiny Shakespeare's characters


def read_literal(name: str, path: Path = CONFIG_FILE):
    """The value of the top-level ``name = <literal>`` assignment in ``path``."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise KeyError(f"{path} has no top-level {name} = ...")


def twin_config(size: str) -> tuple[types.SimpleNamespace, int]:
    """(model config for ``TorchDecoder``, batch size) of a named shape."""
    shape, batch = read_literal("SHAPES")[size], read_literal("BATCH")[size]
    cfg = types.SimpleNamespace(
        vocab_size=VOCAB,
        num_layers=shape["num_layers"],
        num_heads=shape["num_heads"],
        d_model=shape["d_model"],
        ff_dim=shape["d_ff"],
        max_len=shape["context"],
        positions="learned",
        norm="layernorm",
        activation="gelu_tanh",
        dropout=0.0,
        tie_embeddings=True,
        use_bias=True,
    )
    return cfg, batch


def optim_config() -> types.SimpleNamespace:
    """The optimizer of experiments/gpt2_small_char.py (AdamW, warmup + cosine)."""
    return types.SimpleNamespace(
        lr=6e-4,
        warmup_steps=100,
        schedule="cosine",
        min_lr_ratio=0.1,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
    )


def run(size: str, steps: int, warmup: int, compile_model: bool, amp: str, seed: int) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg, batch = twin_config(size)
    model = torch_decoder.TorchDecoder(cfg, fused_attention=True).to(device)
    opt, sched = torch_decoder.make_optimizer(
        model, optim_config(), steps + warmup, fused=device == "cuda"
    )
    step_model = torch.compile(model) if compile_model else model
    amp_dtype = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[amp]
    context = cfg.max_len
    pool = torch.randint(0, VOCAB, (8, batch, context + 1), device=device)

    def step(i):
        return torch_decoder.train_step(step_model, opt, sched, pool[i % 8], 1.0, amp_dtype)

    start = time.perf_counter()
    compile_error = None
    try:
        for i in range(warmup):
            loss = step(i)
    except Exception as e:  # noqa: BLE001 (a broken torch.compile must not lose the row)
        if not compile_model:
            raise
        compile_error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        print(f"torch.compile failed, timing eager mode instead: {compile_error}", file=sys.stderr)
        compile_model, step_model = False, model
        for i in range(warmup):
            loss = step(i)
    _sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    _sync(device)
    seconds = time.perf_counter() - start
    final_loss = float(loss)
    if not math.isfinite(final_loss):
        raise FloatingPointError(f"the torch twin's loss is {final_loss}")
    return {
        "framework": "torch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "size": size,
        "compile": compile_model,
        "amp": amp,
        "fused_adamw": device == "cuda",
        "steps": steps,
        "warmup_s": round(warmup_s, 2),
        "seconds": round(seconds, 4),
        "tokens_per_sec": steps * batch * context / seconds,
        "final_loss": final_loss,
        "compile_error": compile_error,
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="gpt2-small", choices=sorted(read_literal("SHAPES")))
    parser.add_argument("--steps", type=int, default=100, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (compilation)")
    gpu = torch.cuda.is_available()
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=gpu)
    parser.add_argument(
        "--amp", default="bfloat16" if gpu else "none", choices=["none", "bfloat16", "float16"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    result = run(args.size, args.steps, args.warmup, args.compile, args.amp, args.seed)
    line = json.dumps(result)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
