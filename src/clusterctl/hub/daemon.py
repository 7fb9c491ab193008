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
from clusterctl.hub import place, protocol, watch
from clusterctl.hub.connections import Connections
from clusterctl.hub.known import KnownNodes, rewatch_requests
from clusterctl.hub.router import Router
from clusterctl.hub.splice import Splice
from clusterctl.hub.watch import Watches, watch_heartbeat
from clusterctl.node import ops, wire
from clusterctl.transport.base import NodeSettings
from clusterctl.transport.bundle import agent_bundle
from clusterctl.version import __version__

HANDSHAKE_SECONDS = 10.0  # a command must have connected, proved the cookie and sent its
# request within this, all told: one that is slower (a byte at a time) is dropped
MAX_COMMANDS = 256  # commands in their handshake or request at once; more are closed at once
REWATCH_SECONDS = 2.0  # how often a lost watch tries again (and one lost for long is forgotten)
ACCEPT_SECONDS = 0.5  # how often the loop looks whether it was idle too long (``stop`` wakes it)

_log_dir: place.HubDir | None = None  # set once the hub's stderr is its hub.log: kept bounded
_log_lock = threading.Lock()


def log(message: str) -> None:
    """One line in the hub's log; a log past ``place.LOG_BYTES`` is rotated after it."""
    with _log_lock:
        sys.stderr.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
        sys.stderr.flush()
        if _log_dir is not None:
            try:
                _log_dir.keep_log_bounded(sys.stderr.fileno())
            except (OSError, RuntimeError):
                pass  # (a full disk, say: the log goes on where it is)


