"""CLI hardening: help texts, workdir errors, Ctrl-C, eval options, generation.

Exit codes asserted everywhere: 2 bad input (one ``error:`` line), 1 divergence, 130
Ctrl-C before training.
"""

import contextlib
import io
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax import api, cli
from nlpjax.inference.decode import Generator, SamplingConfig
from nlpjax.training.metrics import read_metrics
from tests.conftest import REPO, TINY

# The tokenizer override; another branch turns data.tokenizer into a section
# (data.tokenizer.kind=...): adapt this one constant when merging.
BYTE_TOKENIZER = "--config.data.tokenizer.kind=byte"
SPM_TOKENIZER = "--config.data.tokenizer.kind=sentencepiece"
QUIET = "--config.train.progress=false"


def _cli(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _train(workdir, *overrides):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["train", f"--config={TINY}", f"--workdir={workdir}", QUIET, *overrides])
    assert code == 0, out.getvalue() + err.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A tiny char run (checkpoints 20 and 40 kept) and what `train` printed."""
    workdir = tmp_path_factory.mktemp("char")
    return workdir, _train(workdir, "--config.checkpoint.max_to_keep=5")


@pytest.fixture(scope="module")
def byte_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("byte")
    _train(workdir, BYTE_TOKENIZER, "--config.train.steps=20")
    return workdir


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- item 14: help texts and the printed config overrides ----------------------------------


def test_help_is_plain_text_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "thin:" not in text  # no reST markup, no internal notes
    assert "examples:" in text and "exit codes:" in text and "130" in text
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--config.SECTION.KEY=VALUE" in text and "--config.optim.lr=3e-4" in text
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the last half context of tokens is re-encoded into a fresh cache" in text
    assert "--no-stream" in text


def test_train_prints_its_config_overrides(char_run):
    _, printed = char_run
    lines = [line for line in printed.splitlines() if line.startswith("config overrides:")]
    assert lines == [
        "config overrides: checkpoint.max_to_keep 3 -> 5; train.progress True -> False"
    ]


def test_train_and_eval_freeze_the_imported_heap_once(monkeypatch, capsys, tmp_path):
    import gc

    frozen = gc.get_freeze_count()
    gc.unfreeze()
    monkeypatch.setattr(cli, "_imports_frozen", False)
    try:
        cli._freeze_imports()
        count = gc.get_freeze_count()
        assert count > 10_000  # the imported modules (about 180,000 objects)
        made_after = [[] for _ in range(10)]  # tracked objects made after the freeze
        cli._freeze_imports()
        assert gc.get_freeze_count() == count and made_after  # once per process
    finally:
        gc.unfreeze()
        if frozen:
            gc.freeze()
    calls = []
    monkeypatch.setattr(cli, "_freeze_imports", lambda: calls.append(1))
    refused = ["train", f"--config={TINY}", f"--workdir={tmp_path}", "--config.x=1"]
    code, _, err = _cli(capsys, *refused)
    assert code == 2 and "error:" in err  # refused after the freeze, before training
    code, _, _ = _cli(capsys, "eval", f"--workdir={tmp_path / 'none'}")
    assert code == 2
    assert calls == [1, 1]


# -- item 15: eval --split, --step, bits per character / byte ------------------------------


def _eval(capsys, workdir, *args):
    code, out, err = _cli(capsys, "eval", f"--workdir={workdir}", *args)
    assert code == 0, out + err
    return {
        k: float(v)
        for k, v in (line.split(" ", 1) for line in out.splitlines() if line.startswith("eval/"))
    }, out


def test_eval_step_picks_that_checkpoint(char_run, capsys):
    workdir, _ = char_run
    logged = {r["step"]: r["eval/loss"] for r in read_metrics(workdir) if "eval/loss" in r}
    at_20, out = _eval(capsys, workdir, "--step=20")
    assert out.startswith("step 20, split validation")
    assert at_20["eval/loss"] == pytest.approx(logged[20], abs=2e-6)  # same batches as training
    latest, out = _eval(capsys, workdir)
    assert out.startswith("step 40,")
    assert latest["eval/loss"] == pytest.approx(logged[40], abs=2e-6)
    assert latest["eval/loss"] != pytest.approx(at_20["eval/loss"], abs=1e-3)
    before = _snapshot(workdir)
    code, out, err = _cli(capsys, "eval", f"--workdir={workdir}", "--step=7")
    assert code == 2
    _one_error_line(err, "--step=7", "kept steps: 20, 40")
    assert _snapshot(workdir) == before


def test_eval_split_and_bits_per_character(char_run, capsys):
    workdir, _ = char_run
    val, _ = _eval(capsys, workdir)
    # a char tokenizer: one token per character, so bits/char = nats per token / ln 2
    assert val["eval/bits_per_char"] == pytest.approx(val["eval/loss"] / math.log(2), abs=2e-6)
    train, out = _eval(capsys, workdir, "--split=train")
    assert out.startswith("step 40, split train")
    assert train["eval/loss"] != pytest.approx(val["eval/loss"], abs=1e-4)
    code, out, err = _cli(capsys, "eval", f"--workdir={workdir}", "--split=test")
    assert code == 2
    _one_error_line(err, "'test'", "train, validation")


def test_eval_bits_per_byte_for_bytes(byte_workdir, capsys):
    val, _ = _eval(capsys, byte_workdir)
    # Tiny Shakespeare is ASCII: one byte token per byte and per character
    assert val["eval/bits_per_byte"] == pytest.approx(val["eval/loss"] / math.log(2), abs=2e-6)
    assert val["eval/bits_per_char"] == pytest.approx(val["eval/bits_per_byte"], abs=2e-6)


# -- items 8, 10, 11: generation -----------------------------------------------------------


def test_generate_zero_new_tokens_prints_the_prompt(char_run, capsys):
    workdir, _ = char_run
    code, out, err = _cli(
        capsys, "generate", f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=0"
    )
    assert code == 0, err
    assert out == "ROMEO:\n"
    assert "generated 0 tokens" in err


def test_streamed_text_equals_the_non_streamed_text(byte_workdir, capsys):
    prompt = "Привет, ROMEO"  # multi-byte characters: bytes must not be printed half-done
    args = ["generate", f"--workdir={byte_workdir}", f"--prompt={prompt}", "--seed=3"]
    args += ["--max_new_tokens=40", "--temperature=1.0"]  # 40 > context 16: the window slides
    code, streamed, err = _cli(capsys, *args, "--stream")
    assert code == 0, err
    assert "tokens/s" in err
    code, whole, _ = _cli(capsys, *args, "--no-stream")
    assert code == 0
    assert streamed == whole and streamed.startswith(prompt)
    assert len(streamed.encode("utf-8")) > len(prompt.encode("utf-8")) + 20


class _Boosted:
    """Wraps a decoder so that the ``boosted`` ids get the largest logits by far."""

    def __init__(self, model, boosted):
        self.inner, self.config = model, model.config
        self.boost_V = jnp.zeros(model.config.vocab_size).at[jnp.asarray(boosted)].set(1e4)

    def init(self, *args, **kwargs):
        return self.inner.init(*args, **kwargs)

    def apply(self, *args, **kwargs):
        out = self.inner.apply(*args, **kwargs)
        if isinstance(out, tuple):
            return out[0] + self.boost_V[None, None, :], out[1]
        return out + self.boost_V[None, None, :]


@pytest.mark.slow  # make test: test_decode.py bans ids at the sampler
def test_reserved_ids_are_never_generated(byte_workdir, capsys, monkeypatch):
    run, _ = api.restore_run(byte_workdir)
    tokenizer = run.task.tokenizer
    reserved = tokenizer.non_text_ids()
    for piece in ("<pad>", "<unk>", "<s>", "<pause>", "<sink>", "<reg_0>"):
        assert any(tokenizer.special_piece(i) == piece for i in reserved), piece
    assert tokenizer.eos_id not in reserved
    model = _Boosted(run.task.model, reserved)
    prompt = tokenizer.encode("ROMEO:")[None]
    unmasked = Generator(model, run.state.params, SamplingConfig(0.0)).generate(prompt, 30)
    assert np.isin(unmasked, reserved).all()  # the boost works: reserved ids would win
    for sampling in (SamplingConfig(0.0), SamplingConfig(1.0, top_k=5)):
        masked = Generator(model, run.state.params, sampling, reserved).generate(prompt, 30)
        assert not np.isin(masked, reserved).any()

    run.task.model = model  # the CLI samples from this run, restored once above
    monkeypatch.setattr(api, "restore_trained", lambda workdir, tasks, step: (run, 20))
    args = ["generate", f"--workdir={byte_workdir}", "--prompt=ROMEO:", "--max_new_tokens=40"]
    code, out, err = _cli(capsys, *args, "--temperature=1", "--seed=1", "--stream")
    assert code == 0, err
    assert len(out) > len("ROMEO:\n") + 10
    assert not any(p in out for p in ("<pad>", "<unk>", "<s>", "<pause>", "<sink>", "<reg_"))


@pytest.fixture(scope="module")
def spm_workdir(tmp_path_factory):
    """A tiny SentencePiece run on two small text files (seconds, not minutes)."""
    root = tmp_path_factory.mktemp("spm")
    source = Path(os.environ["NLPJAX_DATA_DIR"], "tinyshakespeare", "input.txt")
    source = source.read_text().splitlines()
    (root / "train.txt").write_text("\n".join(source[:3000]) + "\n")
    (root / "valid.txt").write_text("\n".join(source[3000:3400]) + "\n")
    workdir = root / "run"
    dataset = f"--config.data.dataset=files:{root / 'train.txt'};validation={root / 'valid.txt'}"
    _train(
        workdir,
        SPM_TOKENIZER,
        dataset,
        "--config.train.steps=5",
        "--config.eval.every=5",
        "--config.checkpoint.every=5",
    )
    return workdir


def test_prompt_outside_the_sentencepiece_vocabulary_is_an_error(spm_workdir, capsys):
    before = _snapshot(spm_workdir)
    code, out, err = _cli(
        capsys,
        "generate",
        f"--workdir={spm_workdir}",
        "--prompt=ROMEO: Привет",
        "--max_new_tokens=5",
    )
    assert code == 2 and out == ""
    _one_error_line(err, "tokenizer.json", "<unk>", "'П'", "'т'")
    assert "'R'" not in err
    assert _snapshot(spm_workdir) == before
    code, out, err = _cli(
        capsys, "generate", f"--workdir={spm_workdir}", "--prompt=ROMEO:", "--max_new_tokens=5"
    )
    assert code == 0 and out.startswith("ROMEO:"), err


def test_unknown_words_are_listed_for_a_word_vocabulary():
    from nlpjax.data.word_tokenizer import WordTokenizer
    from nlpjax.inference.prompt import encode_prompt

    tokenizer = WordTokenizer.from_text("to be or not to be")
    with pytest.raises(ValueError, match=r"<unk>: 'question', 'nobly'"):
        encode_prompt(tokenizer, "to be question nobly be", "tokenizer.json")
    assert list(encode_prompt(tokenizer, "to be", "tokenizer.json")) == [
        5,
        4,
    ]  # by count, ties a-z


# -- item 7: a workdir that is a file, a read-only workdir ---------------------------------


def _can_write(directory: Path) -> bool:
    try:
        (directory / ".probe").write_text("x")
        (directory / ".probe").unlink()
        return True
    except OSError:
        return False


@pytest.fixture
def readonly_copy(char_run, tmp_path):
    """A copy of the char run on a truly read-only directory.

    Not root: ``chmod -w``. Root ignores permission bits, so as root the copy lives on a
    tmpfs remounted read-only (a real EROFS); skipped only if mounting is not permitted.
    """
    workdir, _ = char_run
    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = False
    if os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"running as root and cannot mount a read-only tmpfs: {done.stderr!r}")
        mounted = True
    copy = mount / "run"
    shutil.copytree(workdir, copy)
    try:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        else:
            for p in [copy, *copy.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
            mount.chmod(0o555)
        assert not _can_write(copy) and not _can_write(mount)
        yield copy
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=True)
        else:
            for p in [mount, *mount.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_read_only_workdir_is_a_clear_error(readonly_copy, capsys, tmp_path):
    before = _snapshot(readonly_copy)
    for workdir in (readonly_copy, readonly_copy.parent / "new_run"):  # resume, fresh start
        code, _, err = _cli(capsys, "train", f"--config={TINY}", f"--workdir={workdir}", QUIET)
        assert code == 2
        _one_error_line(err, f"--workdir={workdir}", "not writable")
    code, _, err = _cli(capsys, "plot", f"--workdir={readonly_copy}")
    assert code == 2
    _one_error_line(err, f"--workdir={readonly_copy}", "not writable")
    assert _snapshot(readonly_copy) == before
    output = tmp_path / "curves.png"  # reading a read-only workdir is fine
    code, _, err = _cli(capsys, "plot", f"--workdir={readonly_copy}", f"--output={output}")
    assert code == 0 and output.read_bytes()[:4] == b"\x89PNG", err


def test_workdir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("my notes")
    commands = [
        ["train", f"--config={TINY}", f"--workdir={path}", QUIET],
        ["train", f"--config={TINY}", f"--workdir={path / 'sub'}", QUIET],
        ["eval", f"--workdir={path}"],
        ["generate", f"--workdir={path}"],
        ["plot", f"--workdir={path}"],
    ]
    for args in commands:
        code, _, err = _cli(capsys, *args)
        assert code == 2, args
        _one_error_line(err, str(path), "is a file, not a directory")
    assert path.read_text() == "my notes" and sorted(tmp_path.iterdir()) == [path]


# -- item 9: Ctrl-C during start-up --------------------------------------------------------


@pytest.mark.parametrize("phase", ["importing", "compiling"])
def test_ctrl_c_during_startup_exits_130_quietly(tmp_path, phase):
    # A step budget the run cannot finish, so a warm compilation cache never lets it exit 0
    # before the signal; "compiling" waits for the model line, printed before the first compile.
    cmd = [sys.executable, "-m", "nlpjax.cli", "train", f"--config={TINY}"]
    proc = subprocess.Popen(
        [*cmd, f"--workdir={tmp_path / 'w'}", QUIET, "--config.train.steps=1000000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    head = ""
    if phase == "importing":
        time.sleep(1.5)
    else:
        for line in proc.stdout:
            head += line
            if line.startswith("Model:"):
                break
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    out = head + out
    if proc.returncode == 0 and f"Signal {int(signal.SIGINT)} received" in out:
        pytest.skip("training had started (the loop saved and exited 0): a faster machine")
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines() == ["interrupted (Ctrl-C)"]


# -- item 19: divergence through the CLI ---------------------------------------------------


def test_divergence_exits_1_and_saves_nothing(tmp_path, capsys):
    huge_lr = ["--config.optim.lr=1e6", "--config.optim.clip_norm=0"]
    code, _, err = _cli(
        capsys,
        "train",
        f"--config={TINY}",
        f"--workdir={tmp_path}",
        QUIET,
        *huge_lr,
        "--config.optim.warmup_steps=0",
    )
    assert code == 1
    _one_error_line(err, "training loss is nan at step", "optim.lr")
    checkpoints = tmp_path / "checkpoints"
    assert not checkpoints.exists() or not [p for p in checkpoints.iterdir() if p.name.isdigit()]


def test_ctrl_c_inside_a_finalizer_is_not_lost():
    """Python drops exceptions raised in __del__ or gc callbacks; the handler re-sends."""
    handler = cli._CtrlC()
    previous = signal.signal(signal.SIGINT, handler)

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C arriving during a finalizer

    try:
        with pytest.raises(KeyboardInterrupt):
            Finalized()  # dropped at once: __del__ runs, the handler defers
            time.sleep(5)  # the re-sent signal interrupts ordinary code
    finally:
        handler.reached_main = True
        signal.signal(signal.SIGINT, previous)
