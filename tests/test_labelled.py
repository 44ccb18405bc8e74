"""``label<TAB>text`` files as a dataset spec, their errors, and the speaker data set."""

import collections
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from nlpjax import cli
from nlpjax.data import labelled, shakespeare_speakers, sources
from nlpjax.errors import DataError
from nlpjax.evaluation.classification import classification_metrics

TRAIN = "pos\tgood film\nneg\tbad film\n\nneg\t  dull  \n"


def _spec(tmp_path, train=TRAIN, validation="pos\tfine\nneg\tawful\n", options=""):
    (tmp_path / "train.tsv").write_text(train)
    (tmp_path / "val.tsv").write_text(validation)
    return f"labelled:{tmp_path / 'train.tsv'};validation={tmp_path / 'val.tsv'}{options}"


def test_labelled_spec_opens_as_text_and_label_fields(tmp_path):
    spec = _spec(tmp_path)
    train = sources.open_text(spec, "train")
    assert train.fields == ("text", "label")
    assert [train[i] for i in range(len(train))] == [
        {"text": "good film", "label": "pos"},
        {"text": "bad film", "label": "neg"},
        {"text": "dull", "label": "neg"},  # blank line skipped, text stripped
    ]
    assert sources.label_names(spec) == ("neg", "pos")  # sorted when not declared
    assert sources.split_sizes(spec) == {"train": 3, "validation": 2}
    declared = _spec(tmp_path, options=";labels=pos,neg,neutral")
    assert sources.label_names(declared) == ("pos", "neg", "neutral")  # the given id order
    assert labelled.label_ids(train, sources.label_names(declared)) == [0, 1, 1]


@pytest.mark.parametrize(
    "train, validation, options, split, message",
    [
        (TRAIN, "pos\tfine\nneutral\tso-so\n", "", "validation",
         r"val.tsv:2: unknown label 'neutral'; the labels are \['neg', 'pos'\]"),
        ("pos\tgood\nneg bad film\n", "", "", "train", r"train.tsv:2: no TAB in 'neg bad film'"),
        ("pos\tgood\n\n\t orphan text\n", "", "", "train", r"train.tsv:3: missing label"),
        ("pos\tgood\nneg\t  \n", "", "", "train", r"train.tsv:2: label 'neg' has no text"),
        (TRAIN, "", ";labels=pos", "train", r"train.tsv:2: unknown label 'neg'"),
        (TRAIN, "", ";labels=pos,neg,pos", "train", r"labels= lists \['pos'\] more than once"),
        (TRAIN, "", "", "test", r"no 'test' split .* add ;test=FILES"),
    ],
)  # fmt: skip
def test_bad_label_files_name_the_file_and_line(
    tmp_path, train, validation, options, split, message
):
    spec = _spec(tmp_path, train, validation or "pos\tfine\n", options)
    with pytest.raises(DataError, match=message):
        sources.open_text(spec, split)


def test_cli_reports_an_unknown_label_as_bad_input(tmp_path, capsys):
    spec = _spec(tmp_path, validation="pos\tfine\nneutral\tso-so\n")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    config = str(Path(__file__).parents[1] / "experiments" / "shakespeare_char.py") + ":tiny"
    code = cli.main(["data", "inspect", f"--config={config}", f"--config.data.dataset={spec}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "val.tsv:2: unknown label 'neutral'" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # the files untouched


SPEECHES = "\n\n".join(
    f"{name}:\n" + "\n".join(f"{name.lower()} line {j}" for j in range(n))
    for name, n in [("A", 3), ("B", 1), ("C", 2)] * 5
)


def test_speaker_splits_keep_the_top_speakers_and_whole_speeches():
    parsed = shakespeare_speakers.speeches(SPEECHES)
    assert parsed[0] == ("A", ["a line 0", "a line 1", "a line 2"]) and len(parsed) == 15
    assert shakespeare_speakers.top_speakers(parsed, 2) == ("A", "C")  # 15 and 10 lines
    splits = shakespeare_speakers.split_examples(SPEECHES, top=2)
    # kept speeches alternate A(3), C(2); speech 8 (A) -> validation, 9 (C) -> test
    assert splits["validation"] == [("A", f"a line {j}") for j in range(3)]
    assert splits["test"] == [("C", "c line 0"), ("C", "c line 1")]
    assert sum(len(v) for v in splits.values()) == 15 + 10


def test_speaker_data_from_tiny_shakespeare_reads_back_as_a_labelled_spec(tmp_path):
    path = Path(os.environ["NLPJAX_DATA_DIR"]) / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    paths = shakespeare_speakers.write_splits(tmp_path, path.read_text(), top=5)
    spec = f"labelled:{paths['train']};validation={paths['validation']};test={paths['test']}"
    labels = sources.label_names(spec)
    assert len(labels) == 5 and "GLOUCESTER" in labels
    sizes = sources.split_sizes(spec)
    assert sizes["train"] > 5 * sizes["test"] > 0 and sizes["validation"] > 0
    counts = collections.Counter(ex["label"] for ex in sources.open_text(spec, "test"))
    assert set(counts) <= set(labels)


def _encode(text):
    return np.array([ord(c) % 50 + 4 for c in text])


def test_classification_arrays_pad_mask_and_label_ids():
    examples = [{"text": "abc", "label": "neg"}, {"text": "a", "label": "pos"}]
    arrays, truncated = labelled.classification_arrays(examples, _encode, ("pos", "neg"), 4)
    assert truncated == 0
    np.testing.assert_array_equal(arrays["inputs"][0], [*_encode("abc"), 0])
    np.testing.assert_array_equal(arrays["inputs_mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(arrays["labels"], [1, 0])


def test_too_long_input_is_an_error_or_truncated_with_a_logged_count(caplog):
    examples = [{"text": "short", "label": "a"}, {"text": "much too long", "label": "a"}]
    with pytest.raises(
        DataError,
        match=r"validation example 1 \('much too long'\) has 13 tokens.*"
        r"data.max_length=6; raise data.max_length or set data.overflow='truncate'",
    ):
        labelled.classification_arrays(examples, _encode, ("a",), 6, "error", "validation")
    with caplog.at_level(logging.WARNING):
        arrays, truncated = labelled.classification_arrays(
            examples, _encode, ("a",), 6, "truncate", "train"
        )
    assert truncated == 1 and "train: truncated 1 of 2 examples to data.max_length=6" in caplog.text
    np.testing.assert_array_equal(arrays["inputs"][1], _encode("much t"))
    assert arrays["inputs_mask"].all(axis=1).tolist() == [False, True]
    with pytest.raises(DataError, match="data.overflow must be one of"):
        labelled.classification_arrays(examples, _encode, ("a",), 6, "drop")


def test_accuracy_and_macro_f1_by_hand():
    true, pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    got = classification_metrics(true, pred, num_classes=4)  # class 3 never occurs
    # F1: class 0 = 2/(2+1+1), class 1 = 4/(4+1+0), class 2 = 0 (never predicted right)
    assert got == pytest.approx(
        {"accuracy": 0.6, "macro_f1": (0.5 + 0.8 + 0.0) / 3, "f1/0": 0.5, "f1/1": 0.8, "f1/2": 0.0}
    )
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 2\)"):
        classification_metrics(true, pred, num_classes=2)
