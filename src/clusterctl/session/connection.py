"""The controller's end of one node connection: handshake, requests, heartbeats.

See docs/how-it-works.md, sections "A task's round trip" (who reads the stream,
callbacks) and "Heartbeats and loss".
"""

from __future__ import annotations

import itertools
import pickle
import select
import socket
import sys
import threading
import time
from typing import Any, Callable

from clusterctl import errors
from clusterctl.node import ops, wire

Callback = Callable[[dict | None, Any, "errors.ClusterError | None"], None]

RECV_SIZE = 1 << 16
RECV_SIZE_MAX = 1 << 22  # one read while a large frame comes in
OUTBOX_BYTES = 1 << 20  # requests held back for one write (``request(flush=False)``)
LARGE_WRITE = 1 << 16  # writes this large are sent watching their progress (``_send_large``)
LARGE_PIECE = 1 << 20  # at most this much handed to a non-socket stream at once


class Pending:
    """One request in flight; resolved by whichever thread reads its reply."""

    __slots__ = ("conn", "done", "head", "payload", "error", "callback")

    def __init__(self, conn: "NodeConnection | None" = None,
                 callback: Callback | None = None) -> None:
        self.conn = conn
        self.done = False
        self.head: dict | None = None
        self.payload: Any = b""
        self.error: errors.ClusterError | None = None
        self.callback = callback

    def resolve(self, head: dict | None, payload: Any, error: errors.ClusterError | None) -> None:
        self.head, self.payload, self.error = head, payload, error
        self.done = True
        if self.callback is not None:
            _run_callback(self.callback, head, payload, error)

    def wait(self, timeout: float | None) -> bool:
        """Wait until the reply (or the failure) is here; False after ``timeout`` seconds."""
        if self.done:
            return True
        if self.conn is None:
            return False
        return self.conn._wait(self, timeout)


def _run_callback(callback: Callback, head, payload, error) -> None:
    try:
        callback(head, payload, error)
    except Exception as exc:  # noqa: BLE001 - a callback's bug must not break the connection
        sys.unraisablehook(_Unraisable(exc, callback))


class _Unraisable:
    """What ``sys.unraisablehook`` expects to be told about a failed callback."""

    def __init__(self, exc: BaseException, callback: Callback) -> None:
        self.exc_type, self.exc_value, self.exc_traceback = type(exc), exc, exc.__traceback__
        self.err_msg = "Exception in a clusterctl reply callback"
        self.object = callback


