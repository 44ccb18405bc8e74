"""Raw data location, the text corpus builder, the char tokenizer, LM pipelines and
`nlpjax data inspect`."""

import ast

import numpy as np
import pytest

from nlpjax.data import pipeline, raw
from nlpjax.data.tfds_builders.text_corpus import load_documents
from nlpjax.data.tokenizers import CharTokenizer, load_tokenizer, save_tokenizer


def test_tiny_shakespeare_splits_90_10():
    train = "".join(load_documents("tiny_shakespeare", "train"))
    val = "".join(load_documents("tiny_shakespeare", "validation"))
    assert len(train) + len(val) == 1_115_394
    assert len(train) == int(1_115_394 * 0.9)
    assert train.startswith("First Citizen:")


def test_missing_data_names_the_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPJAX_DATA_DIR", str(tmp_path))
    with pytest.raises(raw.DataError) as err:
        raw.locate("tinyshakespeare/input.txt", "https://example.invalid/x", None)
    message = str(err.value)
    assert str(tmp_path / "tinyshakespeare" / "input.txt") in message
    assert "NLPJAX_DATA_DIR" in message


def test_download_verifies_the_checksum(tmp_path, monkeypatch):
    source = tmp_path / "src.txt"
    source.write_text("hello world\n")
    monkeypatch.setenv("NLPJAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("NLPJAX_OFFLINE")
    path = raw.locate("corpus/a.txt", source.as_uri(), raw.md5sum(source))
    assert path.read_text() == "hello world\n"
    with pytest.raises(raw.DataError, match="md5"):
        raw.locate("corpus/b.txt", source.as_uri(), "0" * 32)
    assert not (tmp_path / "data" / "corpus" / "b.txt").exists()


def test_non_utf8_and_empty_files(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good text \xff\xfe more")
    with pytest.raises(raw.DataError, match=r"bad.txt: not valid UTF-8 at byte offset 10"):
        raw.read_text(bad)
    assert "\ufffd" in raw.read_text(bad, errors="replace")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(raw.DataError, match="empty.txt: the corpus is empty"):
        raw.read_text(empty)


def test_char_tokenizer_round_trip_and_unknown_chars(tmp_path):
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == 8 and tok.chars == " dehlorw"
    ids = tok.encode("hold")
    assert ids.dtype == np.int32 and tok.decode(ids) == "hold"
    with pytest.raises(ValueError, match="not in the vocabulary: 'xz'"):
        tok.encode("xz")
    save_tokenizer(tok, tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json") == tok


def test_windows_are_deterministic_and_resume_exactly():
    tokens = np.arange(1000, dtype=np.int32)
    ds = pipeline.lm_windows(tokens, length=9, batch_size=4, seed=3)
    first = pipeline.iterator(ds, prefetch=2)
    for _ in range(7):
        next(first)
    state = first.get_state()
    expected = [next(first)["tokens"] for _ in range(100)]

    resumed = pipeline.iterator(pipeline.lm_windows(tokens, 9, 4, seed=3), prefetch=2)
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["tokens"], want)
    # windows are contiguous slices of the stream
    batch = expected[0]
    assert batch.shape == (4, 9)
    np.testing.assert_array_equal(np.diff(batch, axis=1), np.ones((4, 8), np.int32))
    other = pipeline.lm_windows(tokens, 9, 4, seed=4)[7]["tokens"]
    assert not np.array_equal(other, pipeline.lm_windows(tokens, 9, 4, seed=3)[7]["tokens"])


def test_stream_shorter_than_a_window():
    with pytest.raises(ValueError, match="too short"):
        pipeline.lm_windows(np.arange(5, dtype=np.int32), 9, 2, 0)


def test_data_inspect_shows_sizes_vocabulary_decoded_windows_and_speed(capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    assert cli.main(["data", "inspect", f"--config={TINY}", "--num_examples=2"]) == 0
    out = capsys.readouterr().out
    assert "train: 1 examples; 1,003,854 characters, 1,003,854 tokens; coverage 100.00%" in out
    assert "validation: 1 examples; 111,540 characters" in out
    assert "vocabulary: char, 65 ids" in out and "arrays: tokens int32[4, 17]" in out
    inputs = [
        ast.literal_eval(line.split(": ", 1)[1]) for line in out.splitlines() if "inputs  =" in line
    ]
    targets = [
        ast.literal_eval(line.split(": ", 1)[1]) for line in out.splitlines() if "targets =" in line
    ]
    assert len(inputs) == 2 and all(
        i[1:] == t[:-1] and len(i) == 16 for i, t in zip(inputs, targets, strict=True)
    )
    assert "all 16 targets weighted" in out
    assert float(out.split("train pipeline: ")[1].split(" examples/s")[0].replace(",", "")) > 0


def test_data_inspect_errors_exit_2(capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    spec = "files:/nope/*;validation=/nope/v.txt"
    code = cli.main(["data", "inspect", f"--config={TINY}", f"--config.data.dataset={spec}"])
    assert code == 2 and "error: no files match '/nope/*'" in capsys.readouterr().err


def test_lm_on_files_without_validation_is_an_error_at_start(tmp_path, capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    (tmp_path / "a.txt").write_text("some text to train on\n" * 20)
    workdir = tmp_path / "w"
    spec = f"files:{tmp_path / 'a.txt'}"
    args = ["train", f"--config={TINY}", f"--workdir={workdir}", f"--config.data.dataset={spec}"]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: data.dataset={spec!r} names no validation files")
    assert ";validation=PATTERN" in err
    assert not workdir.exists() or not any(workdir.iterdir())  # nothing was written


def test_inspect_decodes_packed_rows_and_shows_their_masks():
    import grain

    from nlpjax.data import inspect, seq2seq_pipeline
    from nlpjax.data.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    pairs = grain.MapDataset.source(
        [{"de": "Hallo Welt", "en": "Hello world"}, {"de": "Ja", "en": "Yes"}]
    )
    examples = seq2seq_pipeline.pair_examples(pairs, tok.encode, ("de", "en"), 16, 16, tok.eos_id)
    packed = seq2seq_pipeline.packed_batches(
        examples, source_length=16, target_length=16, batch_size=1, start_id=tok.bos_id, num_bins=1
    )
    lines = inspect.example_report(next(iter(packed)), tok.decode, 1)
    text = "\n".join(lines)
    assert "inputs: 'Hallo Welt</s>Ja</s>'" in text
    assert "decoder_inputs: '<s>Hello world<s>Yes'" in text
    assert "inputs_segment_ids: 1111111111122200" in text  # 10 + EOS, 2 + EOS, padding
    assert "targets_segment_ids: 1111111111112222" in text  # 11 + EOS, 3 + EOS: full


# -- documents joined with a boundary (EOS, or a newline for char) --------------------------

LINES = ["the cat sat", "on the mat", "cats like mats"]


@pytest.mark.parametrize("split_by", ["line", "paragraph"])
@pytest.mark.parametrize("kind", ["char", "byte", "word", "sentencepiece"])
def test_lm_documents_are_joined_with_a_boundary(tiny_config, tmp_path, kind, split_by):
    from nlpjax.data.special_tokens import EOS_ID
    from nlpjax.tasks.lm import LMTask

    sep = "\n" if split_by == "line" else "\n\n"
    (tmp_path / "train.txt").write_text(sep.join(LINES * 20) + "\n")
    (tmp_path / "valid.txt").write_text(sep.join(LINES) + "\n")
    dataset = f"files:{tmp_path / 'train.txt'};validation={tmp_path / 'valid.txt'}"
    config = tiny_config(
        data__dataset=f"{dataset};split_by={split_by}",
        data__tokenizer__kind=kind,
        data__tokenizer__vocab_size=40,
    )
    task = LMTask(config, None)
    ids = task.tokens("validation")
    if kind == "char":  # no special ids: documents are separated by a newline
        assert task.tokenizer.decode(ids) == "\n".join(LINES)
        assert len(task.tokens("train")) == len("\n".join(LINES * 20))
    else:
        assert list(ids).count(EOS_ID) == len(LINES) - 1
        pieces = np.split(ids, np.flatnonzero(ids == EOS_ID))
        decoded = [task.tokenizer.decode(p[p != EOS_ID]).strip() for p in pieces]
        assert decoded == LINES
        assert list(task.tokens("train")).count(EOS_ID) == 3 * 20 - 1


def test_one_document_per_split_gives_the_tokens_of_its_text(tiny_config):
    from nlpjax.tasks.lm import LMTask

    task = LMTask(tiny_config(), None)
    for split in ("train", "validation"):
        (text,) = load_documents("tiny_shakespeare", split)
        np.testing.assert_array_equal(task.tokens(split), task.tokenizer.encode(text))
    assert task.tokenizer.vocab_size == 65  # the Tiny Shakespeare characters, as before


def test_char_vocabulary_always_holds_the_separator(tiny_config, tmp_path):
    from nlpjax.tasks.lm import LMTask

    (tmp_path / "train.txt").write_text("abc abc")  # one document, no newline
    (tmp_path / "v1.txt").write_text("ab")
    (tmp_path / "v2.txt").write_text("ca")
    dataset = (
        f"files:{tmp_path / 'train.txt'};validation={tmp_path / 'v1.txt'},{tmp_path / 'v2.txt'}"
    )
    task = LMTask(tiny_config(data__dataset=dataset), None)
    assert task.tokenizer.decode(task.tokens("validation")) == "ab\nca"


def test_an_old_char_vocabulary_without_the_separator_still_encodes(caplog):
    from nlpjax.data.tokenizers import join_documents

    old = CharTokenizer("abc")  # saved before documents were separated: no newline
    with caplog.at_level("WARNING", logger="nlpjax.data.tokenizers"):
        ids = join_documents(old, ["ab", "ca"])
    assert old.decode(ids) == "abca" and "saved before documents were separated" in caplog.text
