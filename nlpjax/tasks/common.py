"""What the text tasks share: the split's documents, the workdir's tokenizer, the vocab.

Every family that reads text (LM, RNN LM, word2vec, seq2seq) builds its tokenizer the
same way: the workdir's ``tokenizer.json`` when there is one (checked against the
``data.tokenizer`` section), else a new one from the train split; and takes the model's
vocabulary size from it.
"""

import dataclasses
from collections.abc import Callable

import jax
from etils import epath
from jax.experimental import multihost_utils

from nlpjax.config import Config
from nlpjax.data.sources import load_documents
from nlpjax.data.tokenizers import build_tokenizer, restore_or_build
from nlpjax.errors import ConfigError, DataError

TOKENIZER_FILE = "tokenizer.json"
_PREPARED: set[tuple[str, str]] = set()  # datasets this process knows to be prepared


def split_documents(dataset: str, split: str, tfds_data_dir: str) -> list[str]:
    """The split's documents; an empty split is a ``DataError``.

    On many hosts, process 0 prepares the dataset first and the others wait (once per
    dataset in a process; every process builds the same tasks, so they meet), so no two
    hosts write the same prepared files.
    """
    key = (dataset, tfds_data_dir)
    if jax.process_count() > 1 and key not in _PREPARED:
        if jax.process_index() == 0:
            load_documents(dataset, split, tfds_data_dir)
        multihost_utils.sync_global_devices("nlpjax: dataset prepared")
        _PREPARED.add(key)
    docs = load_documents(dataset, split, tfds_data_dir)
    if not any(docs):
        raise DataError(f"the {split} split of {dataset!r} is empty")
    return docs


def workdir_tokenizer(config: Config, workdir, texts: Callable[[], list[str]]):
    """(tokenizer, its file): ``workdir``'s saved tokenizer, checked against
    ``config.data.tokenizer``, or one built from ``texts()`` (train-split texts, read
    only when a tokenizer is built)."""
    saved = epath.Path(workdir) / TOKENIZER_FILE if workdir else None
    cfg = config.data.tokenizer
    tokenizer = restore_or_build(saved, cfg, texts) if saved else build_tokenizer(cfg, texts())
    return tokenizer, str(saved or TOKENIZER_FILE)


def with_vocab_size(config: Config, vocab: int, name: str = "tokenizer", unit: str = "tokens"):
    """``config`` with ``model.vocab_size`` set to ``vocab`` (the size of the ``name``); a
    different non-zero value in the config is a ``ConfigError``."""
    if config.model.vocab_size not in (0, vocab):
        raise ConfigError(
            f"model.vocab_size={config.model.vocab_size} but the {name} has {vocab} {unit}; "
            f"set model.vocab_size=0 to take it from the {name}"
        )
    return dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=vocab))
