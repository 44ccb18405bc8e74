"""benchmarks/bench_sgns.py's nlpjax side on a slice of its corpus (gensim not needed)."""

import argparse
import importlib.util

import numpy as np
import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    path = REPO / "benchmarks" / "bench_sgns.py"
    spec = importlib.util.spec_from_file_location("bench_sgns", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**changes) -> argparse.Namespace:
    args = dict(epochs=2, window=5, negatives=5, sample=1e-3, min_count=5, dim=16, seed=1)
    args |= dict(chunk=256, steps_per_dispatch=4, devices=1, sharing="batch")
    args |= dict(batch_negatives=64, update="sgd", cap=100.0, lr=0.025, min_lr=1e-4)
    args |= dict(capacity=1, subsample_on="epoch")
    return argparse.Namespace(**(args | changes))


# the earlier chunk-dispatch shape is slow-marked: the model functions it runs are
# covered by tests/test_sgns.py, and the default epoch loop is run here
@pytest.mark.parametrize("subsample_on", ["epoch", pytest.param("chunk", marks=pytest.mark.slow)])
def test_the_benchmark_loop_trains_deterministically(bench, subsample_on):
    sentences = bench.read_sentences()[:3000]
    runs = [bench.run_nlpjax(sentences, _args(subsample_on=subsample_on)) for _ in range(2)]
    (_, wv, stats), (_, again, _) = runs
    assert stats["finite"] and stats["last_epoch_loss"] < stats["first_epoch_loss"]
    assert stats["pairs_per_epoch"] > 0 and len(wv.words) == len(wv.vectors) > 100
    np.testing.assert_array_equal(wv.vectors, again.vectors)  # the same for a seed
