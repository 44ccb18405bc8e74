"""The command line: exact resume after SIGKILL and SIGTERM, and clear errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from nlpjax import cli
from nlpjax.api import restore_run as restore_trained
from nlpjax.training.metrics import read_metrics
from tests.conftest import REPO, TINY

# Every step logged, one step per dispatch, checkpoints every 10 steps.
RESUME_STEPS = 150  # killed right after the first checkpoint (step 10): ample margin
RESUME_FLAGS = [
    f"--config.train.steps={RESUME_STEPS}",
    "--config.train.steps_per_dispatch=1",
    "--config.train.log_every=1",
    "--config.checkpoint.every=10",
    "--config.checkpoint.max_to_keep=100",
    "--config.eval.every=200",
    "--config.train.progress=false",
]


def _train_cmd(workdir):
    return [
        sys.executable,
        "-m",
        "nlpjax.cli",
        "train",
        f"--config={TINY}",
        f"--workdir={workdir}",
        *RESUME_FLAGS,
    ]


def _start(workdir):
    return subprocess.Popen(
        _train_cmd(workdir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_checkpoint(workdir, proc, timeout=120):
    ckpts = Path(workdir) / "checkpoints"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before its first checkpoint:\n{proc.stdout.read()}")
        time.sleep(0.02)
    pytest.fail("no checkpoint appeared")


def _run(workdir):
    done = subprocess.run(_train_cmd(workdir), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _losses(workdir):
    return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    _run(workdir)
    return workdir


def _assert_same_run(workdir, reference):
    got, want = _losses(workdir), _losses(reference)
    assert sorted(got) == list(range(1, RESUME_STEPS + 1))
    assert got == want  # bitwise: JSON floats round-trip exactly
    params = [
        jax.tree_util.tree_leaves(restore_trained(w)[0].state.params) for w in (workdir, reference)
    ]
    for a, b in zip(*params, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # make test: test_resume.py and test_task_v2.py resume after SIGKILL
def test_resume_after_sigkill_is_exact(reference, tmp_path):
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert killed_at < RESUME_STEPS
    done = _run(tmp_path)
    assert "Resumed from step" in done.stdout
    _assert_same_run(tmp_path, reference)


def test_sigterm_saves_exits_zero_and_resumes_to_the_same_state(reference, tmp_path):
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert f"Signal {int(signal.SIGTERM)} received: saved step" in out
    saved = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert 0 < saved < RESUME_STEPS
    _run(tmp_path)
    _assert_same_run(tmp_path, reference)


def _cli(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _error_line(out: str) -> str:
    """The one ``error: ...`` line a bad input prints (no traceback)."""
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out, out
    return lines[0]


def test_missing_data_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NLPJAX_DATA_DIR", str(tmp_path / "nodata"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    code = cli.main(["train", f"--config={TINY}", f"--workdir={tmp_path / 'w'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "nodata/tinyshakespeare/input.txt" in err and "NLPJAX_DATA_DIR" in err


def test_unknown_config_key_error(tmp_path, capsys):
    code, out = _cli(
        capsys,
        "train",
        f"--config={TINY}",
        f"--workdir={tmp_path}",
        "--config.optim.learning_rate=1e-3",
    )
    assert code == 2
    assert "unknown config key 'optim.learning_rate'" in _error_line(out)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_generate_without_checkpoint_error(tmp_path, capsys):
    code, out = _cli(capsys, "generate", f"--workdir={tmp_path}", "--prompt=hi")
    assert code == 2 and "not a training workdir" in _error_line(out)


def test_eval_generate_plot_and_prompt_errors(reference, capsys, tmp_path):
    code, out = _cli(capsys, "eval", f"--workdir={reference}")
    assert code == 0
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("eval/"))
    assert float(lines["eval/perplexity"]) == pytest.approx(
        np.exp(float(lines["eval/loss"])), rel=1e-3
    )
    args = [
        "generate",
        f"--workdir={reference}",
        "--prompt=ROMEO:",
        "--max_new_tokens=30",
        "--temperature=0.8",
        "--top_k=40",
        "--seed=0",
    ]
    code = cli.main(args)
    first, err = capsys.readouterr()
    assert code == 0 and first.startswith("ROMEO:") and len(first.rstrip("\n")) >= 36
    assert "generated 30 tokens" in err and "tokens/s" in err
    assert cli.main(args) == 0 and capsys.readouterr().out == first  # same seed, same text
    code, out = _cli(capsys, "generate", f"--workdir={reference}", "--prompt=Привет")
    assert code == 2 and "not in the vocabulary" in _error_line(out)
    code, out = _cli(capsys, "plot", f"--workdir={reference}", f"--output={tmp_path / 'c.png'}")
    assert code == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_unrecognized_argument_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--workdir=/tmp/x", "--bogus=1"])
    assert exit_info.value.code == 2  # argparse's usage error, same code as other bad input
    assert os.environ["NLPJAX_OFFLINE"] == "1"