class Deadline:
    """A command's socket while it greets and asks: every read and write must be done by
    one deadline. A timeout per read would let a command that sends a byte every few
    seconds hold its connection and thread for ever."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self.ends = time.monotonic() + seconds

    def recv(self, size: int) -> bytes:
        self._arm()
        return self.sock.recv(size)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def _arm(self) -> None:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no request within {HANDSHAKE_SECONDS:g} s of connecting")
        self.sock.settimeout(left)


class Hub:
    def __init__(self, directory: place.HubDir, cookie: bytes, idle: float) -> None:
        self.directory = directory  # checked and held open: its files are opened through it
        self.cookie = cookie
        self.idle = idle
        self.settings = NodeSettings(cookie=cookie, bundle=agent_bundle())
        self.connections = Connections(self.settings)
        self.router = Router(log)
        self.watches = Watches(self.router)
        self.known = KnownNodes(directory, self.connections.pool_key, log)
        self.started = time.time()
        self.stopping = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None  # ``stop`` wakes the loop
        self.splices: set[Splice] = set()
        self.finished = {"streams": 0, "up": 0, "down": 0}  # of the streams that ended
        self.requests = 0
        self._serving = 0  # commands in their handshake or request (at most MAX_COMMANDS)
        self._turned_away = 0  # connections closed at once since the last one served
        self._last_active = time.monotonic()
        self._lock = threading.Lock()

    # -- the loop ----------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        threading.Thread(target=self._keep_watching, daemon=True, name="clusterctl-hub-watch").start()
        self._wake = socket.socketpair()  # (a closed socket refuses a late ``stop``'s byte;
        # a raw descriptor's number might already be another file's)
        try:
            while not self.stopping.is_set():
                ready, _, _ = select.select([listener, self._wake[0]], [], [], ACCEPT_SECONDS)
                if listener in ready:
                    self._accept(listener)
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
            for end in self._wake:
                end.close()

    def stop(self) -> None:
        """End the loop now (a ``stop`` request, SIGTERM): ``down`` waits for the hub to
        be gone."""
        self.stopping.set()
        wake = self._wake
        if wake is not None:
            try:
                wake[1].send(b"x", socket.MSG_DONTWAIT)
            except OSError:  # (full, or closed as the loop ended: it is awake already)
                pass

    def _accept(self, listener: socket.socket) -> None:
        """Take one command, served in a thread of its own; closed at once if
        ``MAX_COMMANDS`` are being served, or if no thread can start (the command says
        the hub did not answer; the hub goes on)."""
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        if not self._take_place():
            sock.close()
            return
        try:
            threading.Thread(target=self._serve_one, args=(sock,), daemon=True,
                             name="clusterctl-hub-command").start()
        except RuntimeError as exc:  # can't start new thread
            log(f"a command's connection closed: cannot start its thread ({exc})")
            sock.close()
            self._leave_place()

    def _take_place(self) -> bool:
        """A place among the ``MAX_COMMANDS`` served at once; False if there is none
        (said in the log when the hub starts turning commands away, and when it stops)."""
        with self._lock:
            full = self._serving >= MAX_COMMANDS
            if full:
                self._turned_away += 1
                turned_away = self._turned_away
            else:
                self._serving += 1
                turned_away, self._turned_away = self._turned_away, 0
        if full and turned_away == 1:
            log(f"too many commands at once ({MAX_COMMANDS}): closing new connections")
        elif not full and turned_away:
            log(f"serving commands again, after closing {turned_away} connections")
        return not full

    def _leave_place(self) -> None:
        with self._lock:
            self._serving -= 1
            self._last_active = time.monotonic()

    def _keep_watching(self) -> None:
        """The nodes a hub before this one watched are watched again (none is started);
        then, every ``REWATCH_SECONDS``, a lost watch tries again: the routing between
        nodes comes back by itself. A watch lost for ``watch.FORGET_SECONDS`` is forgotten.

        Every remembered node is known before the first is watched: the first node back
        sends again what it kept for the others, and a frame for a node the hub does not
        know is refused as for a node that is not in the world, which drops it for good."""
        remembered = self.known.remembered()
        self.router.know(remembered)
        for args in rewatch_requests(remembered):
            try:
                self.world(args)
            except Exception as exc:  # noqa: BLE001 - the next command's world will do
                log(f"watching {[s.name for s in args['specs']]} again failed: {exc}")
        while not self.stopping.wait(REWATCH_SECONDS):
            self._forget_lost()
            self.watches.reconnect()

    def _forget_lost(self) -> None:
        """Forget the nodes whose watch was lost too long ago (each costs a try every
        ``REWATCH_SECONDS``): no longer watched, nor kept for a new hub."""
        forgotten = self.watches.forget_lost()
        if not forgotten:
            return
        self.known.forget(forgotten)
        self.router.forget(spec.name for _, spec in forgotten)
        log(f"forgot {', '.join(spec.name for _, spec in forgotten)}: lost for more than "
            f"{watch.FORGET_SECONDS:g} s")

    def _idle_for(self) -> float:
        with self._lock:
            if self._serving or self.splices or self.router.busy():
                return 0.0
            return time.monotonic() - self._last_active

    def _serve_one(self, sock: socket.socket) -> None:
        """Greet, check the cookie and read the request, all within HANDSHAKE_SECONDS of
        the connection; then answer (each write of the answer within HANDSHAKE_SECONDS)."""
        kept = False
        try:
            bounded = Deadline(sock, HANDSHAKE_SECONDS)
            if self._handshake(bounded):
                head, payload = wire.read_message(bounded)
                sock.settimeout(HANDSHAKE_SECONDS)
                kept = self._answer(sock, head, payload)
        except Exception as exc:  # noqa: BLE001 - one command's trouble is its own
            log(f"a command's request failed: {type(exc).__name__}: {exc}")
        finally:
            if not kept:
                sock.close()
            self._leave_place()

    def _handshake(self, sock: Deadline) -> bool:
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

    def _answer(self, sock: socket.socket, head: dict, payload: bytes) -> bool:
        """Answer one request; True if the socket became a node's stream."""
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
                hint=f"its log: {self.directory.file(place.LOG)}")))
            return False
        sock.sendall(protocol.reply(result))
        if what == "stop":
            log("asked to stop")
            self.stop()
        return False

    def _do(self, what: str, args: dict):
        c = self.connections
        if what == "unknown_host_key":
            return c.unknown_host_key(args["spec"], args["ssh"], args["timeout"])
        if what == "trust":
            return c.trust(args["ssh"], args["unknown"])
        if what == "wait_stopped":
            c.wait_stopped(args["spec"], args["ssh"], args["pid"], args["timeout"])
            return self.known.stopped(args["spec"])
        if what == "world":
            return self.world(args)
        if what == "status":
            return self.status()
        if what == "watched":
            return self.watched_nodes()
        return None  # stop

    def _open(self, sock: socket.socket, args: dict) -> bool:
        spec = args["spec"]
        channel = self.connections.open(spec, args["ssh"], args["limits"], args["start"],
                                        args["timeout"])
        if channel is None:
            sock.sendall(protocol.reply(None))
            return False
        self.known.reached(spec, args["ssh"])
        try:
            sock.sendall(protocol.reply("stream"))
        except OSError:
            channel.close()
            raise
        splice = Splice(sock, channel, spec.name, self._ended)
        with self._lock:
            self.splices.add(splice)
        try:
            splice.start()
        except RuntimeError:  # can't start new thread: this stream is not made
            with self._lock:
                self.splices.discard(splice)
            splice.close()
            raise
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
        self.known.remember(args)
        self.router.know(spec.name for spec in args["specs"])
        found = self.watches.world(jobs, start=args["start"], settings=c.limited(limits),
                                   heartbeat=watch_heartbeat(*args["heartbeat"]),
                                   timeout=args["timeout"])
        return [(kind, protocol.error_state(value) if kind == "pang" else value)
                for kind, value in found]

    def watched_nodes(self) -> list[dict]:
        """Every node the hub knows (``KnownNodes.describe``), with its watch's state, or
        "stopped" for one that said it stops."""
        states = {w["node"]: w["state"] for w in self.watches.describe()}
        states.update((name, "stopped") for name in self.router.said_stop() if states.get(name) != "up")
        return self.known.describe(states)

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


