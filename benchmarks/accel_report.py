"""The accelerator harness's table: reads each stage's results, prints tokens/s, ratio, MFU.

    python benchmarks/accel_report.py --out=DIR [--size=gpt2-small] [--peak_tflops=989]

``DIR`` is the harness output (``benchmarks/accelerator.sh``): ``runs/<stage>/metrics.jsonl``
of each ``nlpjax train`` stage, ``torch.json`` of the PyTorch twin, ``check.json`` of the
attention check and ``logs/<stage>.rc`` (exit codes). A stage that failed or timed out
gets a row saying so; the others keep their numbers. Writes ``table.md`` and
``summary.json`` into ``DIR`` and prints the table.

nlpjax tokens/s: the mean of the logged windows after the first one (the first window
after compilation is left out as warm-up). The last train and eval losses of each nlpjax
row show that the fast paths still learn (compare with the float32 row); the torch twin
trains on random tokens, so its loss stays near ln(65). MFU = tokens/s x flops_per_token / peak,
with nlpjax's own FLOP count (``nlpjax.models.decoder.flops_per_token``: matmuls,
forward + backward) and one peak for every row: the card's dense bfloat16 peak
(989 TFLOP/s for H100 SXM and H200), as in the reference figures, whatever dtype the row ran.
"""

import argparse
import ast
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (stage, what it runs); the same names as in benchmarks/accelerator.sh.
STAGES = {
    "nlpjax": "nlpjax train, defaults (model.dtype=auto, model.attention=auto)",
    "nlpjax_xla": "nlpjax train, model.attention=xla",
    "nlpjax_f32": "nlpjax train, model.dtype=float32",
    "torch": "PyTorch twin (benchmarks/accel_torch.py)",
}


def read_rc(out: Path, stage: str) -> int | None:
    path = out / "logs" / f"{stage}.rc"
    return int(path.read_text().strip()) if path.is_file() else None


def nlpjax_result(out: Path, stage: str) -> dict:
    """tokens/s (mean after the first window), the loop's own MFU, timed steps."""
    path = out / "runs" / stage / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rated = [r for r in rows if "tokens_per_sec" in r]
    if not rated:
        raise ValueError(f"{path} has no tokens_per_sec rows")
    timed = rated[1:] or rated
    result = {
        "tokens_per_sec": statistics.fmean(r["tokens_per_sec"] for r in timed),
        "timed_steps": timed[-1]["step"] - (rated[0]["step"] if len(rated) > 1 else 0),
    }
    for key in ("train/loss", "eval/loss"):  # the last value: a check that bf16 still learns
        values = [r[key] for r in rows if key in r]
        if values:
            result[key.replace("/", "_")] = values[-1]
    if all("mfu" in r for r in timed):
        result["loop_mfu"] = statistics.fmean(r["mfu"] for r in timed)
    return result


def torch_result(out: Path) -> dict:
    data = json.loads((out / "torch.json").read_text())
    how = [
        f"{data['amp']} autocast" if data["amp"] != "none" else "float32",
        "torch.compile" if data["compile"] else "eager",
        "SDPA",
        "fused AdamW" if data["fused_adamw"] else "AdamW",
    ]
    label = "PyTorch twin: " + ", ".join(how)
    return data | {"timed_steps": data["steps"], "label": label, "train_loss": data["final_loss"]}


def flops_per_token(size: str) -> float | None:
    """nlpjax's FLOP count at the harness shape (None if nlpjax cannot be imported)."""
    config_file = REPO / "experiments" / "gpt2_small_char.py"
    tree = {
        t.id: ast.literal_eval(n.value)
        for n in ast.parse(config_file.read_text()).body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and t.id == "SHAPES"
    }
    shape = tree["SHAPES"][size]
    try:
        from nlpjax.models.decoder import DecoderConfig
        from nlpjax.models.decoder import flops_per_token as count
    except ImportError:
        return None
    cfg = DecoderConfig(
        vocab_size=65,
        num_layers=shape["num_layers"],
        num_heads=shape["num_heads"],
        d_model=shape["d_model"],
        d_ff=shape["d_ff"],
        max_len=shape["context"],
    )
    return count(cfg, shape["context"])


def collect(out: Path, size: str, peak_tflops: float) -> dict:
    fpt = flops_per_token(size)
    rows = {}
    for stage in STAGES:
        rc = read_rc(out, stage)
        row = {"rc": rc}
        try:
            row.update(torch_result(out) if stage == "torch" else nlpjax_result(out, stage))
            row["status"] = "ok" if rc == 0 else f"rc={rc}"
        except (OSError, ValueError, KeyError) as e:
            row["status"] = "timed out" if rc in (124, 137) else f"failed (rc={rc}): {e}"
        if "tokens_per_sec" in row and fpt:
            row["mfu"] = row["tokens_per_sec"] * fpt / (peak_tflops * 1e12)
        rows[stage] = row
    torch_tps = rows["torch"].get("tokens_per_sec")
    for row in rows.values():
        if torch_tps and "tokens_per_sec" in row:
            row["vs_torch"] = row["tokens_per_sec"] / torch_tps
    return {"size": size, "peak_tflops": peak_tflops, "flops_per_token": fpt, "rows": rows}


def attention_check(out: Path) -> dict | None:
    """``check.json`` of benchmarks/accel_check.py, if that stage ran."""
    path = out / "check.json"
    return json.loads(path.read_text()) if path.is_file() else None


def check_lines(check: dict | None) -> str:
    if check is None:
        return "\nAttention check: did not run (see logs/check.log).\n"
    lines = [
        "",
        f"Attention check on {check['backend']} (bf16 against the float32 reference, small shape):",
        "",
        "| asked | ran | max abs logit diff | max rel grad diff | loss diff |",
        "|---|---|---|---|---|",
    ]
    for asked, row in check["rows"].items():
        if "error" in row:
            lines.append(f"| {asked} | {row['ran']} | error: {row['error']} | | |")
            continue
        lines.append(
            f"| {asked} | {row['ran']} | {row['max_abs_logit_diff']:.2e} "
            f"| {row['max_rel_grad_diff']:.2e} | {row['loss_diff']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def table(summary: dict) -> str:
    fpt = summary["flops_per_token"]
    head = f"MFU at {summary['peak_tflops']:g} TFLOP/s (dense bf16 peak) and " + (
        f"{fpt / 1e9:.3f} GFLOP/token (nlpjax's count)" if fpt else "no FLOP count"
    )
    lines = [
        f"| run ({summary['size']}) | tokens/s | vs torch | MFU | loop's MFU | timed steps "
        "| last train loss | eval loss | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage, row in summary["rows"].items():

        def fmt(key, spec, row=row):
            return format(row[key], spec) if key in row else "-"

        label = row.get("label", STAGES[stage])
        lines.append(
            f"| {label} | {fmt('tokens_per_sec', ',.0f')} | {fmt('vs_torch', '.2f')}"
            f" | {fmt('mfu', '.1%')} | {fmt('loop_mfu', '.1%')} | {fmt('timed_steps', 'd')}"
            f" | {fmt('train_loss', '.3f')} | {fmt('eval_loss', '.3f')} | {row['status']} |"
        )
    return head + "\n\n" + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", default="gpt2-small")
    parser.add_argument("--peak_tflops", type=float, default=989.0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    summary = collect(out, args.size, args.peak_tflops)
    summary["attention_check"] = attention_check(out)
    text = table(summary) + check_lines(summary["attention_check"])
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
