"""Shared by the nlpjax TFDS builders: the prepared-data directory and prepare-once reading.

Builders write array_record files and are read through ``as_data_source`` (random
access, no TensorFlow), which is what grain pipelines consume.

A prepared dataset records the content digests of the raw files it was built from
(``SOURCE_RECORD`` next to TFDS's own files). Opening it again compares them with the
raw files as they are now: a changed source is prepared again (said in one log line),
never read stale. Preparation happens in a temporary directory that is moved into place
only when complete, so a failed preparation leaves nothing behind. A preparation that
was killed (SIGKILL, a preempted job) cannot clean up: its temporary directory names its
host and process, and the next preparation on that host removes it once that process is
gone.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds

from nlpjax.data import raw
from nlpjax.errors import DataError

logger = logging.getLogger(__name__)

SOURCE_RECORD = "nlpjax_source.json"  # in the prepared version directory


def files_digest(settings: dict, files_by_split: dict[str, list[Path]]) -> str:
    """16 hex digits naming a user-files config: its settings plus each file's resolved
    path and content digest, so edited files get a freshly prepared dataset while a file
    that was only touched (or copied with a new mtime) keeps its prepared copy."""
    identity = dict(settings)
    for split, files in files_by_split.items():
        identity[split] = [(str(p.resolve()), raw.content_digest(p)) for p in files]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def tfds_data_dir(configured: str = "") -> str:
    """The prepared-datasets directory: config value, else $TFDS_DATA_DIR, else the default."""
    return configured or os.environ.get("TFDS_DATA_DIR") or str(Path.home() / "tensorflow_datasets")


def source_record(files: Sequence[Path]) -> dict[str, str]:
    """{resolved path: content digest} of a dataset's raw files."""
    return {str(Path(p).resolve()): raw.content_digest(Path(p)) for p in files}


def _recorded(version_dir: Path) -> dict[str, str] | None:
    try:
        return json.loads((version_dir / SOURCE_RECORD).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stale_reason(recorded: dict[str, str] | None, current: dict[str, str]) -> str:
    """Why a prepared copy no longer matches its raw files ('' if it does).

    Contents are compared, not paths: a moved data directory is still the same data.
    Only files present now are compared (raw files may be deleted after preparing).
    """
    if not current:  # no raw file left to compare with: the prepared copy is all there is
        return ""
    if recorded is None:
        return "it records no digest of its raw files (prepared by an older nlpjax)"
    known = set(recorded.values())
    changed = [path for path, digest in current.items() if digest not in known]
    if changed:
        return f"raw file {changed[0]} changed since it was prepared"
    return ""


class TemporaryDirPrepare:
    """Mixin for builders prepared by ``prepared_source``: TFDS's own "prepared to" lines
    would name the temporary directory, so ``prepared_source`` prints its own instead."""

    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass


PREPARE_PREFIX = ".nlpjax-prepare-"


def _prepare_prefix() -> str:
    """Temporary preparation directories are ``.nlpjax-prepare-<host>-<pid>-<random>``."""
    host = socket.gethostname().replace("-", "_") or "host"
    return f"{PREPARE_PREFIX}{host}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_abandoned_preparations(root: Path) -> list[Path]:
    """Removes this host's temporary preparation directories whose process is gone (a
    preparation killed before it could clean up); returns what was removed. Directories of
    other hosts (a shared file system) and of running processes are left alone."""
    host = socket.gethostname().replace("-", "_") or "host"
    removed = []
    for path in root.glob(f"{PREPARE_PREFIX}*"):
        parts = path.name[len(PREPARE_PREFIX) :].split("-")
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if not _process_alive(int(parts[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logger.warning(
            "removed %d folder(s) of an interrupted dataset preparation in %s", len(removed), root
        )
    return removed


def _prepare_atomically(builder_cls: type, config, data_dir: str) -> None:
    """Prepares into a temporary directory under ``data_dir``, then moves the finished
    version directory into place; on any failure the temporary directory is removed."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_preparations(root)
    tmp = Path(tempfile.mkdtemp(prefix=_prepare_prefix(), dir=root))
    try:
        builder = builder_cls(config=config, data_dir=str(tmp), file_format="array_record")
        final = root / Path(builder.data_dir).relative_to(tmp)
        print(f"Preparing dataset {builder.name}/{config.name} in {final} (once)", flush=True)
        tfds.disable_progress_bar()
        builder.download_and_prepare()
        built = Path(builder.data_dir)
        files = builder.source_files() if hasattr(builder, "source_files") else []
        record = {"files": source_record(files)}
        (built / SOURCE_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a stale copy (moved aside first) or a concurrent preparation
            aside = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(built, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepared_source(builder_cls: type, config, split: str, data_dir: str = ""):
    """Prepares ``builder_cls(config)`` once (array_record) and opens ``split`` for reading.

    A copy prepared from raw files that have changed since is prepared again.

    Args:
      builder_cls: a ``tfds.core.GeneratorBasedBuilder`` subclass; if it has a
        ``source_files()`` method, those files' digests are recorded and checked.
      config: one of its BuilderConfigs (a named one or one made for user files).
      split: a split name of that config.
      data_dir: where prepared datasets live ('' -> ``tfds_data_dir()``).

    Returns:
      A random-access data source (``len``, ``[i]``) of feature dicts.
    """
    data_dir = tfds_data_dir(data_dir)
    builder = builder_cls(config=config, data_dir=data_dir, file_format="array_record")
    reason = "missing"
    # Checked by file: tfds's is_prepared() logs a warning for a version never prepared.
    if (Path(builder.data_dir) / "dataset_info.json").is_file():
        reason = ""
        if hasattr(builder, "source_files"):
            current = source_record(builder.source_files())
            reason = _stale_reason(_recorded(Path(builder.data_dir)), current)
        if reason:
            logger.warning(
                "%s/%s in %s: %s; preparing it again", builder.name, config.name, data_dir, reason
            )
    if reason:
        _prepare_atomically(builder_cls, config, data_dir)
        builder = builder_cls(config=config, data_dir=data_dir, file_format="array_record")
    splits = builder.info.splits
    if split not in splits:
        raise DataError(
            f"{builder.name}/{config.name} has no split {split!r}; it has: {', '.join(splits)}"
        )
    return builder.as_data_source(split=split)
