"""The RNN LM task: streams and carried state (truncated BPTT), a tiny run, bad config."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlpjax
from nlpjax import cli
from nlpjax.api import load_config
from nlpjax.tasks.base import init_carry
from nlpjax.tasks.rnn import RNNLMTask

REPO = Path(__file__).parents[1]
EXPERIMENT = str(REPO / "experiments" / "shakespeare_lstm.py")
WORD = str(REPO / "experiments" / "shakespeare_word_lstm.py")
TINY = EXPERIMENT + ":tiny"


@pytest.fixture(scope="module")
def task():
    return RNNLMTask(load_config(TINY))


def test_carry_continues_each_stream_into_the_next_batch(task):
    """Batch 1 from batch 0's carry = the second half of one run over both batches."""
    it = task.train_iterator()
    first, second = next(it)["tokens"], next(it)["tokens"]
    np.testing.assert_array_equal(first[:, -1], second[:, 0])  # rows continue their streams
    params = jax.jit(task.init)(jax.random.PRNGKey(0))["params"]
    loss = jax.jit(lambda p, c, b: task.loss(p, c, {"tokens": b}, None, False))
    _, (_, carry) = loss(params, init_carry(task), first)
    got, _ = loss(params, carry, second)
    whole = np.concatenate([first, second[:, 1:]], axis=1)
    logits, _ = task.model.apply({"params": params}, jnp.asarray(whole[:, :-1]))
    n = first.shape[1] - 1
    log_probs = jax.nn.log_softmax(logits[:, n:])
    want = -np.mean(np.take_along_axis(np.asarray(log_probs), whole[:, n + 1 :, None], -1))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    fresh, _ = loss(params, init_carry(task), second)
    assert abs(float(fresh) - float(got)) > 1e-4  # the carry matters


def test_eval_batches_stop_after_one_pass_over_the_validation_streams(caplog):
    """32 streams of the 111,540 validation characters hold 52 steps of 64: asking for 60
    gives those 52 (the rows are not restarted under a carried state), with a warning."""
    over = {"data.batch_size": "32", "data.context": "64", "eval.num_batches": "60"}
    task = RNNLMTask(load_config(TINY, over))
    with caplog.at_level("WARNING"):
        tokens = task.eval_batches()["tokens"]
    assert tokens.shape == (52, 32, 65)
    np.testing.assert_array_equal(tokens[1:, :, 0], tokens[:-1, :, -1])  # one continuous pass
    assert "eval.num_batches=60 is more than one pass over the validation streams" in caplog.text


def test_carry_leaves_have_the_batch_first(task):
    boxed = task.init_carry()["state"]["layer_0"]
    assert set(boxed) == {"c", "h"}  # LSTM
    assert boxed["h"].names[0] == "batch" and boxed["h"].value.shape == (4, 32)


@pytest.mark.slow  # a 20-step run: about 10 s on the 2-core CPU
def test_tiny_run_trains_and_checkpoints_the_carry(tmp_path):
    summary = nlpjax.train(TINY, tmp_path)
    assert summary["final_step"] == 20
    trained = nlpjax.load(tmp_path)
    h = np.asarray(trained.run.state.carry["state"]["layer_0"]["h"])
    assert h.shape == (4, 32) and np.abs(h).sum() > 0  # the state after step 20, not zeros


