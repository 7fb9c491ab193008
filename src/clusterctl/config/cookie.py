"""The cluster cookie: a random secret that separates clusters sharing an account.

Created on first use with mode 0400 in the user's config directory, like Erlang's
``~/.erlang.cookie``. It never travels in clear: nodes and controllers prove they hold
it with an HMAC challenge-response (see ``clusterctl.node.wire``). The controller hands
it to a node it starts on that node's standard input (over SSH for remote hosts), once
the host has said it is not a restricted one (``restricted_key``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from clusterctl.config.dirs import config_dir
from clusterctl.errors import ClusterError
from clusterctl.node.wire import COOKIE_BYTES


def restricted_key(cookie: bytes, node: str) -> bytes:
    """The key a restricted host's node is given instead of the cookie, and proves.

    The owner of a restricted host is not trusted, so the host never learns the cookie:
    with it, the owner's agent could pass as any node, to the hub and to other nodes.
    This key is derived from the cookie and the node's name and proves only that the
    node is the restricted one of that name; nothing accepts it as anything else."""
    return hmac.new(cookie, b"clusterctl restricted node\0" + node.encode(), hashlib.sha256).digest()


def cookie_path() -> Path:
    return config_dir() / "cookie"


def load_or_create_cookie(path: Path | None = None) -> bytes:
    """Read the cookie, creating it (0400) if there is none yet."""
    path = path or cookie_path()
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise ClusterError(f"cannot read the cluster cookie {path}: {exc.strerror}",
                           hint="check its owner and mode (it should be yours, mode 0400)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ClusterError(f"the cluster cookie {path} is readable by others (mode {mode:o})",
                           hint=f"run: chmod 400 {path}")
    try:
        cookie = bytes.fromhex(text)
    except ValueError:
        cookie = b""
    if len(cookie) < 16:
        raise ClusterError(f"the cluster cookie {path} is not a valid cookie",
                           hint="delete it to have a new one made (running nodes must then be stopped by hand)")
    return cookie


def _create(path: Path) -> bytes:
    """Write a new cookie beside ``path`` and link it into place, so a concurrent reader
    never sees a half-written file and two creators agree on one cookie."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cookie = os.urandom(COOKIE_BYTES)
    # unique per creator: threads of one process share a pid
    staging = path.with_name(f".cookie.{os.getpid()}.{os.urandom(6).hex()}")
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "w") as fh:
            fh.write(cookie.hex() + "\n")
        try:
            os.link(staging, path)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create_cookie(path)
        finally:
            os.unlink(staging)
    except OSError as exc:
        raise ClusterError(f"cannot create the cluster cookie {path}: {exc.strerror}",
                           hint="make the config directory writable or set XDG_CONFIG_HOME")
    return cookie
