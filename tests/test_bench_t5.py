"""benchmarks/bench_t5.py --quick: nlpjax's T5 and Hugging Face's ``T5ForConditionalGeneration``
start from the same weights (through the interop), train on the same batches with the
same AdamW, and so report the same losses with dropout 0; the JSON carries the numbers
benchmarks/README.md cites. torch and transformers come with the bench extra: without
them the tests are skipped.
"""

import json
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytest.importorskip("torch", reason="the bench extra installs torch")
pytest.importorskip("transformers", reason="the bench extra installs transformers")

# Importing torch and transformers and compiling both models takes 15-30 s on 2 cores.
# make test still covers the pieces the benchmark joins: the interop's equal logits
# (tests/test_hf_interop.py, committed Hugging Face references) and the trainer's step.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_t5

    return bench_t5


@pytest.fixture(scope="module")
def quick_random(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_t5") / "t5.json"
    bench.main(["--quick", "--data=random", "--dropout=0", f"--json={out}"])
    return json.loads(out.read_text())


def test_without_dropout_both_sides_follow_the_same_losses(quick_random):
    first = quick_random["first_loss"]
    assert first["hf"] == pytest.approx(first["nlpjax"], rel=1e-4, abs=0)
    ours, theirs = (np.array(quick_random["first_steps_loss"][s]) for s in ("nlpjax", "hf"))
    assert len(ours) == len(theirs) == quick_random["steps_per_dispatch"] == 5
    assert abs(ours[-1] - ours[0]) > 1e-2  # the weights moved: the steps really trained
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=0)
    assert quick_random["first_steps_max_rel_diff"] < 1e-4


def test_the_json_has_the_figures_the_readme_cites(quick_random):
    r = quick_random
    assert r["dropout"] == 0.0 and r["data"] == "random"
    assert r["tokens_per_step"] == r["batch_size"] * (r["source_length"] + r["target_length"])
    for side in ("nlpjax", "hf"):
        assert len(r[side]["rounds_ms_per_step"]) == r["rounds"] == 2
        ms = r[side]["ms_per_step"]
        assert ms > 0 and r[side]["tokens_per_s"] == pytest.approx(r["tokens_per_step"] * 1e3 / ms)
    assert r["ratio"] == pytest.approx(r["hf"]["ms_per_step"] / r["nlpjax"]["ms_per_step"])
    assert r["model"]["feed_forward"] == "gated-gelu" and not r["model"]["tie_embeddings"]


def test_multi30k_batches_hold_one_padded_pair_per_row(bench):
    # rows longer than the tiny tokenizer's longest pair (134 source pieces), so every
    # row ends in padding
    lengths = {"data.source_length": 144, "data.target_length": 128}
    config = bench.load_config(f"{bench.EXPERIMENT}:tiny", {"train.progress": False, **lengths})
    task = bench.PaddedSeq2SeqTask(config)
    (batch,) = bench.multi30k_batches(task, 1)
    assert batch["inputs"].shape == (4, 144) and batch["targets"].shape == (4, 128)
    for key in ("inputs", "targets"):
        segments = batch[f"{key}_segment_ids"]
        assert set(np.unique(segments)) == {0, 1}  # one pair a row, then padding
        n_BL = segments.sum(axis=1)[:, None]
        np.testing.assert_array_equal(segments, np.arange(segments.shape[1]) < n_BL)
        np.testing.assert_array_equal(batch[key][np.arange(len(n_BL)), n_BL[:, 0] - 1], 1)  # EOS
        np.testing.assert_array_equal(batch[key][segments == 0], 0)
    inputs = bench.hf_inputs(batch)
    labels = inputs["labels"].numpy()
    np.testing.assert_array_equal(labels == -100, ~batch["targets_mask"])
    np.testing.assert_array_equal(inputs["attention_mask"].numpy(), batch["inputs_mask"])
