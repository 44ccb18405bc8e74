"""One training run per workdir: an exclusive lock held by process 0 for the whole run.

Local (and NFS) workdirs use ``fcntl.flock`` on ``WORKDIR/train.lock``. The kernel
releases the lock when its holder dies, however it dies (SIGKILL included), so a lock left
behind by a killed run never blocks the resume: the file stays, the lock does not. The
holder writes its host, pid and start time into the file for the refusal message.

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
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WorkdirBusyError(
                f"{self.workdir} is in use by another training run ({holder}); wait for it "
                f"to finish or stop it, or use another --workdir"
            ) from None
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since {stamp}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (see module doc)
            self._fd = None
