"""The controller's end of one node connection: handshake, requests, heartbeats.

A connection wraps a byte stream (a unix socket for a local node, an SSH channel for a
remote one; both offer ``sendall``, ``recv``, ``settimeout`` and ``close``). Requests
carry a number and are answered out of order; one reader thread per connection routes
each reply to the request waiting for it (an event for a blocking rpc, a callback for
pmap's scheduler). The same thread sends a ping whenever the line has been quiet for a
heartbeat interval and declares the node lost when nothing at all has arrived for the
heartbeat timeout: that bounds how long a cut network or a frozen host can hide.
"""

from __future__ import annotations

import itertools
import pickle
import socket
import threading
import time
from typing import Any, Callable

from . import errors
from .node import wire

Callback = Callable[[dict | None, Any, "errors.ClusterError | None"], None]


class Pending:
    """One request in flight; the reply (or the failure) arrives from the reader thread."""

    __slots__ = ("event", "head", "payload", "error", "callback")

    def __init__(self, callback: Callback | None = None) -> None:
        self.event = None if callback else threading.Event()
        self.head: dict | None = None
        self.payload: Any = b""
        self.error: errors.ClusterError | None = None
        self.callback = callback

    def resolve(self, head: dict | None, payload: Any, error: errors.ClusterError | None) -> None:
        if self.callback is not None:
            self.callback(head, payload, error)
            return
        self.head, self.payload, self.error = head, payload, error
        self.event.set()

    def wait(self, timeout: float | None) -> bool:
        return self.event.wait(timeout)


