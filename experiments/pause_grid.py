"""The pause-token 2x2 on addition: standard / pause pretraining x standard / pause
finetuning, M in {0, 2, 5, 10}, every M_inf, 3 seeds; writes the exact-match table.

    NLPJAX_DATA_DIR=... python experiments/pause_grid.py [--variant=tiny] [--root=DIR]
        [--output=FILE]

For each seed, ``experiments/pause_addition.py:pretrain`` and ``:pause_pretrain`` train in
``ROOT/pretrain-{standard,pause}-s{seed}``; each is finetuned with every M_ft
(``:finetune``, ``train.init_from`` = that pretrained workdir, ``data.pause_finetune=M_ft``;
M_ft = 0 is standard finetuning) in ``ROOT/finetune-{standard,pause}-m{M_ft}-s{seed}``;
each finetuned model answers the validation prompts greedily after every M_inf pauses
(``LMTask.exact_match``). Running the script again resumes: finished runs are no-ops and
the scores are kept in ``ROOT/scores.json``. The table (mean ± sample standard deviation
over the seeds, in %) goes to ``OUTPUT`` and stdout. The default grid used 6.8 minutes of
CPU time (40 minutes of wall time on the shared 2-core machine at load average 20).

Variants (``--variant=NAME``):
  default  the README grid (2 pretrainings x 4 M_ft x 4 M_inf x 3 seeds);
  tiny     M in {0, 2}, one seed, 10-step runs of the tiny model: a smoke check.
"""

import argparse
import json
import tempfile
from pathlib import Path

import jax
import numpy as np

import nlpjax

EXPERIMENT = str(Path(__file__).with_name("pause_addition.py"))
PRETRAININGS = ("standard", "pause")
VARIANTS = {  # (pretrain, pause_pretrain, finetune variants), M values, seeds
    "default": (("pretrain", "pause_pretrain", "finetune"), (0, 2, 5, 10), (0, 1, 2)),
    "tiny": (("tiny", "tiny", "tiny_finetune"), (0, 2), (0,)),
}


def _train(variant: str, workdir: Path, overrides: dict) -> None:
    config = nlpjax.load_config(f"{EXPERIMENT}:{variant}", {**overrides, "train.progress": False})
    nlpjax.train(config, workdir)


def pretrain(root: Path, variant: str, kind: str, seed: int) -> Path:
    names = VARIANTS[variant][0]
    workdir = root / f"pretrain-{kind}-s{seed}"
    overrides = {"seed": seed, "data.pause_pretrain": kind == "pause"}
    _train(names[0] if kind == "standard" else names[1], workdir, overrides)
    return workdir


def finetune(root: Path, variant: str, source: Path, kind: str, m_ft: int, seed: int) -> Path:
    workdir = root / f"finetune-{kind}-m{m_ft}-s{seed}"
    overrides = {"seed": seed, "data.pause_finetune": m_ft, "train.init_from": str(source)}
    _train(VARIANTS[variant][0][2], workdir, overrides)
    return workdir


def score(workdir: Path, m_values: tuple[int, ...]) -> dict[int, float]:
    """Exact match on the validation prompts for every M_inf in ``m_values``."""
    trained = nlpjax.load(workdir)
    return {m: trained.task.exact_match(trained.params, pauses=m)["exact_match"] for m in m_values}


def run_grid(root: Path, variant: str) -> dict[str, float]:
    """``{"KIND/M_ft/M_inf/seed": exact match}`` for the whole grid (cached in scores.json)."""
    _, m_values, seeds = VARIANTS[variant]
    cache = root / "scores.json"
    scores = json.loads(cache.read_text()) if cache.is_file() else {}
    for seed in seeds:
        for kind in PRETRAININGS:
            source = pretrain(root, variant, kind, seed)
            for m_ft in m_values:
                keys = [f"{kind}/{m_ft}/{m}/{seed}" for m in m_values]
                if all(k in scores for k in keys):
                    continue
                workdir = finetune(root, variant, source, kind, m_ft, seed)
                for m, value in score(workdir, m_values).items():
                    scores[f"{kind}/{m_ft}/{m}/{seed}"] = value
                cache.write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")
    return scores


def _cell(values: list[float]) -> str:
    percent = 100 * np.asarray(values)
    spread = percent.std(ddof=1) if len(percent) > 1 else 0.0
    return f"{percent.mean():.1f} ± {spread:.1f}"


def format_table(scores: dict[str, float], variant: str) -> str:
    """One row per (pretraining, M_ft), one column per M_inf; the M_inf = M_ft cell bold."""
    _, m_values, seeds = VARIANTS[variant]
    head = " | ".join(f"M_inf={m}" for m in m_values)
    lines = [f"| pretraining | finetuning | {head} |", "|---|---|" + "---|" * len(m_values)]
    for kind in PRETRAININGS:
        for m_ft in m_values:
            finetuning = "standard (M_ft=0)" if m_ft == 0 else f"pause, M_ft={m_ft}"
            cells = []
            for m in m_values:
                cell = _cell([scores[f"{kind}/{m_ft}/{m}/{s}"] for s in seeds])
                cells.append(f"**{cell}**" if m == m_ft else cell)
            lines.append(f"| {kind} | {finetuning} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="default", choices=sorted(VARIANTS))
    parser.add_argument("--root", default=None, help="workdirs go here (default: a temp dir)")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="nlpjax-pause-grid-"))
    root.mkdir(parents=True, exist_ok=True)
    # The runs of a grid share their shapes: compile each program once for all of them.
    jax.config.update("jax_compilation_cache_dir", str(root / "xla-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    table = format_table(run_grid(root, args.variant), args.variant)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    print(f"workdirs: {root}")


if __name__ == "__main__":
    main()
