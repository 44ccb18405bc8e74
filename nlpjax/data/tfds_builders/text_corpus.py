"""``text_corpus``: a TFDS builder for plain-text corpora, one document per example.

Written as array_record and read through ``tfds.data_source`` (no TensorFlow needed).
Named configs read one raw file from ``$NLPJAX_DATA_DIR`` (or its checksummed download):
``tiny_shakespeare`` splits the file by characters, the first 90% is ``train`` and the
last 10% ``validation``, the common convention for this corpus. ``files_config`` makes a
config for any user files, directories of ``.txt`` files or globs.
"""

import dataclasses
from collections.abc import Iterator, Sequence

import tensorflow_datasets as tfds

from nlpjax.data import raw
from nlpjax.data.tfds_builders.common import (
    TemporaryDirPrepare,
    files_digest,
    prepared_source,
    tfds_data_dir,
)

SPLIT_BY = ("file", "line", "paragraph")


@dataclasses.dataclass
class TextCorpusConfig(tfds.core.BuilderConfig):
    """A named single-file corpus cut by character fraction, or user files per split.

    Attributes:
      relpath, url, md5: the raw file under ``$NLPJAX_DATA_DIR`` and its canonical copy.
      train_fraction: characters of that file that go to ``train`` (the rest: validation).
      train_paths, validation_paths: user files, directories or globs (instead of relpath).
      split_by: one document per ``file``, per non-blank ``line`` or per ``paragraph``.
      errors: ``strict`` (non-UTF-8 bytes are an error naming file and offset) or ``replace``.
    """

    relpath: str = ""
    url: str = ""
    md5: str = ""
    train_fraction: float = 0.9
    train_paths: tuple[str, ...] = ()
    validation_paths: tuple[str, ...] = ()
    split_by: str = "file"
    errors: str = "strict"


TINY_SHAKESPEARE = TextCorpusConfig(
    name="tiny_shakespeare",
    description="Tiny Shakespeare (1,115,394 characters), karpathy/char-rnn.",
    relpath="tinyshakespeare/input.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    md5="6fb458f1232090904fb40fe944165e91",
)

NAMED_CONFIGS = {c.name: c for c in [TINY_SHAKESPEARE]}


def files_config(
    train: Sequence[str],
    validation: Sequence[str] = (),
    split_by: str = "file",
    errors: str = "strict",
) -> TextCorpusConfig:
    """A config for user text files; its name changes whenever the files' contents change.

    The name is a hash of the resolved file list (paths and content digests, see
    ``raw.content_digest``) and the options, so edited files are prepared again instead
    of read stale, and a file that was only touched keeps its prepared copy.
    """
    if split_by not in SPLIT_BY:
        raise raw.DataError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    files = {
        split: raw.expand_paths(patterns) if patterns else []
        for split, patterns in (("train", train), ("validation", validation))
    }
    digest = files_digest({"split_by": split_by, "errors": errors}, files)
    return TextCorpusConfig(
        name=f"files_{digest}",
        description=f"user text files: train={list(train)}, validation={list(validation)}",
        train_paths=tuple(train),
        validation_paths=tuple(validation),
        split_by=split_by,
        errors=errors,
    )


def split_documents(text: str, split_by: str) -> list[str]:
    """Cuts one file's text into documents (blank ones dropped)."""
    if split_by == "file":
        parts = [text]
    elif split_by == "line":
        parts = text.splitlines()
    else:
        parts = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
    return [p for p in parts if p.strip()]


class TextCorpus(TemporaryDirPrepare, tfds.core.GeneratorBasedBuilder):
    """Plain-text corpora; each example is {"text": document}."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = list(NAMED_CONFIGS.values())

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,  # keep document order
        )

    def source_files(self) -> list:
        """The named corpus's raw file, if it exists now (its digest is recorded and checked).

        User-file configs need no record: their name holds their files' content digests
        (``files_digest``), so changed files are a new config, prepared afresh."""
        cfg = self.builder_config
        path = raw.data_dir() / cfg.relpath if cfg.relpath else None
        return [path] if path is not None and path.is_file() else []

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        if not cfg.relpath:
            splits = {"train": cfg.train_paths, "validation": cfg.validation_paths}
            return {s: self._generate_file_documents(p) for s, p in splits.items() if p}
        path = raw.locate(cfg.relpath, cfg.url, cfg.md5)
        raw.check_canonical(
            path,
            cfg.md5,
            cfg.name,
            "split it into a train and a validation file and set "
            "data.dataset='files:TRAIN_FILE;validation=VALIDATION_FILE'",
        )
        text = raw.read_text(path)
        cut = int(len(text) * cfg.train_fraction)
        return {
            "train": self._generate_examples([text[:cut]]),
            "validation": self._generate_examples([text[cut:]]),
        }

    def _generate_examples(self, documents):
        for i, doc in enumerate(documents):
            yield i, {"text": doc}

    def _generate_file_documents(self, patterns: Sequence[str]) -> Iterator:
        cfg, count = self.builder_config, 0
        for path in raw.expand_paths(patterns):
            text = raw.read_text(path, errors=cfg.errors, allow_empty=True)
            for doc in split_documents(text, cfg.split_by):
                yield count, {"text": doc}
                count += 1
        if count == 0:
            raise raw.DataError(f"the corpus is empty: no text in the files of {list(patterns)}")


BUILDERS = {"text_corpus": TextCorpus}


def load_documents(name: str, split: str, data_dir: str = "") -> list[str]:
    """Prepares (once) and reads a split of ``text_corpus/<name>`` as a list of strings."""
    if name not in NAMED_CONFIGS:
        raise raw.DataError(f"unknown text corpus {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    source = prepared_source(TextCorpus, NAMED_CONFIGS[name], split, data_dir)
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]


__all__ = ["BUILDERS", "TextCorpus", "TextCorpusConfig", "files_config", "load_documents"]
__all__ += ["tfds_data_dir"]  # re-exported: it used to live here