class NodeConnection:
    """A handshaken, authenticated connection to one node."""

    def __init__(self, node: str, stream, *, cookie: bytes, heartbeat_interval: float = 2.0,
                 heartbeat_timeout: float = 10.0, max_payload: int = wire.DEFAULT_MAX_PAYLOAD,
                 on_close: Callable[[], None] | None = None) -> None:
        self.node = node
        self.stream = stream
        self.cookie = cookie
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_payload = max_payload
        self.hello: dict = {}
        self.on_close = on_close
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._lock = threading.Lock()  # guards _pending and the closed state
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.closed = False
        self.lost: errors.ClusterError | None = None
        self.last_rx = time.monotonic()
        self.rtt: float | None = None
        self.clock_offset: float | None = None

    # -- handshake ------------------------------------------------------------------------

    def read_hello(self, timeout: float) -> dict:
        """The node's opening message; nothing is sent before it is read."""
        self.stream.settimeout(timeout)
        try:
            head, _ = wire.read_message(self.stream, max_payload=0)
        except (EOFError, OSError, socket.timeout) as exc:
            raise errors.HandshakeError(self.node, f"no greeting from the node ({_why(exc)})")
        except wire.FrameError as exc:
            raise errors.ProtocolError(self.node, f"the peer does not speak clusterctl's protocol ({exc})")
        if head.get("op") != "hello":
            raise errors.ProtocolError(self.node, f"expected a greeting, got {head.get('op')!r}")
        self.hello = head
        return head

    def authenticate(self, timeout: float) -> None:
        """Prove we hold the cookie and check that the node does too."""
        nonce = wire.new_nonce()
        node_nonce = str(self.hello.get("nonce", ""))
        self.stream.settimeout(timeout)
        try:
            self.stream.sendall(wire.encode({
                "op": "auth", "proto": wire.PROTOCOL_VERSION, "nonce": nonce,
                "mac": wire.client_mac(self.cookie, node_nonce, nonce),
                "heartbeat": self.heartbeat_timeout}))
            head, _ = wire.read_message(self.stream, max_payload=0)
        except (EOFError, OSError, socket.timeout) as exc:
            raise errors.HandshakeError(self.node, f"the node closed the handshake ({_why(exc)})")
        except wire.FrameError as exc:
            raise errors.ProtocolError(self.node, str(exc))
        if head.get("op") == "refused":
            reason = head.get("reason", "refused")
            hint = None
            if "cookie" in str(reason):
                hint = ("another cluster on this account runs a node with this name: give this "
                        "host another name= in the hosts file, or share the cookie file")
            raise errors.HandshakeError(self.node, f"the node refused us: {reason}", hint=hint)
        if head.get("op") != "welcome" or not wire.macs_equal(
                head.get("mac"), wire.node_mac(self.cookie, node_nonce, nonce)):
            raise errors.HandshakeError(self.node, "the node could not prove it holds our cookie")

    def start(self) -> None:
        """Begin routing replies and sending heartbeats."""
        self.stream.settimeout(self.heartbeat_interval)
        self.last_rx = time.monotonic()
        self._reader = threading.Thread(target=self._read_loop, name=f"clusterctl-{self.node}",
                                        daemon=True)
        self._reader.start()

    # -- requests -------------------------------------------------------------------------

    def request(self, head: dict, payload: bytes = b"", callback: Callback | None = None) -> Pending:
        """Send a request; its reply resolves the returned Pending."""
        pending = Pending(callback)
        with self._lock:
            if self.lost is not None:
                error = self.lost
            else:
                error = None
                head["id"] = request_id = next(self._ids)
                self._pending[request_id] = pending
        if error is not None:
            pending.resolve(None, b"", error)
            return pending
        self.send(head, payload)
        return pending

    def send(self, head: dict, payload: bytes = b"") -> None:
        prefix, payload = wire.encode_parts(head, payload)
        try:
            with self._send_lock:
                if len(payload) < 65536:
                    self.stream.sendall(prefix + payload)
                else:
                    self.stream.sendall(prefix)
                    self.stream.sendall(payload)
        except (OSError, EOFError, socket.timeout) as exc:
            self._fail(errors.NodeLost(self.node, f"connection broke while sending ({_why(exc)})"))

    def cancel(self, request_id: int) -> None:
        """Ask the node to cancel a request; its reply still arrives (as cancelled)."""
        if self.lost is None:
            self.send({"op": "cancel", "id": request_id})

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def ping(self, timeout: float) -> dict:
        """A round trip; records the round-trip time and the node's clock offset."""
        sent = time.time()
        t0 = time.perf_counter()
        pending = self.request({"op": "ping", "t": sent})
        if not pending.wait(timeout):
            raise errors.CallTimeout(self.node, f"no answer to a ping within {timeout:g} s")
        if pending.error is not None:
            raise pending.error
        self.rtt = time.perf_counter() - t0
        received = time.time()
        self.clock_offset = pending.head.get("time", received) - (sent + received) / 2
        return pending.head

    # -- the reader thread ----------------------------------------------------------------

    def _read_loop(self) -> None:
        decoder = wire.FrameDecoder(self.max_payload)
        stream = self.stream
        last_ping = 0.0
        try:
            while True:
                try:
                    chunk = stream.recv(65536)
                except socket.timeout:
                    chunk = None
                now = time.monotonic()
                if chunk is None:
                    if now - self.last_rx > self.heartbeat_timeout:
                        raise errors.NodeLost(self.node, "no heartbeat for %.1f s: the host may be "
                                              "down or the network cut" % (now - self.last_rx))
                    if now - last_ping >= self.heartbeat_interval:
                        last_ping = now
                        self.send({"op": "ping", "t": time.time(), "id": 0})
                    continue
                if not chunk:
                    raise errors.NodeLost(self.node, "the node closed the connection")
                self.last_rx = now
                for head, payload, _raw in decoder.feed(chunk):
                    self._route(head, payload)
                if now - last_ping >= self.heartbeat_interval and self._pending:
                    last_ping = now  # keep the node's heartbeat fed while we are busy receiving
                    self.send({"op": "ping", "t": time.time(), "id": 0})
        except errors.ClusterError as exc:
            self._fail(exc)
        except wire.FrameError as exc:
            self._fail(errors.ProtocolError(self.node, f"garbage from the node: {exc}"))
        except (OSError, EOFError) as exc:
            self._fail(errors.NodeLost(self.node, f"connection broke ({_why(exc)})"))

    def _route(self, head: dict, payload) -> None:
        request_id = head.get("id")
        if not request_id:
            return  # a heartbeat pong
        with self._lock:
            pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.resolve(head, payload, None)

    def _fail(self, error: errors.ClusterError) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = error
            pending, self._pending = self._pending, {}
        for p in pending.values():
            p.resolve(None, b"", error)
        self._close_stream()
        if self.on_close is not None:
            self.on_close()

    # -- closing --------------------------------------------------------------------------

    def _close_stream(self) -> None:
        try:  # shutdown wakes a reader blocked in recv; close alone would not
            self.stream.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def close(self) -> None:
        """Close the connection; requests still waiting fail as cancelled."""
        if self.closed:
            return
        self.closed = True
        self._fail(errors.Cancelled("connection closed by the controller"))
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)


def decode_result(node: str, head: dict | None, payload, error: errors.ClusterError | None):
    """A call's reply as its value, or raise the error it carries."""
    if error is not None:
        raise error
    if head.get("ok"):
        try:
            return pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001
            raise errors.SerializationError(
                f"{node}: the result could not be unpickled here: {type(exc).__name__}: {exc}",
                hint="return plain data, or make the result's module importable on the controller")
    raise remote_error(head.get("error") or {}, payload, node)


def remote_error(info: dict, payload=b"", node: str = "?") -> errors.ClusterError:
    """The error a node described, as a typed exception."""
    node = info.get("node", node)
    kind = info.get("kind")
    if kind == "cancelled":
        return errors.Cancelled(f"{node}: {info.get('message', 'cancelled')}")
    cls = errors.WorkerCrashed if kind == "crashed" else errors.RemoteError
    original = None
    if payload:
        try:
            original = pickle.loads(payload)
        except Exception:  # noqa: BLE001 - the type may not exist here; the text still does
            original = None
    error = cls(node, info.get("type", "Error"), info.get("message", ""),
                info.get("traceback", ""), exception=original)
    if kind == "import":
        error.hint = "the module must be importable on the node and define that function"
        error.remote_traceback = ""
    return error


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, EOFError):
        return "connection closed"
    return str(exc) or type(exc).__name__