class NodeConnection:
    """A handshaken, authenticated connection to one node."""

    _tx_progress = 0.0  # when a large send last got bytes out (``_send_large``)

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
        # guards _pending, the reading role, the counters and the lost/closed state; the
        # condition (over the same lock) is where threads wait for a reply or the role
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._reading = False  # a thread holds the reading role
        self._followers = 0  # threads waiting for their reply while another one reads
        self._callbacks = 0  # requests in flight whose reply goes to a callback
        self._adopted = 0  # owners (a pmap) that read for callbacks themselves, see ``pump``
        self._outbox: list[bytes] = []  # requests encoded but not sent yet (``flush=False``)
        self._outbox_bytes = 0
        self._more = False  # the last read filled its buffer: more may be waiting
        self._stream_closed = False
        self._decoder = wire.FrameDecoder(max_payload)
        self._poller = None
        self._keeper: threading.Thread | None = None
        self.closed = False
        self.lost: errors.ClusterError | None = None
        self.last_rx = self._last_tx = time.monotonic()
        self.rtt: float | None = None
        self.clock_offset: float | None = None

    # -- handshake ------------------------------------------------------------------------

    def read_hello(self, timeout: float) -> dict:
        """The node's opening message; nothing is sent before it is read. Its fields are
        checked (``ops.CONTROLLER_TAKES``) before anything uses them."""
        self.stream.settimeout(timeout)
        try:
            head, _ = wire.read_message(self.stream, max_payload=0)
        except (EOFError, OSError, socket.timeout) as exc:
            raise errors.HandshakeError(self.node, f"no greeting from the node ({_why(exc)})")
        except wire.FrameError as exc:
            raise errors.ProtocolError(self.node, f"the peer does not speak clusterctl's protocol ({exc})")
        op = head["op"]
        if op == "refused":
            raise errors.HandshakeError(self.node, f"the node refused us: {self._reason(head)}")
        if op != "hello":
            raise errors.ProtocolError(self.node, f"expected a greeting, got {op[:64]!r}")
        problem = ops.check(head, ops.CONTROLLER_TAKES)
        if problem is not None:
            raise errors.ProtocolError(self.node, f"a malformed greeting: {problem}")
        self.hello = head
        return head

    def _reason(self, head: dict) -> str:
        reason = head.get("reason")
        return reason if ops.TEXT.test(reason) and reason else "refused"

    def authenticate(self, timeout: float) -> None:
        """Prove we hold the cookie and check that the node does too."""
        nonce = wire.new_nonce()
        node_nonce = self.hello.get("nonce", "")  # (checked by ``read_hello``)
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
            raise errors.ProtocolError(self.node, f"a malformed answer to our proof: {exc}")
        if head["op"] == "refused":
            reason = self._reason(head)
            hint = None
            if "cookie" in reason:
                hint = ("another cluster on this account runs a node with this name: give this "
                        "host another name= in the hosts file, or share the cookie file")
            raise errors.HandshakeError(self.node, f"the node refused us: {reason}", hint=hint)
        if head.get("op") != "welcome" or not wire.macs_equal(
                head.get("mac"), wire.node_mac(self.cookie, node_nonce, nonce)):
            raise errors.HandshakeError(self.node, "the node could not prove it holds our cookie")

    def start(self) -> None:
        """Begin routing replies and keeping the heartbeat."""
        self._poller = _poller_for(self.stream)
        if self._poller is not None:
            self.stream.settimeout(None)
        self.last_rx = self._last_tx = time.monotonic()
        self._keeper = threading.Thread(target=self._keep, name=f"clusterctl-{self.node}",
                                        daemon=True)
        self._keeper.start()

    # -- requests -------------------------------------------------------------------------

    def request(self, head: dict, payload: bytes = b"", callback: Callback | None = None, *,
                flush: bool = True) -> Pending:
        """Send a request; its reply resolves the returned Pending.

        With ``flush=False`` the request waits in the outbox until ``flush`` (or the next
        plain send), so a burst of requests costs the node one wake-up, not one each.
        A payload over the frame limit raises ``SerializationError`` here, before anything
        is sent: the node would only close the connection on seeing its header.
        """
        if len(payload) > self.max_payload:
            raise errors.SerializationError(
                f"{self.node}: the pickled request is {len(payload)} bytes, over the frame limit "
                f"of {self.max_payload} bytes",
                hint="send large data in pieces, or let the node read it from shared storage")
        pending = Pending(self, callback)
        with self._lock:
            error = self.lost
            if error is None:
                head["id"] = request_id = next(self._ids)
                self._pending[request_id] = pending
                if callback is not None:
                    self._callbacks += 1
                    if not self._reading and not self._adopted:
                        self._cond.notify_all()  # the connection's thread reads for callbacks
        if error is not None:
            pending.resolve(None, b"", error)
            return pending
        if flush:
            self.send(head, payload)
        else:
            prefix, payload = wire.encode_parts(head, payload)
            with self._send_lock:
                self._outbox.append(prefix + payload if len(payload) < 65536 else prefix)
                if len(payload) >= 65536:
                    self._outbox.append(payload)
                self._outbox_bytes += len(prefix) + len(payload)
                full = self._outbox_bytes >= OUTBOX_BYTES
            if full:
                self.flush()
        return pending

    def send(self, head: dict, payload: bytes = b"") -> None:
        """Send one message now (after whatever waits in the outbox)."""
        prefix, payload = wire.encode_parts(head, payload)
        self._write(prefix, payload)

    def flush(self) -> None:
        """Send what waits in the outbox."""
        if self._outbox:
            self._write(b"", b"")

    def _write(self, prefix: bytes, payload: bytes) -> None:
        try:
            with self._send_lock:
                self._write_locked(prefix, payload)
        except (OSError, EOFError, socket.timeout) as exc:
            self._fail(errors.NodeLost(self.node, f"connection broke while sending ({_why(exc)})"))

    def _write_locked(self, prefix: bytes, payload: bytes) -> None:
        """Holding the send lock: the outbox, then this message."""
        parts = self._outbox
        if parts:
            self._outbox, self._outbox_bytes = [], 0
            parts.append(prefix)
            if payload:
                parts.append(payload)
            self._write_parts(parts)
        elif len(payload) < LARGE_WRITE:
            self.stream.sendall(prefix + payload)
        else:  # a large payload: two writes beat copying it
            self.stream.sendall(prefix)
            self._send_large(payload)
        self._last_tx = time.monotonic()

    def _write_parts(self, parts: list[bytes]) -> None:
        """Small parts go out joined in one write, large ones as they are."""
        batch: list[bytes] = []
        for part in parts:
            if len(part) < LARGE_WRITE:
                batch.append(part)
                continue
            if batch:
                self._send_any(b"".join(batch))
                batch = []
            self._send_large(part)
        if batch:
            self._send_any(b"".join(batch))

    def _send_any(self, data: bytes) -> None:
        if len(data) < LARGE_WRITE:
            self.stream.sendall(data)
        else:
            self._send_large(data)

    def _send_large(self, data) -> None:
        """Send all of ``data``, noting each time the stream takes some of it.

        A large send over a slow link can take longer than the heartbeat timeout, and
        the node answers nothing until it has the whole request: the bytes it takes are
        then the only sign of life (see ``_check_heartbeat``). A socket is written with
        ``MSG_DONTWAIT`` and waited on with ``poll``, so each piece it accepts is seen;
        other streams (an SSH channel) take a piece per ``send`` as their window allows.
        """
        stream = self.stream
        view = memoryview(data)
        clock = time.monotonic
        if isinstance(stream, socket.socket):
            send = stream.send
            writable = None
            while view:
                try:
                    sent = send(view, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    if self.lost is not None:  # (failing shuts the stream down, which wakes poll)
                        raise EOFError("the connection was given up")
                    if writable is None:
                        fd = stream.fileno()
                        if fd < 0:
                            raise EOFError("the connection was closed")
                        writable = select.poll()
                        writable.register(fd, select.POLLOUT)
                    writable.poll(self.heartbeat_interval * 1000.0)
                    continue
                view = view[sent:]
                self._tx_progress = clock()
        else:
            send = stream.send
            while view:
                sent = send(view[:LARGE_PIECE])
                if not sent:
                    raise EOFError("the channel was closed")
                view = view[sent:]
                self._tx_progress = clock()

    def cancel(self, request_id: int) -> None:
        """Ask the node to cancel a request; its reply still arrives (as cancelled)."""
        if self.lost is None:
            self.send({"op": "cancel", "id": request_id})

    # -- reading for callbacks in the owner's thread --------------------------------------

    def adopt(self) -> None:
        """The caller will read replies for its callbacks itself, with ``pump`` when the
        stream (``fileno``) is readable, so they need no hand-off from the connection's
        thread. That thread still keeps the heartbeat, and takes in what the owner leaves
        unread for a heartbeat interval. Undo with ``unadopt``."""
        with self._lock:
            self._adopted += 1

    def unadopt(self) -> None:
        with self._lock:
            self._adopted -= 1
            self._cond.notify_all()

    def fileno(self) -> int | None:
        """The descriptor to poll for input, or None if the stream has none (or is closed)."""
        if self._poller is None or self._stream_closed:
            return None
        try:
            return self.stream.fileno()
        except Exception:  # noqa: BLE001
            return None

    def pump(self) -> bool:
        """Read and route whatever has arrived, without waiting, unless another thread
        holds the reading role. True if anything was read."""
        with self._lock:
            if self._reading or self.lost is not None:
                return False
            self._reading = True
        got = False
        try:
            while self.lost is None and self._receive(0):
                got = True
                if not self._more:  # (saves asking again for what is not there yet)
                    break
        finally:
            self._release()
        return got

    def forget(self, request_id: int) -> None:
        with self._lock:
            pending = self._pending.pop(request_id, None)
            if pending is not None and pending.callback is not None:
                self._callbacks -= 1

    def ping(self, timeout: float) -> dict:
        """A round trip; records the round-trip time and the node's clock offset."""
        sent = time.time()
        t0 = time.perf_counter()
        head = {"op": "ping", "t": sent}
        pending = self.request(head)
        if not pending.wait(timeout):
            self.forget(head.get("id", 0))
            raise errors.CallTimeout(self.node, f"no answer to a ping within {timeout:g} s")
        if pending.error is not None:
            raise pending.error
        self.rtt = time.perf_counter() - t0
        received = time.time()
        self.clock_offset = pending.head.get("time", received) - (sent + received) / 2
        return pending.head

    # -- reading --------------------------------------------------------------------------

    def _wait(self, pending: Pending, timeout: float | None) -> bool:
        """Wait for ``pending``: read the stream while nobody else does, else sleep."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._cond
        while True:
            with self._lock:
                while not pending.done:
                    if not self._reading:
                        self._reading = True
                        break
                    remaining = None
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                    self._followers += 1
                    try:
                        cond.wait(remaining)
                    finally:
                        self._followers -= 1
                else:
                    return True
            try:
                self._read_until(pending, deadline)
            finally:
                self._release()
            if pending.done:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _release(self) -> None:
        """Give up the reading role; wake whoever needs it."""
        with self._lock:
            self._reading = False
            if self.lost is not None:
                self._close_stream_locked()
            if self._followers or (self._callbacks and not self._adopted) or self.lost is not None:
                self._cond.notify_all()

    def _read_until(self, pending: Pending, deadline: float | None) -> None:
        """Holding the reading role: read and route until ``pending`` is resolved, the
        deadline passes or the connection is lost."""
        interval = self.heartbeat_interval
        while self.lost is None and not pending.done:
            wait = interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            if not self._receive(wait):
                self._check_heartbeat(time.monotonic())

    def _receive(self, wait: float | None) -> bool:
        """One read of whatever has arrived (waiting up to ``wait`` seconds), routed.
        False if nothing came; a broken connection is failed here."""
        chunk = None
        try:
            poller = self._poller
            if poller is not None:
                if not poller.poll(None if wait is None else wait * 1000.0):
                    return False
            else:
                self.stream.settimeout(wait)
            decoder = self._decoder
            size = RECV_SIZE if decoder.idle() else max(RECV_SIZE, min(decoder.wanted(), RECV_SIZE_MAX))
            try:
                chunk = self.stream.recv(size)
            except (socket.timeout, BlockingIOError):
                return False
            if not chunk:
                raise errors.NodeLost(self.node, "the node closed the connection")
            self._more = len(chunk) == size  # the read may have left more behind
            self.last_rx = time.monotonic()
            self._route(decoder.feed(chunk))
            return True
        except errors.ClusterError as exc:
            self._fail(exc)
        except wire.FrameError as exc:
            self._fail(errors.ProtocolError(self.node, f"garbage from the node: {exc}"))
        except (OSError, EOFError, ValueError) as exc:  # ValueError: the stream was closed
            self._fail(errors.NodeLost(self.node, f"connection broke ({_why(exc)})"))
        except BaseException:
            if chunk is not None:  # interrupted between reading and routing: bytes are lost
                self._fail(errors.Cancelled("interrupted while reading from the node"))
            raise
        return True

    def _route(self, messages) -> None:
        lock = self._lock
        for head, payload, _raw in messages:
            request_id = head.get("id")
            if type(request_id) is not int or not request_id:
                continue  # a heartbeat pong (or an id no request of ours has)
            with lock:
                pending = self._pending.pop(request_id, None)
                if pending is None:
                    continue  # forgotten, or failed already
                if pending.callback is None:
                    pending.head, pending.payload = head, payload
                    pending.done = True
                    if self._followers:
                        self._cond.notify_all()
                    continue
                self._callbacks -= 1
            pending.resolve(head, payload, None)

    def _check_heartbeat(self, now: float) -> None:
        """Lost when nothing arrived and no large send made progress for the timeout.

        Only large sends count: a small one (a ping) lands in the socket's buffer
        whether or not the node reads, but a large one stops making progress once the
        buffers along the way are full, so its progress shows that the node reads.
        """
        silent = now - max(self.last_rx, self._tx_progress)
        if silent > self.heartbeat_timeout and self.lost is None:
            stalled = ", and it took none of what we are sending" if self._send_lock.locked() else ""
            self._fail(errors.NodeLost(self.node, "no heartbeat for %.1f s%s: the host may be "
                                       "down or the network cut" % (silent, stalled)))

    # -- the connection's own thread ------------------------------------------------------

    def _keep(self) -> None:
        """Read for callbacks when nobody else reads; keep the heartbeat both ways."""
        interval = self.heartbeat_interval
        cond = self._cond
        next_tick = time.monotonic() + interval
        while True:
            with self._lock:
                while True:
                    if self.lost is not None:
                        return
                    if self._callbacks and not self._reading and not self._adopted:
                        self._reading = True
                        serve = True
                        break
                    now = time.monotonic()
                    if now >= next_tick:
                        serve = False
                        break
                    cond.wait(next_tick - now)
            if serve:  # read until no reply is owed to a callback, ticking on the way
                try:
                    while self.lost is None and self._callbacks and not self._adopted:
                        self._receive(max(0.0, next_tick - time.monotonic()))
                        now = time.monotonic()
                        if now >= next_tick:
                            next_tick = now + interval
                            self._ping_if_quiet(now)
                            self._check_heartbeat(now)
                finally:
                    self._release()
                continue
            next_tick = now + interval
            self._tick(now)

    def _tick(self, now: float) -> None:
        """Every heartbeat interval: a ping if we sent nothing lately; take in what came
        while nobody was reading; check that the node is still heard from."""
        self._ping_if_quiet(now)
        with self._lock:
            take = not self._reading and self.lost is None
            if take:
                self._reading = True
        if take:
            try:
                while self.lost is None and self._receive(0):
                    pass
            finally:
                self._release()
        self._check_heartbeat(time.monotonic())

    def _ping_if_quiet(self, now: float) -> None:
        """The node hears from us at least every interval, or it cancels our work.

        Never waits for the send lock: a send in progress feeds the node's heartbeat
        anyway, and the connection's thread must stay free to check ours."""
        if now - self._last_tx < self.heartbeat_interval or self.lost is not None:
            return
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            self._write_locked(*wire.encode_parts({"op": "ping", "t": time.time(), "id": 0}, b""))
        except (OSError, EOFError, socket.timeout) as exc:
            broke = exc
        else:
            return
        finally:
            self._send_lock.release()
        self._fail(errors.NodeLost(self.node, f"connection broke while sending ({_why(broke)})"))

    # -- failing and closing --------------------------------------------------------------

    def _fail(self, error: errors.ClusterError) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = error
            pending, self._pending = self._pending, {}
            self._callbacks = 0
            for p in pending.values():
                if p.callback is None:
                    p.head, p.payload, p.error = None, b"", error
                    p.done = True
            self._shutdown_stream()
            # a socket's fd must not be closed under a reader's poll (the number could be
            # reused); the reader closes it on its way out. Other streams (an SSH channel)
            # poll a descriptor of their own that closing wakes, and are closed at once.
            if not self._reading or not isinstance(self.stream, socket.socket):
                self._close_stream_locked()
            self._cond.notify_all()
        for p in pending.values():
            if p.callback is not None:
                p.resolve(None, b"", error)
        if self.on_close is not None:
            self.on_close()

    def _shutdown_stream(self) -> None:
        try:  # shutdown wakes a reader waiting on the stream; close alone would not
            self.stream.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001
            pass

    def _close_stream_locked(self) -> None:
        """Close the stream, once."""
        if self._stream_closed:
            return
        self._stream_closed = True
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def close_unstarted(self) -> None:
        """Close the stream of a connection that was never started (its handshake failed,
        or the node it reached will not be used)."""
        self._shutdown_stream()
        with self._lock:
            self._close_stream_locked()

    def close(self) -> None:
        """Close the connection; requests still waiting fail as cancelled."""
        if self.closed:
            return
        self.closed = True
        self._fail(errors.Cancelled("connection closed by the controller"))
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)


def _poller_for(stream):
    """A poll object watching ``stream`` for input, or None if it has no usable fileno."""
    try:
        fd = stream.fileno()
    except Exception:  # noqa: BLE001 - not every stream has one
        return None
    if not isinstance(fd, int) or fd < 0:
        return None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller


def decode_result(node: str, head: dict | None, payload, error: errors.ClusterError | None):
    """A call's reply as its value, or raise the error it carries."""
    if error is not None:
        raise error
    if head.get("op") == "error":  # the node could not take the request (an unknown op)
        raise errors.ProtocolError(node, str(head.get("message") or "the node refused the request"))
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
