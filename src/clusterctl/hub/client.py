"""A command's side of the hub: reach it (starting it when none runs, replacing one that
runs other code), prove the cookie, ask; and ``HubTransport``, which reaches an SSH node
through it, so the command pays no SSH handshake of its own."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from clusterctl import errors
from clusterctl.config.hosts import HostSpec
from clusterctl.hub import place, protocol
from clusterctl.session.handshake import authenticate, read_hello
from clusterctl.session.outcomes import stream_failure
from clusterctl.transport.base import NodeSettings

START_SECONDS = 10.0  # a hub that is not serving this long after its start has failed
STOP_SECONDS = 5.0  # a hub asked to stop (another version's) is gone within this
DYING_TRIES = 20  # a hub that greets nobody (it is being killed): dial again, 50 ms apart


class HubClient:
    """The way to the user's hub, for commands with ``settings`` (cookie and code)."""

    def __init__(self, settings: NodeSettings, directory: str | None = None) -> None:
        self.settings = settings
        self.directory = directory or place.hub_dir()

    def call(self, what: str, args: dict, timeout: float, *, start: bool = True):
        """One request and its result (None without asking, if ``start`` is false and
        no hub runs)."""
        sock = self.connect(timeout, start=start)
        if sock is None:
            return None
        try:
            sock.sendall(protocol.request(what, args))
            return protocol.read_reply(sock)
        except (EOFError, OSError, socket.timeout) as exc:
            raise errors.HubError(f"the hub did not answer ({stream_failure(exc)})") from None
        finally:
            sock.close()

    def open_stream(self, spec: HostSpec, ssh_options: dict, *, start: bool, deadline: float):
        """A stream to the node of ``spec`` through the hub, or None if none runs and
        ``start`` is false. The node speaks first on it, as on an SSH channel."""
        timeout = max(1.0, deadline - time.monotonic())
        sock = self.connect(timeout)
        args = {"spec": spec, "ssh": ssh_options, "start": start, "timeout": timeout,
                "limits": self._limits()}
        try:
            sock.settimeout(timeout + 5.0)  # the hub gives up first, and says why
            sock.sendall(protocol.request("open", args))
            result = protocol.read_reply(sock)
        except (EOFError, OSError, socket.timeout) as exc:
            sock.close()
            raise errors.NodeUnreachable(spec.name, f"the hub did not answer ({stream_failure(exc)})",
                                         hint=errors.HubError.hint) from None
        except BaseException:
            sock.close()
            raise
        if result is None:
            sock.close()
            return None
        sock.settimeout(None)
        return sock

    def world(self, specs: list[HostSpec], ssh_options: dict, *, heartbeat: tuple[float, float],
              timeout: float, start: bool = True) -> list[tuple[str, object]]:
        """Ping the nodes of ``specs`` on the hub's own connections to them (starting the
        nodes that do not run): per node ("pong", its hello, pong and rtt), or ("pang",
        the ClusterError). A hub that dies meanwhile is replaced and asked once more."""
        args = {"specs": specs, "ssh": ssh_options, "start": start, "timeout": timeout,
                "heartbeat": heartbeat, "limits": self._limits()}
        try:
            found = self.call("world", args, timeout + 5.0)
        except errors.HubError:
            found = self.call("world", args, timeout + 5.0)
        return [(kind, protocol.restore_error(value) if kind == "pang" else value)
                for kind, value in found]

    def watched(self, timeout: float) -> list[dict]:
        """The nodes the hub knows, of every world (``Hub.watched_nodes``). No hub is
        started to ask: with none running, the nodes a killed hub left in its
        ``watched.json`` (as "lost": nothing watches them), else none."""
        found = self.call("watched", {}, timeout, start=False)
        if found is not None:
            return list(found)
        return self._left_by_a_killed_hub()

    def _left_by_a_killed_hub(self) -> list[dict]:
        from clusterctl.hub.known import read_watched  # (only ``down`` asks)

        directory = _checked(self.directory, create=False)
        if directory is None:
            return []
        try:
            remembered = read_watched(directory)
        except (OSError, RuntimeError, ValueError):
            return []  # (a new hub says in its log why the file is ignored)
        finally:
            directory.close()
        return [{"spec": args["specs"][0], "ssh": dict(args["ssh"]), "state": "lost"}
                for args in remembered.values()]

    def _limits(self) -> dict:
        """The limits a node started for this command gets."""
        return {"idle": self.settings.idle, "max_payload": self.settings.max_payload}

    def stop(self, timeout: float) -> bool:
        """Ask the hub to stop, if one runs (its streams end with it): True if one did."""
        found = self._reach(timeout, start=False)
        if found is None:
            return False
        self._replace(*found)
        return True

    # -- reaching the hub --------------------------------------------------------------

    def connect(self, timeout: float, *, start: bool = True) -> socket.socket | None:
        """An authenticated connection to the hub; one is started if none runs (and
        ``start``), and one that runs other code is stopped and replaced."""
        found = self._reach(timeout, start=start)
        return None if found is None else found[0]

    def _reach(self, timeout: float, *, start: bool):
        """``connect``, with the pid the hub's greeting gave: (socket, pid), or None."""
        deadline = time.monotonic() + timeout
        dying = 0
        for _ in range(3 + DYING_TRIES):
            sock = self._dial()
            if sock is None:
                if not start:
                    return None
                self._start(deadline)
                sock = self._dial_until(deadline)
            try:
                hello = read_hello(sock, "hub", max(0.5, deadline - time.monotonic()))
            except errors.HandshakeError:
                sock.close()
                # a hub killed a moment ago: its socket took us in before it closed
                dying += 1
                if dying > DYING_TRIES or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            try:
                authenticate(sock, "hub", hello, cookie=self.settings.cookie,
                             heartbeat_timeout=60.0, timeout=max(0.5, deadline - time.monotonic()))
            except BaseException:
                sock.close()
                raise
            if hello.get("code") == self.settings.bundle.code_id:
                return sock, hello.get("pid")
            self._replace(sock, hello.get("pid"))  # another clusterctl's hub
            if not start:
                return None
        raise errors.HubError("the hub keeps running other code than this clusterctl")

    def _dial(self) -> socket.socket | None:
        """A connection to the hub's socket; None if none listens. HubError if the run
        directory, the hub's directory or the socket is not ours: nothing is tried then."""
        hub_dir = _checked(self.directory, create=False)
        if hub_dir is None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                hub_dir.check_socket()
            except RuntimeError as exc:
                raise errors.HubError(str(exc), hint=place.DIR_HINT) from None
            sock.connect(hub_dir.address())
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise
        finally:
            hub_dir.close()
        return sock

    def _dial_until(self, deadline: float) -> socket.socket:
        while True:
            sock = self._dial()
            if sock is not None:
                return sock
            if time.monotonic() > deadline:
                raise errors.HubError(f"the hub did not come up (its log: "
                                      f"{place.log_path(self.directory)})")
            time.sleep(0.01)

    def _start(self, deadline: float) -> None:
        """Start a hub (detached); return once it serves, or another one does."""
        hub_dir = _checked(self.directory, create=True)
        try:
            log = hub_dir.open_log()
        except RuntimeError as exc:
            raise errors.HubError(str(exc), hint=place.DIR_HINT) from None
        finally:
            hub_dir.close()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # where clusterctl is imported from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clusterctl.hub.daemon", "--dir", self.directory],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env,
                start_new_session=True, close_fds=True)
        finally:
            os.close(log)
        try:
            line = _read_line(proc.stdout, min(START_SECONDS, max(1.0, deadline - time.monotonic())))
        finally:
            proc.stdout.close()
            try:
                proc.wait(START_SECONDS)  # the first process exits once the hub is detached
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not (line.startswith("ready") or line == "running"):
            raise errors.HubError(f"the hub did not start (its log: {place.log_path(self.directory)})")

    def _replace(self, sock: socket.socket, pid) -> None:
        """Ask a hub that runs other code to stop, and wait until it is gone."""
        try:
            sock.sendall(protocol.request("stop", {}))
            protocol.read_reply(sock)
        except (EOFError, OSError, errors.ClusterError):
            pass
        finally:
            sock.close()
        if not isinstance(pid, int):
            return
        deadline = time.monotonic() + STOP_SECONDS
        while place.process_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)


def _checked(directory: str, *, create: bool) -> place.HubDir | None:
    """The hub's directory, checked with its run directory and held open (None if
    missing and not ``create``); HubError, naming the directory and the fix, if either
    is not ours and private."""
    try:
        return place.HubDir.open(directory, create=create)
    except RuntimeError as exc:
        raise errors.HubError(str(exc), hint=place.DIR_HINT) from None


def _read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        return ""
    return stream.readline().decode(errors="replace").strip()


class HubTransport:
    """A node on a remote host, reached through the hub's SSH connection to it."""

    kind = "ssh"

    def __init__(self, spec: HostSpec, hub: HubClient, ssh_options: dict) -> None:
        self.spec = spec
        self.hub = hub
        self.ssh_options = ssh_options

    @property
    def host_label(self) -> str:
        return self.spec.target

    def open(self, *, start: bool, deadline: float):
        return self.hub.open_stream(self.spec, self.ssh_options, start=start, deadline=deadline)

    def wait_stopped(self, pid, timeout: float) -> None:
        self.hub.call("wait_stopped", {"spec": self.spec, "ssh": self.ssh_options, "pid": pid,
                                       "timeout": timeout}, timeout + 5.0)
