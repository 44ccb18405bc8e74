"""The RNN LM task: streams and carried state (truncated BPTT), a tiny run, bad config."""

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

TINY = str(Path(__file__).parents[1] / "experiments" / "rnn_char.py") + ":tiny"


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
