"""Sweeps the learning rate of the tiny Shakespeare run from Python and tabulates it.

    NLPJAX_DATA_DIR=... python experiments/sweep_lr.py [--variant=tiny] [--root=DIR]

Each learning rate trains in its own workdir (running the script again resumes, and a
finished run is a no-op), then the final checkpoint is opened and evaluated. About a
minute on a laptop CPU.

Variants (``--variant=NAME``):
  default  three learning rates, 40 steps each (the table in the README);
  tiny     two learning rates, 10 steps each: a seconds-long smoke check (tests use it).
"""

import argparse
import tempfile
from pathlib import Path

import nlpjax

EXPERIMENT = str(Path(__file__).with_name("shakespeare_char.py")) + ":tiny"
# Per variant: the learning rates swept and the overrides every run gets.
VARIANTS = {
    "default": ((3e-4, 1e-3, 3e-3), {}),
    "tiny": (
        (1e-4, 3e-3),
        {"train.steps": 10, "optim.warmup_steps": 0, "eval.every": 10, "checkpoint.every": 10},
    ),
}


def sweep(root: Path, variant: str = "default") -> list[dict]:
    learning_rates, overrides = VARIANTS[variant]
    rows = []
    for lr in learning_rates:
        config = nlpjax.load_config(
            EXPERIMENT, {**overrides, "optim.lr": lr, "train.progress": False}
        )
        workdir = root / f"lr={lr:g}"
        summary = nlpjax.train(config, workdir)
        numbers = nlpjax.load(workdir).evaluate()
        rows.append({"lr": lr, "train_loss": summary["train_loss"], **numbers})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'lr':>8}  {'train loss':>10}  {'val loss':>8}  {'val ppl':>8}  {'bits/char':>9}"]
    for r in rows:
        lines.append(
            f"{r['lr']:>8g}  {r['train_loss']:>10.4f}  {r['loss']:>8.4f}  "
            f"{r['perplexity']:>8.2f}  {r['bits_per_char']:>9.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="default", choices=sorted(VARIANTS))
    parser.add_argument("--root", default=None, help="workdirs go here (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="nlpjax-sweep-lr-"))
    print(format_table(sweep(root, args.variant)))
    print(f"workdirs: {root}")


if __name__ == "__main__":
    main()