# -- the process -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterctl-hub")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--idle", type=float, default=place.idle_seconds())
    args = parser.parse_args(argv)
    try:
        directory = place.HubDir.open(args.dir)
        lock_fd = directory.open_file(place.LOCK, os.O_RDWR | os.O_CREAT)
    except (OSError, RuntimeError) as exc:  # one line: the command shows it
        print(f"clusterctl hub: {exc} ({place.DIR_HINT})", file=sys.stderr, flush=True)
        return 1
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("running", flush=True)  # another hub holds the lock: use that one
        return 0
    if os.fork():
        os._exit(0)  # the starter reaps this one; the hub goes on detached
    os.setsid()
    listener = listen(directory)
    directory.write(place.PID, f"{os.getpid()}\n".encode())
    _bound_log(directory)
    hub = Hub(directory, load_or_create_cookie(), args.idle)
    signal.signal(signal.SIGTERM, lambda *_: hub.stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log(f"hub {os.getpid()} serving on {directory.file(place.SOCKET)}")
    print(f"ready {os.getpid()}", flush=True)
    _detach_stdout()
    try:
        hub.serve(listener)
        directory.remove(place.WATCHED)  # (kept only by a hub that was killed)
    finally:
        directory.remove(place.SOCKET)
        directory.remove(place.PID)
        log("hub stopped")
    os._exit(0)  # its threads are done or daemons: Python's own teardown would only keep
    # ``down``, which waits for the hub to be gone, waiting a tenth of a second more


def listen(directory: place.HubDir) -> socket.socket:
    """The hub's socket (0600), bound in the directory that was checked."""
    directory.remove(place.SOCKET)  # a socket left by a hub that was killed (we hold the lock)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(directory.address())
    except BaseException:
        listener.close()
        raise
    finally:
        os.umask(old)
    listener.listen(128)
    return listener


def _bound_log(directory: place.HubDir) -> None:
    """Keep the log bounded from now on, if the hub's stderr is its ``hub.log`` (as a
    command starts it: not when run by hand)."""
    global _log_dir
    if directory.is_log(sys.stderr.fileno()):
        _log_dir = directory


def _detach_stdout() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 0)
    os.close(null)



if __name__ == "__main__":
    sys.exit(main())
