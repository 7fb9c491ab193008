"""The controller's end of one node connection: handshake, requests, heartbeats.

See docs/how-it-works.md, sections "A task's round trip" (who reads the stream,
callbacks) and "Heartbeats and loss".
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from clusterctl import errors
from clusterctl.config.cookie import restricted_key
from clusterctl.node import wire
from clusterctl.session import handshake
from clusterctl.session.outcomes import stream_failure
from clusterctl.session.routing import Callback, Pending, ReplyRouter
from clusterctl.session.sending import Sender


class NodeConnection:
    """A handshaken, authenticated connection to one node: what its users call.

    The parts do the work: ``handshake`` before the start, a ``Sender`` for every write,
    a ``ReplyRouter`` for the reading, the replies, the heartbeat and the loss."""

    def __init__(self, node: str, stream, *, cookie: bytes, heartbeat_interval: float = 2.0,
                 heartbeat_timeout: float = 10.0, max_payload: int = wire.DEFAULT_MAX_PAYLOAD,
                 on_close: Callable[[], None] | None = None, watch: bool = False) -> None:
        self.node = node
        self.stream = stream
        self.cookie = cookie
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_payload = max_payload
        self.watch = watch  # the hub's watch of the node: pings only (``authenticate``)
        self.hello: dict = {}
        self._sender = Sender(stream, heartbeat_interval)
        self._router = ReplyRouter(node, stream, self._sender, heartbeat_interval=heartbeat_interval,
                                   heartbeat_timeout=heartbeat_timeout, max_payload=max_payload,
                                   on_close=on_close)
        self._keeper: threading.Thread | None = None
        self.closed = False
        self.rtt: float | None = None
        self.clock_offset: float | None = None

    @property
    def restricted(self) -> bool:
        """Whether the node is a restricted host's (its hello says how many ``allow``
        rules it has): calls go by name with plain data, nothing is unpickled from it."""
        return self.hello.get("restricted") is not None

    @property
    def lost(self) -> errors.ClusterError | None:
        """Why the connection ended (lost, or closed); None while it works."""
        return self._router.lost

    # -- handshake ------------------------------------------------------------------------

    def read_hello(self, timeout: float) -> dict:
        """The node's opening message, checked (``handshake.read_hello``)."""
        self.hello = handshake.read_hello(self.stream, self.node, timeout)
        return self.hello

    def authenticate(self, timeout: float) -> None:
        """Prove we hold the cookie and check that the node does too (a restricted node:
        the key derived for it, which is all its host was given)."""
        key = restricted_key(self.cookie, self.node) if self.restricted else self.cookie
        handshake.authenticate(self.stream, self.node, self.hello, cookie=key,
                               heartbeat_timeout=self.heartbeat_timeout, timeout=timeout,
                               watch=self.watch)

    def start(self) -> None:
        """Begin routing replies and keeping the heartbeat."""
        self._router.start()
        self._keeper = threading.Thread(target=self._router.keep, name=f"clusterctl-{self.node}",
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
        pending = Pending(self._router, callback)
        error = self._router.register(head, pending)
        if error is not None:
            pending.resolve(None, b"", error)
            return pending
        if flush:
            self.send(head, payload)
        elif self._sender.hold(*wire.encode_parts(head, payload)):
            self.flush()
        return pending

    def send(self, head: dict, payload: bytes = b"") -> None:
        """Send one message now (after whatever waits in the outbox)."""
        prefix, payload = wire.encode_parts(head, payload)
        self._write(prefix, payload)

    def send_raw(self, frame: bytes) -> None:
        """Send a whole frame as it is (the hub forwarding one node's frame to another)."""
        self._write(frame, b"")

    def listen(self, on_message: Callable) -> None:
        """Take the node's own messages (those that answer no request): see
        ``ReplyRouter.listen``."""
        self._router.listen(on_message)

    def notices(self, on_message: Callable) -> None:
        """Hand the node's own messages (those that answer no request) to
        ``on_message(head, payload, raw)`` in whichever thread reads: a node asking for a
        module while a task of ours runs is read by the thread that waits for the task.
        Unlike ``listen``, no thread reads for it alone; a listener keeps its place."""
        if self._router.on_message is None:
            self._router.on_message = on_message

    def flush(self) -> None:
        """Send what waits in the outbox."""
        if self._sender.holding():
            self._write(b"", b"")

    def _write(self, prefix: bytes, payload: bytes) -> None:
        try:
            self._sender.write(prefix, payload)
        except (OSError, EOFError, socket.timeout) as exc:
            self._router.fail(errors.NodeLost(
                self.node, f"connection broke while sending ({stream_failure(exc)})"))

    def cancel(self, request_id: int) -> None:
        """Ask the node to cancel a request; its reply still arrives (as cancelled)."""
        if self._router.lost is None:
            self.send({"op": "cancel", "id": request_id})

    def forget(self, request_id: int) -> None:
        self._router.forget(request_id)

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

    # -- reading for callbacks in the owner's thread --------------------------------------

    def adopt(self) -> None:
        """The caller will read replies for its callbacks itself, with ``pump`` when the
        stream (``fileno``) is readable, so they need no hand-off from the connection's
        thread. That thread still keeps the heartbeat, and takes in what the owner leaves
        unread for a heartbeat interval. Undo with ``unadopt``."""
        self._router.adopt()

    def unadopt(self) -> None:
        self._router.unadopt()

    def fileno(self) -> int | None:
        """The descriptor to poll for input, or None if the stream has none (or is closed)."""
        return self._router.fileno()

    def pump(self) -> bool:
        """Read and route whatever has arrived, without waiting, unless another thread
        holds the reading role. True if anything was read."""
        return self._router.pump()

    # -- closing --------------------------------------------------------------------------

    def close_unstarted(self) -> None:
        """Close the stream of a connection that was never started (its handshake failed,
        or the node it reached will not be used)."""
        self._router.close_unstarted()

    def close(self) -> None:
        """Close the connection; requests still waiting fail as cancelled."""
        if self.closed:
            return
        self.closed = True
        self._router.fail(errors.Cancelled("connection closed by the controller"))
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)
