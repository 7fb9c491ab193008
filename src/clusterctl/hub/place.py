"""Where the hub lives: a 0700 directory in the user's run directory, with its socket,
its lock, its pid file and its log."""

from __future__ import annotations

import os

from clusterctl.node import boot

IDLE_ENV = "CLUSTERCTL_HUB_IDLE"  # seconds without a client or a stream before it exits
SWITCH_ENV = "CLUSTERCTL_HUB"  # "off": commands connect to hosts themselves
DEFAULT_IDLE = 600.0


def hub_dir(run_dir: str | None = None) -> str:
    """The hub's directory (a node cannot be named ``hub/``: names have no slash)."""
    return os.path.join(run_dir or boot.run_dir(), "hub")


def socket_path(directory: str) -> str:
    return os.path.join(directory, "hub.sock")


def lock_path(directory: str) -> str:
    return os.path.join(directory, "hub.lock")


def pid_path(directory: str) -> str:
    return os.path.join(directory, "hub.pid")


def watched_path(directory: str) -> str:
    """The nodes the hub watches, kept so that a new hub watches them again."""
    return os.path.join(directory, "watched.pickle")


def log_path(directory: str) -> str:
    return os.path.join(directory, "hub.log")


def enabled() -> bool:
    """Whether commands go through the hub (``CLUSTERCTL_HUB=off`` turns it off)."""
    return os.environ.get(SWITCH_ENV, "on").strip().lower() not in ("off", "0", "no", "false")


def idle_seconds() -> float:
    try:
        value = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE))
    except ValueError:
        return DEFAULT_IDLE
    return value if value > 0 else DEFAULT_IDLE


def read_pid(directory: str) -> int | None:
    try:
        with open(pid_path(directory)) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs. A zombie (dead, not reaped yet: the hub is a child
    of init, which may reap late) does not."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc to read: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
