"""Issue 10 part 5: the synthetic addition data and the experiment drivers' tiny variants."""

import importlib.util
import re
from pathlib import Path

import pytest

from nlpjax import cli
from nlpjax.api import load_config
from nlpjax.data import sources, synthetic
from nlpjax.errors import DataError
from nlpjax.tasks.lm import LMTask

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PAUSE = str(EXPERIMENTS / "pause_addition.py")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_addition_lines_are_correct_sums_of_fixed_width():
    spec = synthetic.AdditionSpec(digits=3, train=300, validation=50, seed=4)
    for split, count in (("train", 300), ("validation", 50)):
        lines = synthetic.addition_lines(spec, split)
        assert len(lines) == count
        for line in lines:
            assert re.fullmatch(r"\d{3}\+\d{3}=\d{4}", line), line
            a, b, c = map(int, re.split(r"[+=]", line))
            assert a + b == c


def test_addition_splits_are_seeded_disjoint_and_validation_ignores_the_train_size():
    spec = synthetic.AdditionSpec(digits=2, train=2000, validation=100, seed=0)
    train, valid = (synthetic.addition_lines(spec, s) for s in ("train", "validation"))
    assert len(set(train)) == 2000 and not set(train) & set(valid)
    assert synthetic.addition_lines(spec, "train") == train  # a function of the spec
    bigger = synthetic.AdditionSpec(digits=2, train=3000, validation=100, seed=0)
    assert synthetic.addition_lines(bigger, "validation") == valid
    other_seed = synthetic.AdditionSpec(digits=2, train=2000, validation=100, seed=1)
    assert synthetic.addition_lines(other_seed, "validation") != valid


def test_the_addition_spec_is_a_dataset_with_options():
    spec = "addition:2;train=40;validation=8;seed=3"
    assert sources.split_sizes(spec) == {"train": 40, "validation": 8}
    docs = sources.load_documents(spec, "validation")
    assert docs == synthetic.addition_lines(synthetic.AdditionSpec(2, 40, 8, 3), "validation")
    with pytest.raises(DataError, match="bad option 'size=3'.*train, validation, seed"):
        sources.parse_dataset("addition:2;size=3")


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("addition:2", "addition:2 has 10,000 problems; train \\+ validation = 20,500"),
        ("addition:x", "addition: digits must be a whole number, got 'x'"),
        ("addition:12", "addition:12: DIGITS must be 1..9"),
    ],
)
def test_a_bad_addition_spec_is_refused_by_the_cli(tmp_path, capsys, dataset, message):
    workdir = tmp_path / "run"
    args = ["train", f"--config={PAUSE}:tiny", f"--workdir={workdir}"]
    code = cli.main([*args, f"--config.data.dataset={dataset}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert not workdir.exists() or not any(workdir.iterdir())


def test_addition_reads_as_prompt_answer_rows_with_pauses():
    overrides = {"data.pause_finetune": "2"}
    task = LMTask(load_config(f"{PAUSE}:tiny_finetune", overrides))
    prompt, answer = task.answer_examples("validation")[0]
    line = sources.load_documents(task.config.data.dataset, "validation")[0]
    assert task.tokenizer.decode(prompt) + task.tokenizer.decode(answer) == line
    assert task.tokenizer.decode(prompt).endswith("=") and len(answer) == 3
    batch = next(task.train_iterator())
    assert ((batch["tokens"] == task.pause_id).sum(axis=1) == 2).all()


def test_the_pause_grid_table_has_a_row_per_pretraining_and_m_ft():
    grid = _module("pause_grid")
    scores = {
        f"{k}/{ft}/{m}/0": 0.25 for k in ("standard", "pause") for ft in (0, 2) for m in (0, 2)
    }
    scores["pause/2/2/0"] = 1.0
    lines = grid.format_table(scores, "tiny").splitlines()
    assert lines[0] == "| pretraining | finetuning | M_inf=0 | M_inf=2 |"
    assert lines[2] == "| standard | standard (M_ft=0) | **25.0 ± 0.0** | 25.0 ± 0.0 |"
    assert lines[5] == "| pause | pause, M_ft=2 | 25.0 ± 0.0 | **100.0 ± 0.0** |"


@pytest.mark.slow  # six tiny runs and their generation: a minute on a busy CPU
def test_the_pause_grid_runs_its_tiny_variant(tmp_path):
    grid = _module("pause_grid")
    scores = grid.run_grid(tmp_path, "tiny")
    assert len(scores) == 2 * 2 * 2  # pretrainings x M_ft x M_inf, one seed
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert (tmp_path / "finetune-pause-m2-s0" / "checkpoints").is_dir()
    assert "init_from" in (tmp_path / "finetune-pause-m2-s0" / "config.json").read_text()


@pytest.mark.slow  # three tiny runs, their probes and plots
def test_the_registers_table_runs_its_tiny_variant(tmp_path):
    table = _module("registers_table")
    runs = [run for run in table.RUNS if run[0] in ("registers0", "registers4", "sink")]
    rows = [table.run_one(tmp_path, "tiny", run, tmp_path / "plots") for run in runs]
    assert rows[0]["register_mass"] == 0 and rows[1]["register_mass"] > 0
    assert rows[1]["params"] - rows[0]["params"] == 4 * 32  # four learned vectors
    assert rows[2]["params"] - rows[0]["params"] == 32 and rows[2]["register_mass"] == 0
    assert rows[2]["first_mass"] != rows[2]["first_token_mass"]  # position 0 is the sink
    assert (tmp_path / "plots" / "registers4_attention.png").read_bytes()[:4] == b"\x89PNG"
    assert [r["prefix"] for r in rows] == ["0 registers", "4 registers", "sink token"]
    assert table.format_table(rows).count("\n") == 4
