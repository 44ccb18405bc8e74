"""benchmarks/bench_sgns.py's nlpjax side: it times `nlpjax train` on a small corpus and
reports the run's own evaluation (gensim not needed), on Tiny Shakespeare's train split
with 16-dimensional vectors."""

import importlib.util

import numpy as np
import pytest

from nlpjax import api
from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    path = REPO / "benchmarks" / "bench_sgns.py"
    spec = importlib.util.spec_from_file_location("bench_sgns", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_times_nlpjax_train_and_reads_its_evaluation(bench, tmp_path):
    workdir = tmp_path / "w"
    argv = ["--dataset=tiny_shakespeare", "--skip_gensim", "--epochs=2", "--dim=16"]
    argv += [f"--workdir={workdir}", "--config.data.chunk=256", f"--json={tmp_path / 'r.json'}"]
    results = bench.main(argv)
    ours = results["nlpjax"]
    sentences = bench.read_sentences("tiny_shakespeare")
    assert results["corpus_words"] == sum(len(s) for s in sentences) > 150_000
    # the command trained epochs x steps per epoch and evaluated once, at the end
    assert ours["steps"] == 2 * ours["steps_per_epoch"] > 2
    assert ours["words_per_sec"] == pytest.approx(2 * results["corpus_words"] / ours["seconds"])
    assert np.isfinite(ours["last_epoch_loss"])
    assert ours["last_epoch_loss"] < ours["first_epoch_loss"]
    assert "--config.train.steps=" in ours["command"]
    assert "--config.model.embed_dim=16" in ours["command"]
    # the command run again (its programs in the compilation cache) trains the same vectors
    warm = results["nlpjax_warm"]
    assert warm["steps"] == ours["steps"] and warm["analogy"] == ours["analogy"]
    assert warm["last_epoch_loss"] == ours["last_epoch_loss"]
    # the reported quality is the trained vectors' (the run's own evaluation)
    trained = api.load(workdir / "nlpjax")
    assert trained.step == ours["steps"] and trained.config.data.chunk == 256
    again = trained.evaluate()
    for key in ("wordsim353", "simlex999", "analogy", "wordsim353_coverage"):
        assert ours[key] == pytest.approx(again[key])
    assert ours["wordsim353_coverage"] > 0 and -1 <= ours["wordsim353"] <= 1
    assert (tmp_path / "r.json").exists()


def test_unknown_arguments_are_refused(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--chunk=512"])
    assert exit_info.value.code == 2
    assert "--config.KEY=VALUE" in capsys.readouterr().err
