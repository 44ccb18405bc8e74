"""TFDS builders and dataset specs: Multi30k, user text/parallel files, registered TFDS
datasets by name (tfds.testing.mock_data), checksummed downloads and clear input errors."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nlpjax.data import pipeline, raw, sources
from nlpjax.data.tfds_builders import parallel_corpus
from nlpjax.data.tfds_builders.common import prepared_source
from nlpjax.data.tokenizers import ByteTokenizer

MULTI30K = "parallel_corpus/multi30k_de_en"


def _lines(name: str) -> list[str]:
    path = Path(os.environ["NLPJAX_DATA_DIR"]) / "multi30k" / name
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().rstrip("\n").split("\n")


def test_multi30k_splits_are_aligned_pairs():
    assert sources.split_sizes(MULTI30K) == {"train": 29000, "validation": 1014, "test_2016": 1000}
    assert sources.default_fields(MULTI30K) == ("de", "en")
    val = sources.open_text(MULTI30K, "validation")
    de, en = _lines("val.de.gz"), _lines("val.en.gz")
    for i in (0, 500, 1013):
        assert val[i] == {"de": de[i], "en": en[i]}
    test = sources.open_text(MULTI30K, "test_2016")
    assert test[999]["en"] == _lines("test_2016_flickr.en.gz")[999]


def test_user_text_files_named_by_a_config_value(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("doc one\n\nsecond paragraph\n")
    (corpus / "sub" / "b.txt").write_text("doc two\n")
    (corpus / "notes.md").write_text("not a .txt file")
    assert sources.load_documents(f"files:{corpus}", "train") == [
        "doc one\n\nsecond paragraph\n",
        "doc two\n",
    ]
    spec = f"files:{corpus}/*.txt;validation={corpus}/sub;split_by=paragraph"
    assert sources.load_documents(spec, "train") == ["doc one", "second paragraph"]
    assert sources.load_documents(spec, "validation") == ["doc two"]
    lines = f"files:{corpus / 'a.txt'},{corpus / 'sub' / 'b.txt'};split_by=line"
    assert sources.load_documents(lines, "train") == ["doc one", "second paragraph", "doc two"]
    (corpus / "sub" / "b.txt").write_text("doc two, edited\n")  # edited files are re-read
    assert sources.load_documents(lines, "train")[-1] == "doc two, edited"


def test_non_utf8_input_names_the_file_and_byte_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("naïve\n".encode() + b"\xff\xfe tail\n")
    with pytest.raises(raw.DataError, match=rf"{bad}: not valid UTF-8 at byte offset 7"):
        sources.load_documents(f"files:{bad}", "train")
    docs = sources.load_documents(f"files:{bad};errors=replace", "train")
    assert docs == ["naïve\n\ufffd\ufffd tail\n"]
    gz = tmp_path / "bad.de.gz"
    gz.write_bytes(gzip.compress(b"ok\n\xc3(\n"))
    with pytest.raises(raw.DataError, match="bad.de.gz: not valid UTF-8 at byte offset 3"):
        raw.read_text(gz)


def test_empty_corpus_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(raw.DataError, match=rf"no \*.txt files in directory '{tmp_path}'"):
        sources.load_documents(f"files:{tmp_path}", "train")
    with pytest.raises(raw.DataError, match="no files match"):
        sources.load_documents(f"files:{tmp_path}/*.text", "train")
    (tmp_path / "blank.txt").write_text("\n  \n")
    for _ in range(2):  # a failed preparation leaves nothing that looks prepared
        with pytest.raises(raw.DataError, match=rf"corpus is empty: no text in .*'{tmp_path}'"):
            sources.load_documents(f"files:{tmp_path}", "train")


def test_parallel_files_with_different_line_counts(tmp_path):
    src, tgt = tmp_path / "train.de", tmp_path / "train.en"
    src.write_text("eins\nzwei\ndrei\n")
    tgt.write_text("one\ntwo\n")
    with pytest.raises(raw.DataError, match=rf"{src} has 3 lines, {tgt} has 2"):
        sources.open_text(f"parallel:{src},{tgt};languages=de,en", "train")
    tgt.write_text("one\ntwo\nthree\n")
    val_src, val_tgt = tmp_path / "val.de", tmp_path / "val.en"
    val_src.write_text("vier\n")
    val_tgt.write_text("four\n")
    spec = f"parallel:{src},{tgt};validation={val_src},{val_tgt};languages=de,en"
    assert sources.open_text(spec, "train")[2] == {"de": "drei", "en": "three"}
    assert list(sources.open_text(spec, "validation")) == [{"de": "vier", "en": "four"}]


def test_named_corpus_downloads_with_checksum_when_missing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.de.gz").write_bytes(gzip.compress(b"Hallo\nWelt\n"))
    (mirror / "a.en.gz").write_bytes(gzip.compress(b"Hello\nworld\n"))
    md5s = tuple((f"toy/{n}", raw.md5sum(mirror / n)) for n in ("a.de.gz", "a.en.gz"))
    config = parallel_corpus.ParallelCorpusConfig(
        name="toy",
        languages=("de", "en"),
        splits=(("train", "toy/a.de.gz", "toy/a.en.gz"),),
        base_url=mirror.as_uri() + "/",
        md5s=md5s,
    )
    monkeypatch.setenv("NLPJAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("NLPJAX_OFFLINE")
    source = prepared_source(parallel_corpus.ParallelCorpus, config, "train", str(tmp_path / "t"))
    assert source[1]["en"] == b"world" and (tmp_path / "data" / "toy" / "a.de.gz").is_file()
    bad = parallel_corpus.ParallelCorpusConfig(
        name="toy_bad", languages=("de", "en"), splits=(("train", "toy/b.de.gz", "toy/a.en.gz"),),
        base_url=mirror.as_uri() + "/", md5s=(("toy/b.de.gz", "0" * 32),),
    )  # fmt: skip
    (mirror / "b.de.gz").write_bytes(b"x")
    with pytest.raises(raw.DataError, match="md5"):
        prepared_source(parallel_corpus.ParallelCorpus, bad, "train", str(tmp_path / "t"))


def test_missing_raw_files_offline_name_the_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPJAX_DATA_DIR", str(tmp_path / "nodata"))
    with pytest.raises(raw.DataError, match=r"nodata/multi30k/train.de.gz(.|\n)*NLPJAX_DATA_DIR"):
        sources.open_text(MULTI30K, "train", str(tmp_path / "fresh_tfds"))


def test_registered_tfds_datasets_by_name():
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        lm1b = sources.open_text("tfds:lm1b", "train")
        assert len(lm1b) == 12 and isinstance(lm1b[0]["text"], str)
        tok = ByteTokenizer()
        docs = pipeline.tokenized(pipeline.epochs(lm1b, 0, pipeline.Shard()), tok.encode)
        batch = next(
            pipeline.iterator(pipeline.lm_packed(docs, length=16, batch_size=2, eos_id=1, bos_id=3))
        )
        assert batch["targets"].shape == (2, 16) and (batch["segment_ids"] > 0).any()
        spec = "tfds:ted_hrlr_translate/pt_to_en"
        assert sources.default_fields(spec) == ("pt", "en")
        pairs = sources.open_text(spec, "validation")
        assert set(pairs[3]) == {"pt", "en"} and all(isinstance(v, str) for v in pairs[3].values())


def test_unprepared_tfds_dataset_explains_how_to_prepare_it(tmp_path):
    with pytest.raises(raw.DataError, match="tfds build lm1b --file_format=array_record"):
        sources.open_text("tfds:lm1b", "train", str(tmp_path))


def test_bad_dataset_specs():
    with pytest.raises(raw.DataError, match="options for files: validation, split_by, errors"):
        sources.parse_dataset("files:/x;bogus=1")
    with pytest.raises(raw.DataError, match="cannot parse dataset"):
        sources.parse_dataset("http://example.com/x")
    with pytest.raises(raw.DataError, match="unknown parallel corpus 'wmt'"):
        sources.open_text("parallel_corpus/wmt", "train")
    with pytest.raises(raw.DataError, match="has no split 'dev'"):
        sources.open_text(MULTI30K, "dev")
    ref = sources.parse_dataset("tiny_shakespeare")
    assert (ref.kind, ref.name) == ("text_corpus", "tiny_shakespeare")
    assert np.array_equal(
        sources.load_documents("text_corpus/tiny_shakespeare", "validation"),
        sources.load_documents("tiny_shakespeare", "validation"),
    )
