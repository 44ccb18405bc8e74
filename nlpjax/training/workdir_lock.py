"""One training run per workdir: an exclusive lock held by process 0 for the whole run.

Local (and NFS) workdirs use ``fcntl.flock`` on ``WORKDIR/train.lock``. The kernel
releases the lock when its holder dies, however it dies (SIGKILL included), so a lock left
behind by a killed run never blocks the resume: the file stays, the lock does not. The
holder writes its host, pid and start time into the file for the refusal message, and
removes the file when it ends normally (still holding the lock; a run that locked a file
someone removed meanwhile tries again on the new one, so two runs never both hold it).

Object-store workdirs (``gs://``) have no lock primitive that survives a killed holder
without a heartbeat, so they are not locked: the run says so in one warning line.
"""

import datetime
import fcntl
import logging
import os
import socket

from etils import epath

from nlpjax.errors import WorkdirBusyError as WorkdirBusyError  # re-exported

log = logging.getLogger(__name__)
LOCK_FILE = "train.lock"


class WorkdirLock:
    """``with WorkdirLock(workdir, enabled=jax.process_index() == 0): ...``."""

    def __init__(self, workdir: epath.PathLike, enabled: bool = True):
        self.workdir = epath.Path(workdir)
        self.enabled = enabled
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        if not self.enabled:
            return self
        if "://" in str(self.workdir):
            log.warning(
                "%s is not a local path: it is not locked; make sure one run at a time uses it",
                self.workdir,
            )
            return self
        path = self.workdir / LOCK_FILE
        for _ in range(10):  # the holder may remove the file between our open and flock
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise WorkdirBusyError(
                    f"{self.workdir} is in use by another training run ({holder}); wait for "
                    f"it to finish or stop it, or use another --workdir"
                ) from None
            if _same_file(fd, path):
                break
            os.close(fd)  # locked a removed file: lock the one now at the path instead
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {stamp}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            path = self.workdir / LOCK_FILE
            if _same_file(self._fd, path):
                os.unlink(path)  # removed while still locked (see the module doc)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _same_file(fd: int, path) -> bool:
    """Whether ``fd`` is the file now at ``path`` (not one removed or replaced since)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)
