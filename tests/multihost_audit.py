"""Runs ``nlpjax.cli`` while recording every file it opens for writing under a workdir.

Used by tests/test_multihost.py for process 1, which must write nothing in the workdir
outside ``checkpoints/`` (its own array shards). Usage:
``python -m tests.multihost_audit AUDIT_LOG WORKDIR nlpjax-args...``.
"""

import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(log_path: str, workdir: str):
    watched = os.path.realpath(workdir) + os.sep

    def record(path) -> None:
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if isinstance(path, str) and os.path.realpath(path).startswith(watched):
            with open(log_path, "a") as log:
                log.write(os.path.relpath(os.path.realpath(path), watched) + "\n")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if (mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS:
                record(path)
        elif event in ("os.rename", "os.replace"):
            record(args[1])

    return hook


if __name__ == "__main__":
    audit_log, watched_dir, *argv = sys.argv[1:]
    with open(audit_log, "a") as header:  # proves the audit ran, even with nothing to record
        header.write(f"# writes of pid {os.getpid()} under {watched_dir}\n")
    sys.addaudithook(_audit(audit_log, watched_dir))
    from nlpjax import cli

    sys.exit(cli.main(argv))