def test_bidirectional_language_model_is_refused_with_exit_2(tmp_path, capsys):
    workdir = tmp_path / "run"
    code = cli.main(
        ["train", f"--config={TINY}", f"--workdir={workdir}", "--config.model.bidirectional=true"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: model.bidirectional=true: a language model reads")
    assert not (workdir / "checkpoints").exists()


def _losses(workdir) -> list[float]:
    from nlpjax.training.metrics import read_metrics

    return [r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r]


@pytest.mark.slow  # three tiny trainings
@pytest.mark.parametrize("layout", ["data:8", "data:2,fsdp:2,tensor:2", "pmap"])
def test_eight_devices_train_like_one_and_shard_the_carry_with_the_batch(tmp_path, layout):
    """8 streams over 8 simulated devices: the same losses, params and carried state."""
    base = {"data.batch_size": "8", "train.progress": "false", "eval.every": "20"}
    one = {**base, "parallel.devices": "1", "parallel.mesh": "data:1"}
    many = {**base, "parallel.devices": "0"} | (
        {"parallel.mode": "pmap"} if layout == "pmap" else {"parallel.mesh": layout}
    )
    nlpjax.train(load_config(TINY, one), tmp_path / "one")
    nlpjax.train(load_config(TINY, many), tmp_path / "many")
    np.testing.assert_allclose(_losses(tmp_path / "many"), _losses(tmp_path / "one"), rtol=1e-5)
    got, want = (nlpjax.load(tmp_path / name) for name in ("many", "one"))
    assert np.asarray(got.run.state.carry["state"]["layer_0"]["h"]).shape == (8, 32)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        jax.device_get((got.params, got.run.state.carry)),
        jax.device_get((want.params, want.run.state.carry)),
    )


@pytest.mark.slow  # a killed run, its resume and an uninterrupted run
def test_resume_after_sigkill_is_bitwise(tmp_path):
    """SIGKILL right after the step-10 checkpoint; the resumed run ends with the params,
    optimizer state and carried state of an uninterrupted run, bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    overrides = {"train.steps": "200", "eval.every": "100", "checkpoint.every": "10",
                 "checkpoint.async_save": "false", "train.progress": "false"}  # fmt: skip
    killed = tmp_path / "killed"
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlpjax.cli", "train", f"--config={TINY}", f"--workdir={killed}",
         *args],
        cwd=Path(__file__).parents[1], env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "10").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    summary = nlpjax.train(load_config(TINY, overrides), killed)
    assert 10 <= summary["start_step"] < 200 and summary["final_step"] == 200
    nlpjax.train(load_config(TINY, overrides), tmp_path / "whole")
    got, want = (nlpjax.load(p).run.state for p in (killed, tmp_path / "whole"))
    jax.tree_util.tree_map(
        np.testing.assert_array_equal,
        jax.device_get((got.params, got.opt_state, got.carry)),
        jax.device_get((want.params, want.opt_state, want.carry)),
    )


def test_shakespeare_lstm_default_is_the_acceptance_setup_and_gru_differs_only_in_cell():
    """Issue 12's acceptance run: 2 x 256 LSTM, context 64, 32 streams, 2000 steps,
    Adam 2e-3 with cosine decay, clipping at 1."""
    c = load_config(EXPERIMENT)
    m, d, o = c.model, c.data, c.optim
    assert (c.task, m.cell, m.num_layers, m.d_hidden, m.dropout) == ("rnn_lm", "lstm", 2, 256, 0)
    assert (d.tokenizer.kind, d.context, d.batch_size, c.train.steps) == ("char", 64, 32, 2000)
    assert (o.name, o.lr, o.schedule, o.warmup_steps, o.weight_decay, o.clip_norm) == (
        "adamw",
        2e-3,
        "cosine",
        0,
        0.0,
        1.0,
    )
    gru = load_config(EXPERIMENT + ":gru")
    assert gru.model.cell == "gru" and dataclasses.replace(gru, model=m) == c


def test_word_lstm_streams_lowercased_words_with_unk_for_rare_ones():
    task = RNNLMTask(load_config(WORD + ":tiny"))
    tok = task.tokenizer
    assert tok.kind == "word" and task.config.model.vocab_size == tok.vocab_size
    tokens = next(task.train_iterator())["tokens"]
    assert tokens.shape == (4, 17)
    words = tok.decode(tokens[0]).split()
    assert words and all(w == w.lower() for w in words)
    assert (task.tokens("validation") == tok.unk_id).mean() > 0.1  # min_count 20 in tiny


@pytest.mark.slow  # imports torch and trains the tiny config twice (~20 s); the cells'
# equality with torch is also covered by test_rnn.py (slow) and bench_rnn.py's loss check
def test_bench_torch_reference_with_nlpjax_init_follows_the_trainer(tmp_path):
    """The PyTorch run of benchmarks/bench_rnn.py --converge is the same setup: from
    nlpjax's initial parameters (one LSTM bias) on the same batches, it reaches nlpjax's
    validation losses."""
    pytest.importorskip("torch")
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_rnn

    config = load_config(TINY, {"train.progress": "false"})
    got = bench_rnn.torch_reference(RNNLMTask(config), "nlpjax")["curve"]
    want = bench_rnn.nlpjax_run(config, str(tmp_path))["curve"]
    assert sorted(got) == sorted(want) == [10, 20]
    np.testing.assert_allclose([got[10], got[20]], [want[10], want[20]], rtol=1e-5)
