"""Replies to their requests: who reads the stream, where each reply goes, and the loss
that fails every request at once.

See docs/how-it-works.md, sections "A task's round trip" (who reads the stream,
callbacks) and "Heartbeats and loss".
"""

from __future__ import annotations

import itertools
import socket
import sys
import threading
import time
from typing import Any, Callable

from clusterctl import errors
from clusterctl.session.heartbeat import Heartbeat
from clusterctl.session.outcomes import stream_failure
from clusterctl.session.receiving import Receiver

Callback = Callable[[dict | None, Any, "errors.ClusterError | None"], None]


class Pending:
    """One request in flight; resolved by whichever thread reads its reply."""

    __slots__ = ("router", "done", "head", "payload", "error", "callback")

    def __init__(self, router: "ReplyRouter | None" = None,
                 callback: Callback | None = None) -> None:
        self.router = router
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
        if self.router is None:
            return False
        return self.router.wait(self, timeout)


def _run_callback(callback: Callable, *arguments) -> None:
    """Call a reply (or message) callback in the reading thread; if it raises, the
    failure is told on stderr and the reading goes on: a callback's bug must not end the
    connection, nor leave its other requests unanswered."""
    try:
        callback(*arguments)
    except Exception as exc:  # noqa: BLE001 - see above
        _report_callback_failure(callback, exc)


def _report_callback_failure(callback: Callable, exc: Exception) -> None:
    """Write a callback's exception and traceback to stderr, as Python reports an
    exception nobody can catch ("Exception ignored in ...").

    Not through ``sys.unraisablehook``: Python's own hook takes only the arguments
    Python itself makes (``UnraisableHookArgs``, which code cannot build) and raises
    ``TypeError`` for anything else, which would end the reading thread."""
    try:
        import traceback  # (only when a callback raised: not on every command's way)

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write("Exception ignored in clusterctl callback %s:\n%s" % (_describe(callback), text))
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - no stderr (closed, None): nowhere left to tell it
        pass


def _describe(callback: Callable) -> str:
    """The callback for a reader: its repr, or its type if even that raises."""
    try:
        return repr(callback)
    except Exception:  # noqa: BLE001 - a user's __repr__ may be as broken as the callback
        return "of type %s" % type(callback).__qualname__


