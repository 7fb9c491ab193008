"""The hub process: ``python -m clusterctl.hub.daemon --dir DIR``, started on demand by a
command (see ``hub.client``), one per user: a lock in its directory keeps a second
from running. It detaches, listens on its unix socket, and serves each command in a
thread of its own: the node's handshake with the user's cookie, then one request. It
exits when idle (no command connected and no stream open), on SIGTERM, or when asked
(``clusterctl down``).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
import traceback

from clusterctl import errors
from clusterctl.config.cookie import load_or_create_cookie
from clusterctl.hub import place, protocol
from clusterctl.hub.connections import Connections
from clusterctl.hub.router import Router
from clusterctl.hub.splice import Splice
from clusterctl.hub.watch import Watches, watch_heartbeat
from clusterctl.node import boot, ops, wire
from clusterctl.transport.base import NodeSettings
from clusterctl.transport.bundle import agent_bundle
from clusterctl.version import __version__

HANDSHAKE_SECONDS = 10.0  # a command that says nothing this long after connecting is dropped
REWATCH_SECONDS = 2.0  # how often a lost watch tries again
ACCEPT_SECONDS = 0.05  # how soon the loop sees it was asked to stop (``down`` waits for it)


def log(message: str) -> None:
    sys.stderr.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
    sys.stderr.flush()


class Hub:
    def __init__(self, directory: str, cookie: bytes, idle: float) -> None:
        self.directory = directory
        self.cookie = cookie
        self.idle = idle
        self.settings = NodeSettings(cookie=cookie, bundle=agent_bundle())
        self.connections = Connections(self.settings)
        self.router = Router(log)
        self.watches = Watches(self.router)
        self.watched: dict[str, dict] = {}  # node -> the world request that watches it
        self.started = time.time()
        self.stopping = threading.Event()
        self.splices: set[Splice] = set()
        self.finished = {"streams": 0, "up": 0, "down": 0}  # of the streams that ended
        self.requests = 0
        self._serving = 0  # commands in their handshake or request
        self._last_active = time.monotonic()
        self._lock = threading.Lock()

    # -- the loop ----------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        threading.Thread(target=self._keep_watching, daemon=True, name="clusterctl-hub-watch").start()
        try:
            while not self.stopping.is_set():
                ready, _, _ = select.select([listener], [], [], ACCEPT_SECONDS)
                if ready:
                    try:
                        sock, _ = listener.accept()
                    except OSError:
                        continue
                    threading.Thread(target=self._serve_one, args=(sock,), daemon=True,
                                     name="clusterctl-hub-command").start()
                elif self._idle_for() > self.idle:
                    log(f"idle for {self.idle:g} s: exiting")
                    break
        finally:
            with self._lock:
                splices = list(self.splices)
            for splice in splices:
                splice.close()
            self.watches.close()
            self.connections.close()

    def _keep_watching(self) -> None:
        """The nodes a hub before this one watched are watched again (none is started);
        then, every ``REWATCH_SECONDS``, a lost watch tries again: the routing between
        nodes comes back by itself.

        Every remembered node is known before the first is watched: the first node back
        sends again what it kept for the others, and a frame for a node the hub does not
        know is refused as for a node that is not in the world, which drops it for good."""
        try:
            with open(place.watched_path(self.directory), "rb") as fh:
                remembered = pickle.load(fh)
        except (OSError, EOFError, pickle.PickleError, AttributeError, ImportError):
            remembered = {}
        self.router.know(remembered)
        for args in rewatch_requests(remembered):
            try:
                self.world(args)
            except Exception as exc:  # noqa: BLE001 - the next command's world will do
                log(f"watching {[s.name for s in args['specs']]} again failed: {exc}")
        while not self.stopping.wait(REWATCH_SECONDS):
            self.watches.reconnect()

    def _idle_for(self) -> float:
        with self._lock:
            if self._serving or self.splices or self.router.busy():
                return 0.0
            return time.monotonic() - self._last_active

    def _serve_one(self, sock: socket.socket) -> None:
        with self._lock:
            self._serving += 1
        kept = False
        try:
            sock.settimeout(HANDSHAKE_SECONDS)
            if self._handshake(sock):
                kept = self._answer(sock)
        except Exception as exc:  # noqa: BLE001 - one command's trouble is its own
            log(f"a command's request failed: {type(exc).__name__}: {exc}")
        finally:
            if not kept:
                sock.close()
            with self._lock:
                self._serving -= 1
                self._last_active = time.monotonic()

    def _handshake(self, sock: socket.socket) -> bool:
        """Greet and check the cookie as a node does (``session.handshake`` is the other side)."""
        nonce = wire.new_nonce()
        sock.sendall(wire.encode({"op": "hello", "proto": wire.PROTOCOL_VERSION, "nonce": nonce,
                                  "version": __version__, "code": self.settings.bundle.code_id,
                                  "pid": os.getpid(), "node": "hub"}))
        head, _ = wire.read_message(sock, max_payload=0)
        theirs = head.get("nonce")
        if head["op"] != "auth" or ops.check(head, ops.HANDSHAKE) is not None or \
                not wire.macs_equal(head["mac"], wire.client_mac(self.cookie, nonce, theirs)):
            sock.sendall(wire.encode({"op": "refused", "reason": "bad cookie"}))
            return False
        sock.sendall(wire.encode({"op": "welcome", "mac": wire.node_mac(self.cookie, nonce, theirs)}))
        return True

    # -- requests ----------------------------------------------------------------------

    def _answer(self, sock: socket.socket) -> bool:
        """Read one request and answer it; True if the socket became a node's stream."""
        head, payload = wire.read_message(sock)
        what = head.get("what")
        if head.get("op") != "request" or what not in protocol.OPS:
            sock.sendall(protocol.reply(error=errors.ProtocolError("hub", f"no such request {what!r}")))
            return False
        self.requests += 1
        args = pickle.loads(payload)
        try:
            if what == "open":
                return self._open(sock, args)
            result = self._do(what, args)
        except errors.ClusterError as exc:
            sock.sendall(protocol.reply(error=exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a bug of ours: said, not a closed socket
            log(f"the request {what!r} failed:\n{traceback.format_exc().rstrip()}")
            sock.sendall(protocol.reply(error=errors.HubError(
                f"the hub failed on the request {what!r}: {type(exc).__name__}: {exc}",
                hint=f"its log: {place.log_path(self.directory)}")))
            return False
        sock.sendall(protocol.reply(result))
        if what == "stop":
            log("asked to stop")
            self.stopping.set()
        return False

    def _do(self, what: str, args: dict):
        c = self.connections
        if what == "unknown_host_key":
            return c.unknown_host_key(args["spec"], args["ssh"], args["timeout"])
        if what == "trust":
            return c.trust(args["ssh"], args["unknown"])
        if what == "wait_stopped":
            return c.wait_stopped(args["spec"], args["ssh"], args["pid"], args["timeout"])
        if what == "world":
            return self.world(args)
        if what == "status":
            return self.status()
        return None  # stop

    def _open(self, sock: socket.socket, args: dict) -> bool:
        spec = args["spec"]
        channel = self.connections.open(spec, args["ssh"], args["limits"], args["start"],
                                        args["timeout"])
        if channel is None:
            sock.sendall(protocol.reply(None))
            return False
        try:
            sock.sendall(protocol.reply("stream"))
        except OSError:
            channel.close()
            raise
        splice = Splice(sock, channel, spec.name, self._ended)
        with self._lock:
            self.splices.add(splice)
        splice.start()
        return True

    def world(self, args: dict) -> list[tuple]:
        """Ping each node of ``args["specs"]`` on the hub's own connection to it (made,
        and the node started if ``args["start"]``, when there is none): per node
        ("pong", hello pong and rtt), ("absent", None) or ("pang", an error's state)."""
        c = self.connections
        ssh, limits = args["ssh"], args["limits"]
        key = c.pool_key(ssh)
        jobs = [(key, spec, lambda spec=spec: c.transport(spec, ssh, limits))
                for spec in args["specs"]]
        self._remember(args)
        self.router.know(spec.name for spec in args["specs"])
        found = self.watches.world(jobs, start=args["start"], settings=c.limited(limits),
                                   heartbeat=watch_heartbeat(*args["heartbeat"]),
                                   timeout=args["timeout"])
        return [(kind, protocol.error_state(value) if kind == "pang" else value)
                for kind, value in found]

    def _remember(self, args: dict) -> None:
        """Keep which nodes are watched, and how, for a hub that replaces this one."""
        with self._lock:
            for spec in args["specs"]:
                self.watched[spec.name] = dict(args, specs=[spec], start=False)
            data = pickle.dumps(self.watched)
        path = place.watched_path(self.directory)
        try:
            with open(path + ".new", "wb") as fh:
                fh.write(data)
            os.replace(path + ".new", path)
        except OSError as exc:
            log(f"cannot keep the watched nodes in {path}: {exc}")

    def _ended(self, splice: Splice) -> None:
        with self._lock:
            self.splices.discard(splice)
            self.finished["streams"] += 1
            self.finished["up"] += splice.up
            self.finished["down"] += splice.down
            self._last_active = time.monotonic()

    def status(self) -> dict:
        with self._lock:
            streams = [{"node": s.label, "up": s.up, "down": s.down} for s in self.splices]
            finished = dict(self.finished)
        return {"pid": os.getpid(), "uptime": time.time() - self.started, "version": __version__,
                "code": self.settings.bundle.code_id, "idle_exit": self.idle,
                "requests": self.requests, "streams": streams, "finished": finished,
                "pools": self.connections.describe(), "nodes": self.watches.describe(),
                "routing": self.router.describe()}


# -- the process -------------------------------------------------------------------------

def rewatch_requests(remembered: dict[str, dict]) -> list[dict]:
    """The world requests that watch the remembered nodes again, none started: one for
    each set of settings, with every node that shares it (watched side by side, as one
    command's world is), in the order the nodes were first watched."""
    merged: dict[bytes, dict] = {}
    for args in remembered.values():
        settings = {key: value for key, value in args.items() if key != "specs"}
        key = pickle.dumps(sorted(settings.items()))
        if key in merged:
            merged[key]["specs"] += args["specs"]
        else:
            merged[key] = dict(settings, specs=list(args["specs"]), start=False)
    return list(merged.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterctl-hub")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--idle", type=float, default=place.idle_seconds())
    args = parser.parse_args(argv)
    directory = args.dir
    boot.private_dir(directory)
    lock_fd = os.open(place.lock_path(directory), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("running", flush=True)  # another hub holds the lock: use that one
        return 0
    if os.fork():
        os._exit(0)  # the starter reaps this one; the hub goes on detached
    os.setsid()
    listener = _listen(directory)
    with open(place.pid_path(directory), "w") as fh:
        fh.write(f"{os.getpid()}\n")
    hub = Hub(directory, load_or_create_cookie(), args.idle)
    signal.signal(signal.SIGTERM, lambda *_: hub.stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log(f"hub {os.getpid()} serving on {place.socket_path(directory)}")
    print(f"ready {os.getpid()}", flush=True)
    _detach_stdout()
    try:
        hub.serve(listener)
        _remove(place.watched_path(directory))  # (kept only by a hub that was killed)
    finally:
        _remove(place.socket_path(directory))
        _remove(place.pid_path(directory))
        log("hub stopped")
    return 0


def _listen(directory: str) -> socket.socket:
    path = place.socket_path(directory)
    _remove(path)  # a socket left by a hub that was killed (we hold the lock)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(128)
    return listener


def _detach_stdout() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 0)
    os.close(null)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main())
