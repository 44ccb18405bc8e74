"""experiments/sgns.py: gensim's settings, the default corpus and any corpus by spec."""

import logging
import os

import flax.linen as nn
import jax
import pytest
import tensorflow_datasets as tfds

from nlpjax import api, cli
from nlpjax.training.metrics import read_metrics
from tests.conftest import REPO

CONFIG = str(REPO / "experiments" / "sgns.py")


def test_defaults_are_gensims_skipgram_settings():
    config = api.load_config(CONFIG)
    model, data, optim = config.model, config.data, config.optim
    assert (model.objective, model.negatives, model.window, model.embed_dim) == (
        "skipgram",
        5,
        5,
        100,
    )
    assert (data.sample, data.tokenizer.min_count, data.ns_exponent) == (1e-3, 5, 0.75)
    assert optim.lr == 0.025 and optim.lr * optim.min_lr_ratio == pytest.approx(1e-4)
    assert config.train.steps == 5 * config.eval.every  # 5 epochs, evaluated after each
    files = data.dataset.removeprefix("files:").split(",")
    data_dir = os.environ["NLPJAX_DATA_DIR"]
    assert files == [
        os.path.join(data_dir, "tinyshakespeare", "input.txt"),
        os.path.join(data_dir, "multi30k", "train.en.gz"),
    ]
    assert all(os.path.isfile(f) for f in files)


def _task(dataset: str):
    config = api.load_config(
        CONFIG + ":tiny", {"data.dataset": dataset, "data.tokenizer.min_count": 1}
    )
    return api.task_class(config)(config)


def test_a_directory_of_text_files_is_a_corpus_without_validation_split(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat\non the mat\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("a dog ran\n")
    task = _task(f"files:{tmp_path}")
    ids, sentences = task.stream("train")
    words = "the cat sat on the mat a dog ran"
    assert task.tokenizer.decode(ids) == words
    assert sentences.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]  # a window never crosses a line


def test_a_tfds_text_dataset_by_name():
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        task = _task("tfds:lm1b")
        ids, _ = task.stream("train")
    assert len(ids) > 0 and task.tokenizer.vocab_size > 4


@pytest.mark.slow  # a training run; the corpus specs alone are covered by the tests above
def test_training_on_files_without_validation_logs_the_word_evaluation(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the king and the queen\nthe man and the woman\n" * 40)
    workdir = tmp_path / "w"
    code = cli.main(
        [
            "train",
            f"--config={CONFIG}:tiny",
            f"--config.data.dataset=files:{corpus}",
            "--config.data.tokenizer.min_count=1",
            "--config.data.chunk=64",
            "--config.train.steps=4",
            "--config.train.steps_per_dispatch=2",
            "--config.train.log_every=2",
            "--config.eval.every=4",
            "--config.checkpoint.every=4",
            f"--workdir={workdir}",
        ]
    )
    assert code == 0
    evals = [r for r in read_metrics(workdir) if "eval/analogy" in r]
    assert [r["step"] for r in evals] == [4]
    assert 0.0 <= evals[0]["eval/analogy"] <= 1.0 and "eval/wordsim353" in evals[0]


def test_malformed_evaluation_lines_are_skipped_with_a_count(tmp_path, caplog):
    (tmp_path / "wordsim353.tsv").write_text(
        "# a comment\nking\tqueen\t8.5\nman woman\nlord\tlady\t7.0\nlove\thate\tmany\n"
        "good\tbad\t3.0\n"
    )
    (tmp_path / "questions-words.txt").write_text(
        "before any section\n: family\nman woman king queen\nking queen\n"
    )
    config = api.load_config(CONFIG + ":tiny", {"data.word_eval_dir": str(tmp_path)})
    task = api.task_class(config)(config)
    params = nn.unbox(task.init(jax.random.PRNGKey(0)))["params"]
    with caplog.at_level(logging.WARNING):
        report = task.evaluate(params, {}, jax.random.PRNGKey(1))
    assert -1.0 <= report["wordsim353"] <= 1.0 and report["wordsim353_coverage"] == 1.0
    assert 0.0 <= report["analogy"] <= 1.0 and "simlex999" not in report
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 2
    assert "wordsim353.tsv: 2 malformed line(s) skipped" in warnings[0]
    assert "questions-words.txt: 2 malformed line(s) skipped" in warnings[1]
