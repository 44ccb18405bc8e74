"""experiments/t5_pretrain_report.py: the finetuned run's curve is shifted by the
pretraining steps, so both runs share one axis of total steps."""

import json

from tests.conftest import REPO


def _load_report():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "t5_pretrain_report", REPO / "experiments" / "t5_pretrain_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(workdir, rows):
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(workdir)


def test_report_puts_finetuning_after_pretraining_on_one_step_axis(tmp_path, capsys):
    report = _load_report()
    pre = _metrics(
        tmp_path / "pre",
        [
            {"step": 10, "train/loss": 5.0},
            {"step": 20, "eval/loss": 4.0},
            {"step": 30, "train/loss": 3.0},
        ],
    )
    ft = _metrics(
        tmp_path / "ft",
        [
            {"step": 5, "train/loss": 2.0},
            {"step": 10, "eval/loss": 2.5, "eval/bleu": 12.0, "eval/chrf": 30.0},
        ],
    )
    scratch = _metrics(
        tmp_path / "scratch", [{"step": 40, "eval/loss": 2.9, "eval/bleu": 9.0, "eval/chrf": 25.0}]
    )
    out = tmp_path / "out"
    assert (
        report.main(
            [f"--pretrain={pre}", f"--finetune={ft}", f"--scratch={scratch}", f"--out={out}"]
        )
        == 0
    )
    result = json.loads((out / "t5_pretrain.json").read_text())
    assert result["pretrain_steps"] == 30  # the pretraining run's last logged step
    assert result["finetune"] == [
        {"total_step": 40, "eval/loss": 2.5, "eval/bleu": 12.0, "eval/chrf": 30.0}
    ]
    assert result["scratch"][0]["total_step"] == 40
    assert result["pretrain_eval"] == [{"total_step": 20, "eval/loss": 4.0}]
    assert (out / "t5_pretrain_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "finetune total step    40: eval/loss 2.500, eval/bleu 12.000" in capsys.readouterr().out


def test_report_names_a_run_that_has_not_trained(tmp_path):
    import pytest

    report = _load_report()
    with pytest.raises(SystemExit, match="no metrics.jsonl in .*missing: train that run first"):
        report.main(
            [
                f"--pretrain={tmp_path / 'missing'}",
                "--finetune=x",
                "--scratch=y",
                f"--out={tmp_path}",
            ]
        )
