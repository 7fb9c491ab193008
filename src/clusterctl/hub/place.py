"""Where the hub lives: a 0700 directory in the user's run directory, with its socket,
its lock, its pid file, the nodes it watches and its log.

Another local user may have made the run directory first (``/tmp/clusterctl-UID``
when there is no ``XDG_RUNTIME_DIR``), and whoever owns a directory can swap what is in
it. So the run directory and the hub's directory are checked as the nodes check theirs
(``boot.private_dir``: ours, real directories, 0700), the hub's directory is then held
open (``HubDir``) and its files are opened relative to it, never through a link."""

from __future__ import annotations

import errno
import os
import stat

from clusterctl.node import boot

IDLE_ENV = "CLUSTERCTL_HUB_IDLE"  # seconds without a client or a stream before it exits
SWITCH_ENV = "CLUSTERCTL_HUB"  # "off": commands connect to hosts themselves
DEFAULT_IDLE = 600.0
DIR_HINT = "set XDG_RUNTIME_DIR to a private directory"  # the way out when the run directory is not ours

SOCKET = "hub.sock"
LOCK = "hub.lock"
PID = "hub.pid"
WATCHED = "watched.json"  # the nodes the hub watches, kept so that a new hub watches them again
OLD_WATCHED = "watched.pickle"  # an older hub's list: never read (a pickle runs code), removed
LOG = "hub.log"
OLD_LOG = "hub.log.1"
LOG_BYTES = 10 * 1024 * 1024  # a longer hub.log becomes hub.log.1 (one previous log is kept)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


def hub_dir(run_dir: str | None = None) -> str:
    """The hub's directory (a node cannot be named ``hub/``: names have no slash)."""
    return os.path.join(run_dir or boot.run_dir(), "hub")


def socket_path(directory: str) -> str:
    return os.path.join(directory, SOCKET)


def lock_path(directory: str) -> str:
    return os.path.join(directory, LOCK)


def pid_path(directory: str) -> str:
    return os.path.join(directory, PID)


def watched_path(directory: str) -> str:
    """The nodes the hub watches, kept so that a new hub watches them again."""
    return os.path.join(directory, WATCHED)


def log_path(directory: str) -> str:
    return os.path.join(directory, LOG)


class HubDir:
    """The hub's directory, checked and held open: its files are opened relative to the
    directory that was checked, so a directory swapped in since is never used, and
    without following a link, so nothing is read or written through one."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: str, create: bool = True) -> HubDir | None:
        """Check the run directory (the parent of ``path``) and the hub's directory
        ``path``, creating them (0700) when missing and ``create``. None if one is
        missing (and not ``create``); RuntimeError, one line naming the directory and the
        fix, if one is not ours, not private, or not a real directory."""
        path = os.path.abspath(path)
        run = os.path.dirname(path)
        if not boot.private_dir(run, create):
            return None
        run_fd = _open_private(run, run, None)
        try:
            if create:
                try:
                    os.mkdir(os.path.basename(path), 0o700, dir_fd=run_fd)
                except FileExistsError:
                    pass
            try:
                return cls(path, _open_private(path, os.path.basename(path), run_fd))
            except FileNotFoundError:
                return None
        finally:
            os.close(run_fd)

    def file(self, name: str) -> str:
        """The path of ``name`` in the directory, for messages (and a socket's address
        where there is no /proc: see ``address``)."""
        return os.path.join(self.path, name)

    def address(self) -> str:
        """Where to bind or connect the hub's socket: through the directory held open
        (``/proc/self/fd/N/hub.sock``), so that it is the one checked."""
        through = f"/proc/self/fd/{self.fd}"
        return os.path.join(through, SOCKET) if os.path.isdir(through) else self.file(SOCKET)

    def open_file(self, name: str, flags: int, mode: int = 0o600) -> int:
        """``os.open`` of ``name`` in the directory, never through a link: RuntimeError
        naming it if it is one."""
        try:
            return os.open(name, flags | _FILE_FLAGS, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RuntimeError(f"{self.file(name)} is a symbolic link: remove it") from None
            raise

    def read(self, name: str) -> bytes | None:
        """The content of ``name``; None if there is no such file."""
        try:
            fd = self.open_file(name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def write(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` at once (a reader sees the old or the new
        content): written to ``NAME.new``, made afresh, then renamed over ``name`` (a
        link there is replaced, not followed)."""
        staged = name + ".new"
        self.remove(staged)
        fd = self.open_file(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(staged, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def remove(self, name: str) -> bool:
        """Remove ``name`` if it is there: True if it was."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def check_socket(self) -> None:
        """Before connecting: a socket there must be ours (absent is fine), as
        ``boot.check_socket`` says for a node's."""
        try:
            st = os.stat(SOCKET, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        path = self.file(SOCKET)
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f"{path} is not a socket: remove it")
        if st.st_uid != os.getuid():
            raise RuntimeError(f"the socket {path} belongs to uid {st.st_uid}, not to us "
                               f"(uid {os.getuid()}): remove it, or use another directory")

    def open_log(self, limit: int = LOG_BYTES) -> int:
        """``hub.log`` open to append (for the hub's stderr); one past ``limit`` is
        first moved to ``hub.log.1``."""
        try:
            if os.stat(LOG, dir_fd=self.fd, follow_symlinks=False).st_size > limit:
                os.replace(LOG, OLD_LOG, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except FileNotFoundError:
            pass
        return self.open_file(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def is_log(self, fd: int) -> bool:
        """Whether ``fd`` is open on this directory's ``hub.log``."""
        try:
            named = os.stat(LOG, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino)

    def keep_log_bounded(self, fd: int, limit: int = LOG_BYTES) -> bool:
        """Once the log open on ``fd`` (the hub's stderr, where its log lines and any
        traceback go) is past ``limit``: it becomes ``hub.log.1`` and ``fd`` a new
        ``hub.log``. True if it was rotated."""
        if os.fstat(fd).st_size <= limit:
            return False
        if self.is_log(fd):
            os.replace(LOG, OLD_LOG, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        new = self.open_log(limit)
        try:
            os.dup2(new, fd)
        finally:
            os.close(new)
        return True

    def close(self) -> None:
        os.close(self.fd)


def _open_private(shown: str, name: str, dir_fd: int | None) -> int:
    """The directory ``name`` (relative to ``dir_fd``) open, not through a link, and
    checked as ``boot.private_dir`` checks, on what was opened."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise  # (missing: the caller decides)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RuntimeError(f"the run directory {shown} is not a directory (a link, or a "
                               f"file): remove it") from None
        raise RuntimeError(f"cannot use {shown}: {exc.strerror or exc}") from None
    try:
        boot.check_private_stat(shown, os.fstat(fd))
    except RuntimeError:
        os.close(fd)
        raise
    return fd


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
        fd = os.open(pid_path(directory), os.O_RDONLY | _FILE_FLAGS)
    except OSError:
        return None
    try:
        with os.fdopen(fd) as fh:
            return int(fh.read(64).strip())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs. A zombie (dead, not reaped yet: the hub is a child
    of init, which may reap late) does not."""
    return not boot.process_exited(pid)
