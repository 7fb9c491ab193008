"""A benchmark's controller in private directories: its own run, config and cache
directories (so its nodes, hub and cookie are its own, and the user's are untouched),
put back and removed at the end; and the SSH test bed the benchmarks run their hosts on."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

KEYS = ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "CLUSTERCTL_HOSTS")


@contextlib.contextmanager
def private_dirs(prefix: str) -> Iterator[Path]:
    """A new temporary root with 0700 ``r``, ``c`` and ``k`` directories as the XDG run,
    config and cache directories of this process and the ones it starts; no hosts file
    from the environment. Set before clusterctl is imported."""
    saved = {k: os.environ.get(k) for k in KEYS}
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        for key, sub in zip(KEYS, ("r", "c", "k")):
            (root / sub).mkdir(mode=0o700)
            os.environ[key] = str(root / sub)
        os.environ.pop("CLUSTERCTL_HOSTS", None)
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


def ssh_test_bed():
    """``(SSHTestBed, None)`` from tests/support, or ``(None, why it cannot run here)``."""
    support = str(Path(__file__).resolve().parent.parent / "tests" / "support")
    if support not in sys.path:
        sys.path.insert(0, support)
    try:
        from sshbed import SSHTestBed, available_reason
    except ImportError as exc:
        return None, f"the SSH test bed is not available ({exc})"
    reason = available_reason()
    return (None, reason) if reason else (SSHTestBed, None)
