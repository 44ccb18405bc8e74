"""Finding raw corpora: ``$NLPJAX_DATA_DIR`` first, else a checksummed download.

Raw files are never part of the repository. On machines without network access the
file must already be under ``$NLPJAX_DATA_DIR``; set ``NLPJAX_OFFLINE=1`` to skip the
download attempt entirely.
"""

import glob
import gzip
import hashlib
import json
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from nlpjax.errors import DataError as DataError  # re-exported

DEFAULT_DATA_DIR = Path.home() / ".cache" / "nlpjax" / "data"


def data_dir() -> Path:
    return Path(os.environ.get("NLPJAX_DATA_DIR") or DEFAULT_DATA_DIR)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Digests of files this large are kept on disk between runs (hashing runs ~250 MB/s on a
# busy 2-core CPU: seconds per GB); smaller files are hashed again, which is cheaper.
DIGEST_CACHE_MIN_BYTES = 16 << 20
_digests: dict[tuple[str, int, int], str] = {}


def digest_cache_file() -> Path:
    """Where large files' digests are cached, keyed by path, size and mtime."""
    return Path(os.environ.get("NLPJAX_CACHE_DIR") or DEFAULT_DATA_DIR.parent) / "digests.json"


def content_digest(path: Path) -> str:
    """The md5 of a file's bytes, cached by (resolved path, size, modification time).

    The cache (in memory, and on disk for files of at least ``DIGEST_CACHE_MIN_BYTES``)
    trusts size + mtime: a file rewritten with other bytes but the same size and a
    preserved mtime (``cp -p``, ``rsync -a`` of another copy) keeps its old digest;
    ``touch`` it to make it count as changed.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _digests:
        return _digests[key]
    cached = _read_digest_cache() if st.st_size >= DIGEST_CACHE_MIN_BYTES else {}
    entry = cached.get(key[0])
    if entry and tuple(entry[:2]) == key[1:]:
        digest = entry[2]
    else:
        digest = md5sum(path)
        if st.st_size >= DIGEST_CACHE_MIN_BYTES:
            _write_digest_cache(cached | {key[0]: [st.st_size, st.st_mtime_ns, digest]})
    _digests[key] = digest
    return digest


def _read_digest_cache() -> dict:
    try:
        data = json.loads(digest_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_digest_cache(entries: dict) -> None:
    """Best effort (a read-only home only costs the hashing again)."""
    path = digest_cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
            json.dump(entries, tmp)
        os.replace(tmp.name, path)
    except OSError:
        pass


def _download(url: str, dest: Path, md5: str | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp,
        urllib.request.urlopen(url, timeout=30) as response,
    ):
        tmp.write(response.read())
    got = md5sum(Path(tmp.name))
    if md5 and got != md5:
        os.unlink(tmp.name)
        raise DataError(f"download of {url} has md5 {got}, expected {md5}; not saved")
    os.replace(tmp.name, dest)


def locate(relpath: str, url: str | None = None, md5: str | None = None) -> Path:
    """Returns the path of raw file ``relpath`` under the data dir, downloading if allowed."""
    path = data_dir() / relpath
    if path.is_file():
        return path
    reason = "NLPJAX_OFFLINE=1 is set" if os.environ.get("NLPJAX_OFFLINE") == "1" else None
    if url and reason is None:
        try:
            _download(url, path, md5)
            return path
        except DataError:
            raise
        except Exception as e:  # network errors of every kind
            reason = f"download of {url} failed: {e}"
    raise DataError(
        f"raw data file not found: {path}\n"
        f"Set NLPJAX_DATA_DIR to a directory that contains {relpath} "
        f"(currently NLPJAX_DATA_DIR={os.environ.get('NLPJAX_DATA_DIR', '<unset>')})"
        + (f"; {reason}" if reason else "")
    )


def check_canonical(path: Path, md5: str, name: str, own_use: str) -> None:
    """Raises unless the local file ``path`` is the canonical one (its md5 is ``md5``).

    Args:
      path: the local raw file.
      md5: the canonical file's md5 ('' = unknown, nothing to check).
      name: the corpus name, for the message.
      own_use: how to train on the local file anyway (a dataset spec hint).
    """
    if not md5:
        return
    got = content_digest(path)
    if got != md5:
        raise DataError(
            f"{path} has md5 {got}, but the canonical {name} file has md5 {md5}: it is "
            f"another file, not {name}. Restore the original (delete it to download it "
            f"again), or train on your file as your own corpus: {own_use}"
        )


def read_bytes(path: Path) -> bytes:
    """The bytes of a file, decompressed when its name ends in ``.gz``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"raw data file not found: {path}")
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from None
    return path.read_bytes()


def read_text(path: Path, errors: str = "strict", allow_empty: bool = False) -> str:
    """Reads a UTF-8 text file (``.gz`` decompressed); bad bytes raise with the byte offset.

    Args:
      path: the file.
      errors: ``"strict"`` (non-UTF-8 bytes are a DataError naming the file and the byte
        offset) or ``"replace"`` (they become U+FFFD).
      allow_empty: if False, a file with only whitespace is a DataError.
    """
    if errors not in ("strict", "replace"):
        raise DataError(f"errors must be 'strict' or 'replace', got {errors!r}")
    data = read_bytes(path)
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        where = " of the decompressed text" if Path(path).suffix == ".gz" else ""
        raise DataError(
            f"{path}: not valid UTF-8 at byte offset {e.start}{where} "
            f"({data[e.start : e.start + 4]!r}); re-encode the file as UTF-8 "
            "or read it with errors='replace'"
        ) from None
    if not allow_empty and not text.strip():
        raise DataError(f"{path}: the corpus is empty")
    return text


def expand_paths(patterns: Sequence[str], suffix: str = ".txt") -> list[Path]:
    """Files named by ``patterns``: files, directories (every ``*{suffix}`` below) or globs.

    Each pattern must match at least one file; the result is sorted per pattern and
    free of duplicates.
    """
    found: dict[Path, None] = {}  # ordered set
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            matches = [p for p in matches if p.is_file()]
        if not matches:
            what = f"no *{suffix} files in directory" if path.is_dir() else "no files match"
            raise DataError(f"{what} {pattern!r}; the corpus is empty")
        found.update(dict.fromkeys(matches))
    return list(found)
