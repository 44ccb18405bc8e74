"""Trains registers 0 / 1 / 4 and a sink token on Tiny Shakespeare; writes their probe
table and plots.

    NLPJAX_DATA_DIR=... python experiments/registers_table.py [--variant=tiny] [--root=DIR]
        [--output=FILE] [--plots=DIR]

Each run trains a variant of ``experiments/shakespeare_registers.py`` (``registers0``,
``registers1``, ``registers4``, ``sink``) in ``ROOT/VARIANT``
(running the script again resumes; a finished run is a no-op), then the last checkpoint
is probed on the first validation batch (``LMTask.probe``) and ``nlpjax analyze`` writes
its attention-map and norm-histogram PNGs to ``PLOTS/VARIANT_*.png``. The markdown
table goes to ``OUTPUT`` (and stdout). The default variant used 13 minutes of CPU time
(55 minutes of wall time on the shared 2-core machine at load average 5-20).

Variants (``--variant=NAME``):
  default  the four 2000-step runs of the README table;
  tiny     the same four on the tiny model, 20 steps each: a smoke check (tests use it).
"""

import argparse
import tempfile
from pathlib import Path

import nlpjax
from nlpjax import cli
from nlpjax.analysis import probes
from nlpjax.training.metrics import read_metrics

EXPERIMENT = str(Path(__file__).with_name("shakespeare_registers.py"))
# The runs: (name, registers, sink token); the name is also the config variant.
RUNS = (("registers0", 0, False), ("registers1", 1, False), ("registers4", 4, False))
RUNS += (("sink", 0, True),)
TINY = {"train.steps": 20, "eval.every": 20, "eval.num_batches": 2, "checkpoint.every": 20}
# Per variant: the config variant of each run and the overrides every run gets.
VARIANTS = {
    "default": (lambda name: name, {}),
    "tiny": (lambda name: "tiny", TINY),
}
COLUMNS = (
    ("prefix", "{}"),
    ("params", "{:,d}"),
    ("val_loss", "{:.3f}"),
    ("first_mass", "{:.3f}"),
    ("register_mass", "{:.3f}"),
    ("first_token_mass", "{:.3f}"),
    ("outlier_fraction", "{:.4f}"),
    ("register_norm_ratio", "{:.2f}"),
)
HEADER = (
    "| prefix | params | val loss | mass on position 0 | mass on registers "
    "| mass on first token | outlier fraction (norm > 3x median) | register norm / median |"
)


def run_one(root: Path, variant: str, run: tuple[str, int, bool], plots: Path) -> dict:
    name, registers, sink = run
    name_of, overrides = VARIANTS[variant]
    overrides = {**overrides, "model.num_registers": registers, "model.sink_token": sink}
    config = nlpjax.load_config(
        f"{EXPERIMENT}:{name_of(name)}", overrides | {"train.progress": False}
    )
    workdir = root / name
    nlpjax.train(config, workdir)
    trained = nlpjax.load(workdir)
    probe = trained.task.probe(trained.params)
    mass, outliers = probes.attention_mass(probe), probes.outlier_fraction(probe)
    last_eval = [r for r in read_metrics(workdir) if "eval/loss" in r][-1]
    code = cli.main(["analyze", f"--workdir={workdir}", f"--out={plots / workdir.name}"])
    if code != 0:
        raise RuntimeError(f"nlpjax analyze --workdir={workdir} failed with exit code {code}")
    prefix = "sink token" if sink else f"{registers} register{'s' * (registers != 1)}"
    return {
        "prefix": prefix,
        "registers": registers,
        "params": trained.run.num_params,
        "step": trained.step,
        "val_loss": last_eval["eval/loss"],
        "first_mass": float(mass["first"].mean()),
        "register_mass": float(mass["registers"].mean()),
        "first_token_mass": float(mass["first_token"].mean()),
        "outlier_fraction": float(outliers["tokens"].mean()),
        "register_norm_ratio": float(outliers["registers"].mean()),
    }


def format_table(rows: list[dict]) -> str:
    lines = [HEADER, "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [fmt.format(row[key]) if key in row else "" for key, fmt in COLUMNS]
        if row["registers"] == 0:
            cells[-1] = "-"  # the register columns mean nothing without registers
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="default", choices=sorted(VARIANTS))
    parser.add_argument("--root", default=None, help="workdirs go here (default: a temp dir)")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    parser.add_argument("--plots", default=None, help="PNG folder (default: ROOT/plots)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="nlpjax-registers-"))
    plots = Path(args.plots or root / "plots")
    rows = [run_one(root, args.variant, run, plots) for run in RUNS]
    table = format_table(rows)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    print(f"workdirs: {root}; plots: {plots}")


if __name__ == "__main__":
    main()
