"""``train.init_from=WORKDIR[:STEP]``: a new run starts from another run's parameters."""

import types

import jax
import numpy as np
import pytest
from etils import epath

from nlpjax import cli
from nlpjax.api import load_config, restore_run, train
from nlpjax.data.tokenizers import CharTokenizer, save_tokenizer
from nlpjax.errors import CheckpointMismatchError
from nlpjax.training import init_from
from tests.conftest import TINY

SHORT = {"train.progress": "false", "train.steps": "10", "checkpoint.every": "5"}
SHORT |= {"eval.every": "10", "eval.num_batches": "1", "checkpoint.async_save": "false"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished 10-step tiny run with checkpoints at steps 5 and 10."""
    workdir = tmp_path_factory.mktemp("source")
    train(load_config(TINY, SHORT), workdir)
    return workdir


def _leaves(workdir, step=None):
    run, _ = restore_run(workdir, step)
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(run.state.params)]


def test_parse_reads_an_optional_step():
    assert init_from.parse("/runs/a:20") == init_from.InitSource(epath.Path("/runs/a"), 20)
    assert init_from.parse("/runs/a").step is None
    assert init_from.parse("gs://bucket/run").workdir == epath.Path("gs://bucket/run")


def test_a_new_run_starts_from_the_source_parameters(source, tmp_path):
    """One step at the warmup's lr of 0 leaves the parameters those of the source step."""
    workdir = tmp_path / "finetune"
    one_step = ("train.steps", "train.steps_per_dispatch", "train.log_every", "eval.every")
    overrides = {**SHORT, **dict.fromkeys(one_step, "1"), "checkpoint.every": "1"}
    overrides["train.init_from"] = f"{source}:5"
    summary = train(load_config(TINY, overrides), workdir)
    assert summary["start_step"] == 0 and summary["final_step"] == 1
    want, got = _leaves(source, 5), _leaves(workdir)
    assert not all(np.array_equal(a, b) for a, b in zip(want, _leaves(source, 10), strict=True))
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    # A run that resumes from its own checkpoint ignores train.init_from (even a gone one).
    overrides |= {"train.steps": "2", "train.init_from": str(tmp_path / "gone")}
    assert train(load_config(TINY, overrides), workdir)["start_step"] == 1


def _train_cli(capsys, workdir, *overrides):
    args = ["train", f"--config={TINY}", f"--workdir={workdir}"]
    args += [f"--config.{k}={v}" for k, v in SHORT.items()]
    code = cli.main(args + [f"--config.{o}" for o in overrides])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("{source}", "model.d_model=16", "model.d_model: checkpoint has 32, config has 16"),
        ("{source}:7", "train.progress=false", "no checkpoint for step 7 in {source}"),
        ("{source}/nope", "train.progress=false", "{source}/nope/checkpoints does not exist"),
    ],
)
def test_a_source_that_does_not_fit_is_refused(source, tmp_path, capsys, spec, extra, message):
    before = sorted(p.name for p in (source / "checkpoints").iterdir())
    workdir = tmp_path / "new"
    code, err = _train_cli(capsys, workdir, f"train.init_from={spec.format(source=source)}", extra)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: train.init_from="), err
    assert message.format(source=source) in err[0]
    assert sorted(p.name for p in (source / "checkpoints").iterdir()) == before
    assert not (workdir / "config.json").exists() and not (workdir / "tokenizer.json").exists()
    assert not (workdir / "checkpoints").exists()  # no empty directory left behind


def test_another_vocabulary_of_the_same_size_is_refused(tmp_path):
    save_tokenizer(CharTokenizer("abc\n"), tmp_path / "tokenizer.json")
    task = types.SimpleNamespace(tokenizer=CharTokenizer("abd\n"))
    run = types.SimpleNamespace(task=task)
    source = init_from.parse(str(tmp_path))
    with pytest.raises(CheckpointMismatchError, match="another vocabulary than this run's"):
        init_from._check_vocabulary(run, source, str(tmp_path))
    task.tokenizer = CharTokenizer("abc\n")
    init_from._check_vocabulary(run, source, str(tmp_path))  # the same one passes
