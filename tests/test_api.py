"""The Python API (``import nlpjax``): train, load, evaluate and generate from a script
give what the CLI gives, and a task registered from outside trains from a dict config."""

import subprocess
import sys
from pathlib import Path

import pytest

import nlpjax
from nlpjax import cli
from nlpjax.config import Config, load_config_file
from nlpjax.errors import ConfigError
from nlpjax.tasks.lm import LMTask
from nlpjax.tasks.registry import TASKS
from tests.conftest import REPO, TINY

QUIET = {"train.progress": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("api") / "run"
    summary = nlpjax.train(nlpjax.load_config(TINY, QUIET), workdir)
    return workdir, summary


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_train_returns_the_summary(trained):
    _, summary = trained
    assert summary["start_step"] == 0 and summary["final_step"] == 40
    assert summary["num_params"] == 19_744
    assert 0 < summary["eval/loss"] < 4.2  # below ln(65): the tiny run learned something


def test_load_exposes_config_params_tokenizer(trained):
    workdir, summary = trained
    run = nlpjax.load(workdir)
    assert run.step == 40
    assert isinstance(run.config, Config)
    assert run.config.train.steps == 40 and run.config.model.vocab_size == 65
    assert run.tokenizer.decode(run.tokenizer.encode("ROMEO:")) == "ROMEO:"
    assert nlpjax.load(workdir, step=20).step == 20
    assert run.evaluate()["loss"] == pytest.approx(summary["eval/loss"], rel=1e-6)


def test_evaluate_equals_the_cli(trained, capsys):
    workdir, _ = trained
    numbers = nlpjax.load(workdir).evaluate("validation")
    code, out, err = _cli(capsys, "eval", f"--workdir={workdir}")
    assert code == 0, err
    printed = {
        line.split()[0].removeprefix("eval/"): line.split()[1]
        for line in out.splitlines()
        if line.startswith("eval/")
    }
    assert set(printed) == {"loss", "perplexity", "bits_per_char", "bits_per_byte"}
    assert printed == {k: f"{v:.6f}" for k, v in numbers.items()}


def test_generate_equals_the_cli(trained, capsys):
    workdir, _ = trained
    sampling = {"temperature": 0.8, "top_k": 10, "top_p": 0.95, "seed": 7}
    loaded = nlpjax.load(workdir)
    text = loaded.generate("ROMEO:", max_new_tokens=24, **sampling)
    assert len(text) == 24  # one character a token
    generator = loaded.generator(sampling["temperature"], sampling["top_k"], sampling["top_p"])
    assert "".join(generator.stream("ROMEO:", 24, seed=sampling["seed"])) == text
    flags = [f"--{k}={v}" for k, v in sampling.items()]
    code, out, err = _cli(
        capsys, "generate", f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=24",
        *flags, "--no-stream",
    )  # fmt: skip
    assert code == 0, err
    assert out == "ROMEO:" + text + "\n"
    assert "generated 24 tokens" in err
    other = loaded.generate("ROMEO:", 24, **{**sampling, "seed": 8})
    assert other != text


class RenamedLM(LMTask):
    """A family defined outside the package (here: the LM under another name)."""


def test_a_task_registered_from_outside_trains_from_a_dict(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(TASKS, "renamed_lm", TASKS.get("renamed_lm", RenamedLM))
    tree = load_config_file(TINY).to_dict()
    tree.update(task="renamed_lm")
    tree["train"].update(steps=10, progress=False)
    with pytest.raises(ConfigError, match="known tasks: lm, renamed_lm, rnn_classifier, rnn_lm"):
        nlpjax.load_config({**tree, "task": "nope"})
    summary = nlpjax.train(tree, tmp_path / "w")
    assert summary["final_step"] == 10 and summary["num_params"] == 19_744
    run = nlpjax.load(tmp_path / "w")
    assert type(run.task) is RenamedLM and run.config.task == "renamed_lm"
    code, out, err = _cli(capsys, "eval", f"--workdir={tmp_path / 'w'}")  # the CLI sees it
    assert code == 0 and "eval/loss" in out, err


def test_register_task_refuses_a_taken_name_and_a_non_task(monkeypatch):
    monkeypatch.setitem(TASKS, "lm", LMTask)
    assert nlpjax.register_task("lm", LMTask) is LMTask  # the same class again: no-op
    with pytest.raises(ConfigError, match="already registered"):
        nlpjax.register_task("lm", RenamedLM)
    with pytest.raises(ConfigError, match="no model_config_cls, data_config_cls"):
        nlpjax.register_task("thing", object)
    assert "thing" not in TASKS


def test_unknown_task_lists_the_known_ones_and_keeps_the_workdir(trained, capsys):
    workdir, _ = trained
    before = _snapshot(workdir)
    code, out, err = _cli(
        capsys, "train", f"--config={TINY}", f"--workdir={workdir}", "--config.task=lmm"
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: unknown task 'lmm'; known tasks: {', '.join(sorted(TASKS))} (set the "
        "config's 'task' to one of them, or register yours with nlpjax.register_task)"
    ]
    assert _snapshot(workdir) == before


def test_import_nlpjax_loads_no_jax():
    code = "import sys, nlpjax; print(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "('jax', 'flax', 'optax', 'nlpjax')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['nlpjax', 'nlpjax.errors']"


@pytest.mark.slow  # trains twice; run by make test-all
def test_the_sweep_example_tiny_variant_ranks_its_learning_rates(tmp_path):
    """experiments/sweep_lr.py:tiny — 10 steps at lr 1e-4 barely move; at 3e-3 they do."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_lr", REPO / "experiments" / "sweep_lr.py")
    sweep_lr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep_lr)
    rows = sweep_lr.sweep(tmp_path, "tiny")
    assert [r["lr"] for r in rows] == [1e-4, 3e-3]
    slow, fast = rows
    assert fast["loss"] < slow["loss"] - 0.1 and fast["train_loss"] < slow["train_loss"]
    assert "bits/char" in sweep_lr.format_table(rows).splitlines()[0]
