"""The GPU speed harness (benchmarks/accelerator.sh), checked on CPU at the tiny shape."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nlpjax.api import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import accel_report  # noqa: E402

CONFIG = str(REPO / "experiments" / "gpt2_small_char.py")


@pytest.mark.parametrize("size,variant", [("gpt2-small", "bench"), ("tiny", "tiny")])
def test_the_torch_twin_trains_the_shape_of_the_config_file(size, variant):
    accel_torch = pytest.importorskip("accel_torch")
    model = load_config(f"{CONFIG}:{variant}").model
    data = load_config(f"{CONFIG}:{variant}").data
    twin, batch = accel_torch.twin_config(size)
    assert (twin.num_layers, twin.num_heads, twin.d_model, twin.ff_dim, twin.max_len) == (
        model.num_layers,
        model.num_heads,
        model.d_model,
        model.d_ff,
        model.max_len,
    )
    assert (batch, twin.max_len) == (data.batch_size, data.context)


def test_gpt2_small_bench_is_the_reference_shape():
    cfg = load_config(f"{CONFIG}:bench")
    m = cfg.model
    assert (m.num_layers, m.num_heads, m.d_model, cfg.data.context, cfg.data.batch_size) == (
        12,
        12,
        768,
        1024,
        12,
    )
    assert (m.dtype, m.attention) == ("auto", "auto")
    assert accel_report.flops_per_token("gpt2-small") == pytest.approx(0.623e9, rel=2e-3)


def _write_run(out: Path, stage: str, rates: list[float], rc: int) -> None:
    run = out / "runs" / stage
    run.mkdir(parents=True)
    rows = [
        {"step": 50 * (i + 1), "train/loss": 3.0 - i, "tokens_per_sec": r, "mfu": 0.1}
        for i, r in enumerate(rates)
    ]
    rows.append({"step": 50 * len(rates), "eval/loss": 1.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "logs" / f"{stage}.rc").write_text(f"{rc}\n")


def test_report_keeps_the_numbers_of_stages_that_ran_when_one_fails(tmp_path):
    (tmp_path / "logs").mkdir()
    _write_run(tmp_path, "nlpjax", [1.0, 600_000.0, 700_000.0], 0)  # first window: warm-up
    _write_run(tmp_path, "nlpjax_f32", [1.0, 200_000.0], 124)  # timed out after logging
    (tmp_path / "logs" / "nlpjax_xla.rc").write_text("1\n")  # crashed: no metrics at all
    (tmp_path / "logs" / "torch.rc").write_text("0\n")
    torch = {
        "tokens_per_sec": 500_000.0,
        "steps": 100,
        "amp": "bfloat16",
        "compile": True,
        "fused_adamw": True,
        "final_loss": 4.1,
    }
    (tmp_path / "torch.json").write_text(json.dumps(torch))
    assert accel_report.main([f"--out={tmp_path}", "--size=gpt2-small"]) == 0
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    fpt = accel_report.flops_per_token("gpt2-small")
    assert rows["nlpjax"]["tokens_per_sec"] == 650_000.0
    assert rows["nlpjax"]["vs_torch"] == pytest.approx(1.3)
    assert rows["nlpjax"]["mfu"] == pytest.approx(650_000.0 * fpt / 989e12)
    assert rows["nlpjax"]["timed_steps"] == 100 and rows["nlpjax"]["eval_loss"] == 1.5
    assert rows["nlpjax_f32"]["tokens_per_sec"] == 200_000.0
    assert rows["nlpjax_f32"]["status"] == "rc=124"
    assert rows["nlpjax_xla"]["status"].startswith("failed (rc=1)")
    assert "tokens_per_sec" not in rows["nlpjax_xla"]
    table = (tmp_path / "table.md").read_text()
    assert "PyTorch twin: bfloat16 autocast, torch.compile, SDPA, fused AdamW" in table
    assert "| 650,000 | 1.30 |" in table


def test_harness_rejects_an_unknown_size():
    proc = subprocess.run(
        ["bash", "benchmarks/accelerator.sh", "--size=huge"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "error: --size must be gpt2-small or tiny" in proc.stderr


@pytest.mark.slow
def test_the_whole_harness_runs_at_the_tiny_shape_on_cpu(tmp_path):
    pytest.importorskip("torch")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a one-GPU machine
    proc = subprocess.run(
        ["bash", "benchmarks/accelerator.sh", "--size=tiny"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert set(rows) == {"nlpjax", "nlpjax_xla", "nlpjax_f32", "torch"}
    for stage, row in rows.items():
        assert row["status"] == "ok", (stage, row)
        assert row["tokens_per_sec"] > 0 and "mfu" in row
    assert rows["torch"]["vs_torch"] == 1.0
    for stage in ("nlpjax", "nlpjax_xla", "nlpjax_f32"):
        assert rows[stage]["train_loss"] < 4.1  # learning from ln(65) ~ 4.17
    assert "| nlpjax train, defaults" in proc.stdout
    check = json.loads((tmp_path / "summary.json").read_text())["attention_check"]["rows"]
    assert check["xla"]["ran"] == "xla" and check["cudnn"]["ran"] == "xla"  # no GPU here
    assert check["xla"]["max_abs_logit_diff"] < 5e-2 and check["xla"]["max_rel_grad_diff"] < 5e-2


def test_a_failing_torch_compile_falls_back_to_eager_and_says_so(monkeypatch):
    accel_torch = pytest.importorskip("accel_torch")
    torch = pytest.importorskip("torch")

    def broken(model):
        def call(*args):
            raise RuntimeError("no C compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    result = accel_torch.run("tiny", steps=2, warmup=1, compile_model=True, amp="none", seed=0)
    assert result["compile"] is False and "no C compiler found" in result["compile_error"]
    assert result["tokens_per_sec"] > 0 and result["steps"] == 2
