"""Shared by the nlpjax TFDS builders: the prepared-data directory and prepare-once reading.

Builders write array_record files and are read through ``as_data_source`` (random
access, no TensorFlow), which is what grain pipelines consume.
"""

import hashlib
import json
import os
from pathlib import Path

import tensorflow_datasets as tfds

from nlpjax.data.raw import DataError


def files_digest(settings: dict, files_by_split: dict[str, list[Path]]) -> str:
    """16 hex digits naming a user-files config: its settings plus each file's resolved
    path, size and modification time, so edited files get a freshly prepared dataset."""
    identity = dict(settings)
    for split, files in files_by_split.items():
        identity[split] = [
            (str(p.resolve()), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()]
        ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def tfds_data_dir(configured: str = "") -> str:
    """The prepared-datasets directory: config value, else $TFDS_DATA_DIR, else the default."""
    return configured or os.environ.get("TFDS_DATA_DIR") or str(Path.home() / "tensorflow_datasets")


def prepared_source(builder_cls: type, config, split: str, data_dir: str = ""):
    """Prepares ``builder_cls(config)`` once (array_record) and opens ``split`` for reading.

    Args:
      builder_cls: a ``tfds.core.GeneratorBasedBuilder`` subclass.
      config: one of its BuilderConfigs (a named one or one made for user files).
      split: a split name of that config.
      data_dir: where prepared datasets live ('' -> ``tfds_data_dir()``).

    Returns:
      A random-access data source (``len``, ``[i]``) of feature dicts.
    """
    data_dir = tfds_data_dir(data_dir)
    builder = builder_cls(config=config, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare()
    splits = builder.info.splits
    if split not in splits:
        raise DataError(
            f"{builder.name}/{config.name} has no split {split!r}; it has: {', '.join(splits)}"
        )
    return builder.as_data_source(split=split)
