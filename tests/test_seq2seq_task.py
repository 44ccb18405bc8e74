"""The T5 text-to-text task on Multi30k: config checks, a tiny run through the CLI
(train, eval on test_2016, generate), and a too-long input cut with a warning (the
error of data.too_long=error: tests/test_seq2seq_io.py)."""

import os

import pytest

from nlpjax import cli
from nlpjax.config import ConfigError
from nlpjax.tasks.registry import TASKS
from nlpjax.tasks.seq2seq import Seq2SeqDataConfig, Seq2SeqTask, score_translations
from tests.conftest import REPO

TINY = str(REPO / "experiments" / "t5_multi30k.py") + ":tiny"
QUIET = "--config.train.progress=false"


def test_the_task_is_registered_and_bad_data_settings_are_config_errors():
    assert TASKS["seq2seq"] is Seq2SeqTask
    with pytest.raises(ConfigError, match="data.source_length must be > 1"):
        Seq2SeqDataConfig(source_length=0)
    with pytest.raises(ConfigError, match="data.label_smoothing must be in"):
        Seq2SeqDataConfig(label_smoothing=1.0)


def test_translations_are_scored_by_sacrebleu_bleu_and_chrf():
    scores = score_translations(["A dog runs.", "A cat."], ["A dog runs.", "Two cats."])
    assert scores["exact_match"] == 0.5
    perfect = score_translations(["A dog runs."], ["A dog runs."])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("t5") / "run"
    code = cli.main(["train", f"--config={TINY}", f"--workdir={workdir}", QUIET])
    assert code == 0
    return workdir


@pytest.mark.slow  # builds Multi30k and a SentencePiece model, trains and decodes: ~60 s
def test_tiny_t5_trains_evaluates_and_translates(trained, capsys):
    from nlpjax.training.metrics import read_metrics

    rows = [r for r in read_metrics(trained) if "eval/loss" in r]
    assert [r["step"] for r in rows] == [10, 20] and rows[-1]["eval/loss"] < rows[0]["eval/loss"]
    assert "eval/exact_match" in rows[-1]
    capsys.readouterr()
    assert cli.main(["eval", f"--workdir={trained}", "--split=test_2016"]) == 0
    assert "eval/loss" in capsys.readouterr().out
    code = cli.main(["generate", f"--workdir={trained}", "--input=Ein Mann.", "--max_new_tokens=5"])
    out = capsys.readouterr().out
    assert code == 0 and len(out.splitlines()) == 1 and not out.startswith("Ein Mann.")


@pytest.mark.slow
def test_an_input_longer_than_the_source_length_is_cut_with_a_warning(trained, capsys, caplog):
    before = sorted(os.listdir(trained))
    code = cli.main(["generate", f"--workdir={trained}", "--input=" + "Ein Mann " * 10])
    assert code == 0 and len(capsys.readouterr().out.splitlines()) == 1
    assert "1 of 1 inputs were over 24 tokens (data.source_length) and were cut" in caplog.text
    assert sorted(os.listdir(trained)) == before


def test_evaluation_loss_is_plain_cross_entropy_and_training_loss_is_smoothed():
    """The loss with label smoothing in training, without it in evaluation (so eval
    perplexity is a perplexity), on a hand-made batch with padding weighted out."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nlpjax.data.seq2seq_pipeline import features
    from nlpjax.models.t5 import T5, T5Config, token_losses

    task = Seq2SeqTask.__new__(Seq2SeqTask)  # the loss needs only config and model
    cfg = T5Config(
        vocab_size=11,
        d_model=8,
        num_heads=2,
        head_dim=4,
        d_ff=16,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dtype="float32",
    )
    task.model = T5(cfg)
    task.config = type("C", (), {"model": cfg, "data": Seq2SeqDataConfig(label_smoothing=0.2)})
    batch = features(
        np.array([[3, 4, 1, 0]]),
        np.array([[1, 1, 1, 0]]),
        np.array([[5, 6, 1, 0]]),
        np.array([[1, 1, 1, 0]]),
        start_id=0,
    )
    params = task.model.init(jax.random.PRNGKey(0), batch["inputs"], batch["decoder_inputs"])[
        "params"
    ]
    train_loss, (metrics, _) = task.loss(params, {}, batch, jax.random.PRNGKey(1), True)
    eval_loss, _ = task.loss(params, {}, batch, None, False)
    logits = task.model.apply({"params": params}, batch["inputs"], batch["decoder_inputs"])
    plain = token_losses(logits, jnp.asarray(batch["targets"]))[0][0, :3].mean()
    smooth = token_losses(logits, jnp.asarray(batch["targets"]), label_smoothing=0.2)[0][
        0, :3
    ].mean()
    assert float(metrics["weight"]) == 3.0
    np.testing.assert_allclose(eval_loss, plain, rtol=1e-5)
    np.testing.assert_allclose(train_loss, smooth, rtol=1e-5)
