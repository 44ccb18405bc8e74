"""`nlpjax neighbors` and `nlpjax export --to=word2vec[-binary]` on a word2vec workdir."""

import re

import numpy as np
import pytest

from nlpjax import api, cli
from tests.conftest import REPO

TINY = str(REPO / "experiments" / "sgns.py") + ":tiny"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Two steps of the tiny variant (what is trained does not matter here)."""
    path = tmp_path_factory.mktemp("sgns_cli")
    overrides = {"train.steps": 2, "train.steps_per_dispatch": 2, "train.log_every": 2}
    overrides |= {"eval.every": 2, "checkpoint.every": 2}
    api.train(api.load_config(TINY, overrides), path)
    return path


def test_eval_prints_the_word_evaluation_of_the_checkpoint(workdir, capsys):
    code = cli.main(["eval", f"--workdir={workdir}"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("step 2,")
    printed = dict(line.split() for line in out.splitlines() if line.startswith("eval/"))
    trained = api.load(workdir)
    want = trained.task.evaluate(trained.params, {}, None)
    assert set(printed) == {f"eval/{k}" for k in want} and "eval/analogy" in printed
    for key, value in want.items():
        assert float(printed[f"eval/{key}"]) == pytest.approx(value, abs=1e-6, nan_ok=True)


def test_neighbors_of_several_words(workdir, capsys):
    code = cli.main(["neighbors", f"--workdir={workdir}", "--word=king,queen", "--word=KING"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split(":")[0] for line in out] == ["king", "queen", "KING"]
    wv = api.load(workdir).task.word_vectors(api.load(workdir).params)
    unit = wv.unit()
    king = unit[wv.words.index("king")]
    best = [w for w in np.array(wv.words)[np.argsort(-(unit @ king))] if w != "king"][:10]
    # "word cosine" items joined by ", " (a word may end with a comma itself)
    listed = re.findall(r"(\S+) -?\d+\.\d{3}(?:, |$)", out[0].split(": ", 1)[1])
    assert listed == best  # the 10 highest cosines, itself excluded


def test_neighbors_of_an_unknown_word_is_a_clear_error(workdir, capsys):
    code = cli.main(["neighbors", f"--workdir={workdir}", "--word=king,zzyzx"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: not in the vocabulary") and "'zzyzx'" in captured.err
    assert "min_count" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary"])
def test_export_round_trips_through_gensim(workdir, tmp_path, fmt):
    gensim_models = pytest.importorskip("gensim.models")  # the bench extra
    out = tmp_path / "vectors"
    assert cli.main(["export", f"--workdir={workdir}", f"--to={fmt}", str(out)]) == 0
    trained = api.load(workdir)
    wv = trained.task.word_vectors(trained.params)
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(out), binary=fmt.endswith("binary"))
    assert list(kv.index_to_key) == wv.words
    np.testing.assert_allclose(kv.vectors, wv.vectors, rtol=1e-5, atol=1e-7)


def test_export_refusals_keep_an_existing_file(workdir, tmp_path, capsys):
    out = tmp_path / "vectors.txt"
    out.write_text("keep me")
    missing = tmp_path / "not_a_workdir"
    code = cli.main(["export", f"--workdir={missing}", "--to=word2vec", str(out)])
    assert code == 2 and capsys.readouterr().err.startswith("error:")
    code = cli.main(["export", f"--workdir={workdir}", "--to=word2vec", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: OUT") and "is a directory" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse: an unknown format
        cli.main(["export", f"--workdir={workdir}", "--to=glove", str(out)])
    assert exit_info.value.code == 2 and "word2vec-binary" in capsys.readouterr().err
    assert out.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == [
        "vectors.txt"
    ]
