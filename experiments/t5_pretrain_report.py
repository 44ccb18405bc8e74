"""The pretrain-then-finetune comparison of ``t5_pretrain_multi30k.py``: validation curves
of the finetuned run and the run from scratch against the total number of training steps
(pretraining steps included), as a PNG and a JSON table.

  python experiments/t5_pretrain_report.py --pretrain=/tmp/t5pre --finetune=/tmp/t5ft \\
      --scratch=/tmp/t5scratch --out=experiments/results/t5_pretrain

The finetuned run's steps are shifted by the pretraining run's last logged step, so both
curves share one axis: total steps of training. The inputs are the runs' own
``metrics.jsonl`` files (``eval/loss``, ``eval/bleu``, ``eval/chrf`` at each evaluation);
nothing is trained or decoded here. Any three workdirs of that shape work.

``--variant=tiny`` is the smoke check: it trains ``t5_pretrain_multi30k.py``'s
``tiny_pretrain``, ``tiny_finetune`` (from it) and ``tiny_scratch`` into ``OUT/runs``
(seconds each) and reports on them; its numbers say nothing about pretraining.
"""

import argparse
import json
from pathlib import Path

import matplotlib

from nlpjax.analysis.curves import save_png
from nlpjax.training.metrics import read_metrics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EVAL_KEYS = ("eval/loss", "eval/bleu", "eval/chrf")


def run_metrics(workdir: str) -> list[dict]:
    """A run's ``metrics.jsonl`` rows; an error naming the workdir when it has none."""
    rows = read_metrics(workdir)
    if not rows:
        raise SystemExit(f"error: no metrics.jsonl in {workdir}: train that run first")
    return rows


def eval_rows(rows: list[dict], offset: int = 0) -> list[dict]:
    """The evaluation rows among a run's metrics, steps shifted by ``offset``."""
    return [
        {"total_step": r["step"] + offset} | {k: r[k] for k in EVAL_KEYS if k in r}
        for r in rows
        if "eval/loss" in r
    ]


def report(pretrain: str, finetune: str, scratch: str) -> dict:
    pretrain_rows = run_metrics(pretrain)
    offset = max(r["step"] for r in pretrain_rows)  # the pretraining run's last step
    return {
        "pretrain_steps": offset,
        "pretrain_eval": eval_rows(pretrain_rows),  # span-corruption loss on validation text
        "finetune": eval_rows(run_metrics(finetune), offset),
        "scratch": eval_rows(run_metrics(scratch)),
    }


def plot(result: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for name, style in (("scratch", "o-"), ("finetune", "s-")):
        rows = result[name]
        label = (
            "from scratch" if name == "scratch" else "span-corruption pretraining, then finetuning"
        )
        for ax, key in zip(axes, ("eval/bleu", "eval/loss"), strict=True):
            points = [(r["total_step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label, markersize=4)
    for ax, ylabel in zip(
        axes, ("validation BLEU (greedy)", "validation loss (nats/token)"), strict=True
    ):
        ax.axvline(result["pretrain_steps"], color="gray", ls=":", lw=1)
        ax.set_xlabel("total training steps (pretraining included)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Multi30k de->en: pretraining vs scratch at equal steps", fontsize=9)
    return save_png(fig, path)


def train_tiny(runs: Path) -> dict[str, str]:
    """Trains the experiment's three tiny variants into ``runs``; returns their workdirs."""
    from nlpjax import api

    spec = str(Path(__file__).with_name("t5_pretrain_multi30k.py"))
    workdirs = {name: str(runs / name) for name in ("pretrain", "finetune", "scratch")}
    api.train(api.load_config(f"{spec}:tiny_pretrain"), workdirs["pretrain"])
    finetune = {"train.init_from": workdirs["pretrain"]}
    api.train(api.load_config(f"{spec}:tiny_finetune", finetune), workdirs["finetune"])
    api.train(api.load_config(f"{spec}:tiny_scratch"), workdirs["scratch"])
    return workdirs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("default", "tiny"), default="default")
    parser.add_argument("--pretrain", help="workdir of the :pretrain run")
    parser.add_argument("--finetune", help="workdir of the :finetune run")
    parser.add_argument("--scratch", help="workdir of the run from scratch")
    parser.add_argument("--out", required=True, help="directory for the PNG and JSON")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.variant == "tiny":
        runs = train_tiny(out / "runs")
        args.pretrain, args.finetune, args.scratch = (
            runs["pretrain"],
            runs["finetune"],
            runs["scratch"],
        )
    elif not (args.pretrain and args.finetune and args.scratch):
        parser.error("give --pretrain, --finetune and --scratch (or --variant=tiny)")
    result = report(args.pretrain, args.finetune, args.scratch)
    out.mkdir(parents=True, exist_ok=True)
    (out / "t5_pretrain.json").write_text(json.dumps(result, indent=1) + "\n")
    print(plot(result, out / "t5_pretrain_curves.png"))
    for name in ("finetune", "scratch"):
        for r in result[name]:
            cells = ", ".join(f"{k} {r[k]:.3f}" for k in EVAL_KEYS if k in r)
            print(f"{name:8s} total step {r['total_step']:5d}: {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
