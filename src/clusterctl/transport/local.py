"""The local transport: a node on this machine, started from the code cache and reached
through its unix socket. See docs/how-it-works.md ("Transports")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

from clusterctl import errors
from clusterctl.transport.base import NodeSettings, agent_arguments, parse_start_reply
from clusterctl.transport.bundle import launch_code
from clusterctl.config.hosts import HostSpec
from clusterctl.node import boot


STOP_WAIT = 10.0  # a local node asked to stop is gone within this, or is ended by its pid


@contextmanager
def file_lock(path: str, deadline: float):
    """An exclusive lock on ``path``, so two commands never start the same node twice."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        boot.lock_within(fd, deadline, path)
        yield
    finally:
        os.close(fd)


class LocalTransport:
    """A node on this machine, reached through its unix socket."""

    kind = "local"

    def __init__(self, spec: HostSpec, settings: NodeSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.run_dir = boot.run_dir()
        self.python = os.path.expanduser(spec.python) if spec.python else sys.executable

    @property
    def host_label(self) -> str:
        return "localhost"

    @property
    def socket_path(self) -> str:
        return boot.socket_path(self.run_dir, self.spec.name)

    def open(self, *, start: bool, deadline: float):
        """A connected stream to the node, starting it first if ``start``; None if it
        is not running and ``start`` is false. The run directory and the socket are
        checked first (ours, private): no connection is made to another user's socket."""
        name = self.spec.name
        try:
            return self._open(start, deadline)
        except RuntimeError as exc:  # a place on disk that is not ours: see node.boot
            raise errors.NodeStartError(name, str(exc), hint="set XDG_RUNTIME_DIR to a private directory, "
                                        "or remove what is named if it is yours") from None
        except TimeoutError as exc:
            raise errors.NodeStartError(name, f"timed out starting the node ({exc})")
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise errors.NodeStartError(name, f"the node started but its socket refuses ({exc})")

    def _open(self, start: bool, deadline: float):
        if boot.private_dir(self.run_dir, create=False):
            try:
                return self._connect(deadline)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
        if not start:
            return None
        boot.private_dir(self.run_dir)
        with file_lock(os.path.join(self.run_dir, self.spec.name + ".lock"), deadline):
            try:
                return self._connect(deadline)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            self._start(deadline)
            return self._connect(deadline)

    def _connect(self, deadline: float) -> socket.socket:
        boot.check_socket(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        return sock

    def _start(self, deadline: float) -> None:
        name = self.spec.name
        try:
            code_dir = self.settings.bundle.install(boot.cache_root())
        except RuntimeError as exc:  # the cache is not ours, or others may write to it
            raise errors.NodeStartError(name, str(exc), hint="nodes run code from the cache: it must be "
                                        "yours and writable only by you") from None
        except (OSError, ValueError) as exc:
            raise errors.NodeStartError(name, f"cannot write the code cache {boot.cache_root()}: "
                                        f"{getattr(exc, 'strerror', None) or exc}") from None
        command = [self.python, "-c", launch_code(str(code_dir)),
                   *agent_arguments(self.spec, self.settings, self.run_dir)]
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True,
                                    cwd=os.path.expanduser("~"))
        except FileNotFoundError:
            raise errors.NodeStartError(name, f"no Python at {self.python!r}",
                                        hint=f"fix python= for this node in the hosts file ({self.spec.source})",
                                        summary="no python")
        except PermissionError:
            raise errors.NodeStartError(name, f"{self.python!r} is not executable",
                                        hint=f"fix python= for this node in the hosts file ({self.spec.source})",
                                        summary="python not executable")
        try:
            out, err = proc.communicate(self.settings.cookie.hex() + "\n",
                                        timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise errors.NodeStartError(name, "the node did not report ready in time")
        parse_start_reply(name, out, err, self.python)

    def wait_stopped(self, pid, timeout: float) -> None:
        """After a stop: wait until the node process ``pid`` is gone, and end it by its
        pid if it will not go (it is ours: its socket was in our private run dir). A
        local node needs no network, so it gets ``STOP_WAIT`` whatever ``timeout`` is."""
        if not isinstance(pid, int):
            return
        if not wait_pid_gone(pid, STOP_WAIT) and not terminate_pid(pid, 5.0):
            raise errors.NodeError(self.spec.name, f"node process {pid} did not exit")


def running_local_nodes(directory: str | None = None) -> list[str]:
    """The names of the local nodes of any world that run from this user's run directory
    (``directory``, default ``boot.run_dir()``), sorted: each has its socket there and its
    pid file names a process that runs. Nothing is connected to, so a node's log does not
    record a stranger's connection; a pid reused since a node was killed is told apart
    later, when a stop's handshake finds no node (``"not running"``)."""
    directory = directory or boot.run_dir()
    try:
        if not boot.private_dir(directory, create=False):
            return []
        names = os.listdir(directory)
    except (RuntimeError, OSError):
        return []  # (a place that is not ours: a command that uses it says why)
    found = []
    for entry in names:
        if not entry.endswith(".sock"):
            continue
        name = entry[:-len(".sock")]
        try:
            with open(os.path.join(directory, name + ".pid")) as fh:
                pid = int(fh.read(32).strip())
        except (OSError, ValueError):
            continue
        if not boot.process_exited(pid):
            found.append(name)
    return sorted(found)


def terminate_pid(pid: int, timeout: float) -> bool:
    """SIGTERM, wait, then SIGKILL one process we know to be a node of ours."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if wait_pid_gone(pid, timeout):
            return True
    return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` has exited (it is not our child, so no waitpid)."""
    return boot.wait_exited(pid, timeout, interval=0.01)
