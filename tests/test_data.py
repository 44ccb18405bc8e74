"""Raw data location, the text corpus builder, the char tokenizer and LM pipelines."""

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
