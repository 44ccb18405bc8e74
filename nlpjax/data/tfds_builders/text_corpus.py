"""``text_corpus``: a TFDS builder for plain-text corpora, one document per example.

Written as array_record and read through ``tfds.data_source`` (no TensorFlow needed).
The ``tiny_shakespeare`` config splits the file by characters: the first 90% is
``train`` and the last 10% ``validation``, the common convention for this corpus.
"""

import dataclasses
import os
from pathlib import Path

import tensorflow_datasets as tfds

from nlpjax.data import raw


@dataclasses.dataclass
class TextCorpusConfig(tfds.core.BuilderConfig):
    """A single-file corpus cut into train/validation by character fraction."""

    relpath: str = ""
    url: str = ""
    md5: str = ""
    train_fraction: float = 0.9


TINY_SHAKESPEARE = TextCorpusConfig(
    name="tiny_shakespeare",
    description="Tiny Shakespeare (1,115,394 characters), karpathy/char-rnn.",
    relpath="tinyshakespeare/input.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    md5="6fb458f1232090904fb40fe944165e91",
)


class TextCorpus(tfds.core.GeneratorBasedBuilder):
    """Plain-text corpora; each example is {"text": document}."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [TINY_SHAKESPEARE]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,  # keep document order
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        path = raw.locate(cfg.relpath, cfg.url, cfg.md5)
        text = raw.read_text(path)
        cut = int(len(text) * cfg.train_fraction)
        return {
            "train": self._generate_examples([text[:cut]]),
            "validation": self._generate_examples([text[cut:]]),
        }

    def _generate_examples(self, documents):
        for i, doc in enumerate(documents):
            yield i, {"text": doc}


def tfds_data_dir(configured: str = "") -> str:
    """The prepared-datasets directory: config value, else $TFDS_DATA_DIR, else the default."""
    return configured or os.environ.get("TFDS_DATA_DIR") or str(Path.home() / "tensorflow_datasets")


BUILDERS = {"text_corpus": TextCorpus}


def load_documents(name: str, split: str, data_dir: str = "") -> list[str]:
    """Prepares (once) and reads a split of ``text_corpus/<name>`` as a list of strings."""
    configs = {c.name: c for c in TextCorpus.BUILDER_CONFIGS}
    if name not in configs:
        raise raw.DataError(f"unknown text corpus {name!r}; known: {', '.join(configs)}")
    builder = TextCorpus(config=name, data_dir=tfds_data_dir(data_dir), file_format="array_record")
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare()
    source = builder.as_data_source(split=split)
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]
