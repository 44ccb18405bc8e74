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
    assert val.read_all() == [val[i] for i in range(len(val))]  # one batched read


def test_read_all_of_a_source_without_batched_reads_is_item_by_item():
    rows = [{"text": b"caf\xc3\xa9"}, {"text": "plain"}]
    assert sources.TextSource(rows, ["text"]).read_all() == [{"text": "café"}, {"text": "plain"}]


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


# -- prepared datasets record their raw files; preparation is all or nothing --------------


def _tiny_shakespeare_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of the raw corpus and a private TFDS dir (tests may change both)."""
    src = Path(os.environ["NLPJAX_DATA_DIR"]) / "tinyshakespeare" / "input.txt"
    dest = tmp_path / "data" / "tinyshakespeare" / "input.txt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(src.read_bytes())
    monkeypatch.setenv("NLPJAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    return dest


def test_a_changed_canonical_corpus_is_refused_not_read_stale(tmp_path, monkeypatch, capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    raw_file = _tiny_shakespeare_copy(tmp_path, monkeypatch)
    first = sources.load_documents("tiny_shakespeare", "validation")
    prepared = tmp_path / "tfds" / "text_corpus" / "tiny_shakespeare" / "1.0.0"
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    raw_file.write_bytes(raw_file.read_bytes()[:5000] + b"\xff not Shakespeare\n")
    workdir = tmp_path / "w"
    code = cli.main(["train", f"--config={TINY}", f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert code == 2
    line = err.splitlines()[-1]
    assert line.startswith(f"error: {raw_file} has md5 {raw.md5sum(raw_file)}")
    assert "6fb458f1232090904fb40fe944165e91" in line and "data.dataset='files:" in line
    # The old prepared copy is kept (not lost) but never used while the file differs.
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
    with pytest.raises(raw.DataError, match="has md5"):
        sources.load_documents("tiny_shakespeare", "validation")
    assert first  # (read before the change)


def test_a_changed_named_source_is_prepared_again(tmp_path, monkeypatch, caplog):
    from nlpjax.data.tfds_builders import text_corpus

    monkeypatch.setenv("NLPJAX_DATA_DIR", str(tmp_path / "data"))
    raw_file = tmp_path / "data" / "mine" / "input.txt"
    raw_file.parent.mkdir(parents=True)
    raw_file.write_text("first version of the corpus, long enough to split\n")
    config = text_corpus.TextCorpusConfig(name="mine", relpath="mine/input.txt")
    tfds_dir = str(tmp_path / "tfds")

    def train_text():
        source = prepared_source(text_corpus.TextCorpus, config, "train", tfds_dir)
        return source[0]["text"].decode("utf-8")

    assert train_text().startswith("first version")
    assert train_text().startswith("first version")  # prepared once, read again
    assert not caplog.records
    raw_file.write_text("second version, another text of a similar length\n")
    with caplog.at_level("WARNING", logger="nlpjax.data.tfds_builders.common"):
        assert train_text().startswith("second version")
    (record,) = caplog.records
    assert f"raw file {raw_file} changed since it was prepared; preparing it again" in (
        record.getMessage()
    )
    # A moved data directory holds the same contents: nothing to prepare again.
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    monkeypatch.setenv("NLPJAX_DATA_DIR", str(moved))
    caplog.clear()
    with caplog.at_level("WARNING", logger="nlpjax.data.tfds_builders.common"):
        assert train_text().startswith("second version")
    assert not caplog.records
    # Raw file deleted after preparing: the prepared copy is still used.
    (moved / "mine" / "input.txt").unlink()
    assert train_text().startswith("second version")


def test_user_files_are_named_by_content_not_mtime(tmp_path):
    from nlpjax.data.tfds_builders.text_corpus import files_config

    path = tmp_path / "a.txt"
    path.write_text("some text\n")
    name = files_config([str(path)]).name
    os.utime(path, ns=(1, 1))  # touched (or copied): same bytes, same prepared dataset
    assert files_config([str(path)]).name == name
    path.write_text("other text\n")  # same size, new bytes
    assert files_config([str(path)]).name != name


def test_digests_of_large_files_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(raw, "DIGEST_CACHE_MIN_BYTES", 10)
    path = tmp_path / "big.txt"
    path.write_text("x" * 100)
    digest = raw.content_digest(path)
    assert digest == raw.md5sum(path)
    monkeypatch.setattr(raw, "_digests", {})  # a new process: only the disk cache is left

    def no_hashing(_):
        raise AssertionError("a cached digest must not be computed again")

    monkeypatch.setattr(raw, "md5sum", no_hashing)
    assert raw.content_digest(path) == digest
    os.utime(path, ns=(5, 5))  # changed mtime: hashed again
    with pytest.raises(AssertionError, match="must not be computed"):
        raw.content_digest(path)


def test_failed_preparation_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    from nlpjax import cli
    from tests.conftest import TINY

    tfds_dir = tmp_path / "tfds"
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text("a first file that is fine\n" * 50)
    bad.write_bytes(b"a second file \xff with a bad byte\n")
    dataset = f"files:{good},{bad};validation={good}"
    with pytest.raises(raw.DataError, match=rf"{bad}: not valid UTF-8 at byte offset 14"):
        sources.load_documents(dataset, "train")
    assert list(tfds_dir.rglob("*")) == []  # no files_* folder, no temporary folder
    code = cli.main(
        [
            "train",
            f"--config={TINY}",
            f"--workdir={tmp_path / 'w'}",
            f"--config.data.dataset={dataset}",
        ]
    )
    assert code == 2 and f"{bad}: not valid UTF-8" in capsys.readouterr().err
    assert list(tfds_dir.rglob("*")) == []
    bad.write_text("now fixed\n")
    assert sources.load_documents(dataset, "train")[-1] == "now fixed\n"
    prepared = [p.name for p in (tfds_dir / "text_corpus").iterdir()]
    assert len(prepared) == 1 and prepared[0].startswith("files_")


def test_a_killed_preparation_is_cleaned_up_by_the_next_one(tmp_path, monkeypatch):
    """A SIGKILLed preparation cannot remove its temporary folder; the next preparation
    on the host removes it once its process is gone, and leaves live ones alone."""
    import subprocess

    from nlpjax.data.tfds_builders import common

    tfds_dir = tmp_path / "tfds"
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = common._prepare_prefix()
    abandoned = tfds_dir / prefix.replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    abandoned = abandoned.with_name(abandoned.name + "x1")
    live = tfds_dir / f"{prefix}x2"  # this process: still running
    other_host = tfds_dir / ".nlpjax-prepare-elsewhere-1-x3"
    for folder in (abandoned, live, other_host):
        (folder / "text_corpus").mkdir(parents=True)
    corpus = tmp_path / "a.txt"
    corpus.write_text("some text to prepare\n" * 20)
    sources.load_documents(f"files:{corpus};validation={corpus}", "train")
    assert not abandoned.exists()
    assert live.exists() and other_host.exists()