class ReplyRouter:
    """The reading side of one connection and the state its threads share.

    A thread waiting for its own reply reads the stream itself while nobody else does
    (the reading role), routing every reply it comes across; replies owed to callbacks
    are read by the connection's own thread (``keep``) unless an owner adopts the
    connection and reads them itself (``pump``). The same thread ticks the heartbeat.
    ``fail`` ends it all: every request waiting fails with the loss, and the stream is
    shut."""

    def __init__(self, node: str, stream, sender, *, heartbeat_interval: float,
                 heartbeat_timeout: float, max_payload: int,
                 on_close: Callable[[], None] | None = None) -> None:
        self.node = node
        self.stream = stream
        self.on_close = on_close
        self.interval = heartbeat_interval
        self._sender = sender
        self._receiver = Receiver(node, stream, max_payload, self._route, self.fail)
        self._heartbeat = Heartbeat(node, heartbeat_interval, heartbeat_timeout, sender,
                                    self._receiver)
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        # guards _pending, the reading role, the counters and the lost/closed state; the
        # condition (over the same lock) is where threads wait for a reply or the role
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._reading = False  # a thread holds the reading role
        self._followers = 0  # threads waiting for their reply while another one reads
        self._callbacks = 0  # requests in flight whose reply goes to a callback
        self._adopted = 0  # owners (a pmap) that read for callbacks themselves, see ``pump``
        self._stream_closed = False
        self.lost: errors.ClusterError | None = None
        self.on_message: Callable | None = None  # (head, payload, raw): what is no reply

    def start(self) -> None:
        """Reading and heartbeat from now on (the handshake is done)."""
        self._receiver.start()
        self._receiver.last_read = self._sender.last_write = time.monotonic()

    # -- requests -------------------------------------------------------------------------

    def register(self, head: dict, pending: Pending) -> errors.ClusterError | None:
        """Number the request (``head["id"]``) and note that ``pending`` waits for its
        reply; or, if the connection is lost already, the loss."""
        with self._lock:
            error = self.lost
            if error is None:
                head["id"] = request_id = next(self._ids)
                self._pending[request_id] = pending
                if pending.callback is not None:
                    self._callbacks += 1
                    if not self._reading and not self._adopted:
                        self._cond.notify_all()  # the connection's thread reads for callbacks
        return error

    def forget(self, request_id: int) -> None:
        with self._lock:
            pending = self._pending.pop(request_id, None)
            if pending is not None and pending.callback is not None:
                self._callbacks -= 1

    def listen(self, on_message: Callable) -> None:
        """Hand every message that is no reply (and no pong) to ``on_message(head, payload,
        raw)``, in the reading thread; the connection's own thread reads all the time
        from now on (it counts as a callback that never ends)."""
        with self._lock:
            self.on_message = on_message
            self._callbacks += 1
            self._cond.notify_all()

    def _route(self, messages) -> None:
        lock = self._lock
        for head, payload, raw in messages:
            request_id = head.get("id")
            if type(request_id) is not int or not request_id:
                if self.on_message is not None and head["op"] != "pong":
                    _run_callback(self.on_message, head, payload, raw)
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

    # -- reading for callbacks in the owner's thread --------------------------------------

    def adopt(self) -> None:
        with self._lock:
            self._adopted += 1

    def unadopt(self) -> None:
        with self._lock:
            self._adopted -= 1
            self._cond.notify_all()

    def fileno(self) -> int | None:
        """The descriptor to poll for input, or None if the stream has none (or is closed)."""
        if not self._receiver.polled() or self._stream_closed:
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
        receiver = self._receiver
        try:
            while self.lost is None and receiver.receive(0):
                got = True
                if not receiver.more:  # (saves asking again for what is not there yet)
                    break
        finally:
            self._release()
        return got

    # -- waiting for a reply ---------------------------------------------------------------

    def wait(self, pending: Pending, timeout: float | None) -> bool:
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
        interval = self.interval
        receive = self._receiver.receive
        while self.lost is None and not pending.done:
            wait = interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            if not receive(wait):
                self._check_heartbeat(time.monotonic())

    # -- the connection's own thread ------------------------------------------------------

    def keep(self) -> None:
        """The connection's own thread: read for callbacks when nobody else reads; keep
        the heartbeat both ways."""
        interval = self.interval
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
            if serve:
                next_tick = self._serve_callbacks(next_tick)
                continue
            next_tick = now + interval
            self._tick(now)

    def _serve_callbacks(self, next_tick: float) -> float:
        """Holding the reading role: read until no reply is owed to a callback, ticking
        the heartbeat on the way; the time of the next tick."""
        receiver = self._receiver
        try:
            while self.lost is None and self._callbacks and not self._adopted:
                receiver.receive(max(0.0, next_tick - time.monotonic()))
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + self.interval
                    self._ping_if_quiet(now)
                    self._check_heartbeat(now)
        finally:
            self._release()
        return next_tick

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
                while self.lost is None and self._receiver.receive(0):
                    pass
            finally:
                self._release()
        self._check_heartbeat(time.monotonic())

    def _ping_if_quiet(self, now: float) -> None:
        if self.lost is not None:
            return
        try:
            self._heartbeat.ping_if_quiet(now)
        except (OSError, EOFError, socket.timeout) as exc:
            self.fail(errors.NodeLost(self.node, f"connection broke while sending ({stream_failure(exc)})"))

    def _check_heartbeat(self, now: float) -> None:
        if self.lost is None:
            loss = self._heartbeat.loss(now)
            if loss is not None:
                self.fail(loss)

    # -- failing and closing --------------------------------------------------------------

    def fail(self, error: errors.ClusterError) -> None:
        """The connection is lost (or closed): every request waiting fails with ``error``."""
        with self._lock:
            if self.lost is not None:
                return
            self.lost = error
            self._sender.given_up = True
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

    def close_unstarted(self) -> None:
        """Shut and close the stream, which no thread reads."""
        self._shutdown_stream()
        with self._lock:
            self._close_stream_locked()

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
