"""The node's log: one file on descriptors 1 and 2, shared with its workers, kept bounded.

See docs/how-it-works.md, "Inside a node".
"""

from __future__ import annotations

import os
import sys
import time

LOG_BYTES = 1 << 20  # the log is cut past this size, one older part kept (see ``bound_log``)

_log_path: str | None = None  # the log file on descriptors 1 and 2, once ``redirect_to`` set it up


def log(message: str) -> None:
    sys.stderr.write("%s [%d] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message))
    sys.stderr.flush()
    bound_log()


def bound_log() -> None:
    """Keep the log under ``LOG_BYTES``: past it, its last ``LOG_BYTES`` are copied to
    ``LOG.1`` and it is emptied in place. The node and its workers (and what user code
    prints) append to the one open file, so all of them go on writing to the new start."""
    if _log_path is None:
        return
    try:
        size = os.fstat(2).st_size
        if size <= LOG_BYTES:
            return
        old = _log_path + ".1"
        with open(_log_path, "rb") as src, open(old + ".tmp", "wb") as dst:
            src.seek(max(0, size - LOG_BYTES))
            dst.write(src.read(LOG_BYTES))
        os.replace(old + ".tmp", old)
        os.ftruncate(2, 0)
    except OSError:
        pass


def redirect_to(log_path: str) -> None:
    """Make ``log_path`` the process's standard output and error (input: /dev/null), and
    keep it under ``LOG_BYTES`` from then on. A log too big already is set aside first.
    Nothing changes if the file cannot be opened."""
    global _log_path
    try:
        if os.path.exists(log_path) and os.path.getsize(log_path) > LOG_BYTES:
            os.replace(log_path, log_path + ".1")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(devnull)
        os.close(log_fd)
        _log_path = log_path  # kept under LOG_BYTES while the node runs
    except OSError:
        pass
