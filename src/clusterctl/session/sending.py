"""Writing frames to a node's stream: in order from any thread, with an outbox for bursts
and large writes watched for progress.

See docs/how-it-works.md, sections "A task's round trip" and "Heartbeats and loss".
"""

from __future__ import annotations

import select
import socket
import threading
import time

OUTBOX_BYTES = 1 << 20  # requests held back for one write (``request(flush=False)``)
LARGE_WRITE = 1 << 16  # writes this large are sent watching their progress (``_send_large``)
LARGE_PIECE = 1 << 20  # at most this much handed to a non-socket stream at once


class Sender:
    """The one way out to the stream. Writes happen under ``lock``, so frames never
    interleave; the times it notes (``last_write``, ``progress``) feed the heartbeat.
    Failures (``OSError``, ``EOFError``, ``socket.timeout``) are raised to the caller, who
    knows what a broken connection means."""

    def __init__(self, stream, poll_interval: float) -> None:
        self.stream = stream
        self.poll_interval = poll_interval  # how long a blocked large write waits per look
        self.lock = threading.Lock()
        self.last_write = time.monotonic()  # when a write last finished
        self.progress = 0.0  # when a large write last got bytes out (``_send_large``)
        self.given_up = False  # the connection failed: a blocked large write stops
        self._outbox: list[bytes] = []  # frames encoded but not sent yet (``hold``)
        self._outbox_bytes = 0

    def hold(self, prefix: bytes, payload: bytes) -> bool:
        """Keep a frame in the outbox for the next write; True once the outbox is full
        (``OUTBOX_BYTES``) and should be flushed."""
        with self.lock:
            self._outbox.append(prefix + payload if len(payload) < 65536 else prefix)
            if len(payload) >= 65536:
                self._outbox.append(payload)
            self._outbox_bytes += len(prefix) + len(payload)
            return self._outbox_bytes >= OUTBOX_BYTES

    def holding(self) -> bool:
        """Whether frames wait in the outbox."""
        return bool(self._outbox)

    def write(self, prefix: bytes, payload: bytes) -> None:
        """The outbox, then this frame (``prefix`` and ``payload`` may be empty)."""
        with self.lock:
            self._write_locked(prefix, payload)

    def write_if_free(self, prefix: bytes, payload: bytes) -> None:
        """Like ``write``, unless another write is under way: then nothing is sent."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            self._write_locked(prefix, payload)
        finally:
            self.lock.release()

    def busy(self) -> bool:
        """Whether a write is under way."""
        return self.lock.locked()

    def _write_locked(self, prefix: bytes, payload: bytes) -> None:
        """Holding the lock: the outbox, then this message."""
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
        self.last_write = time.monotonic()

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
        then the only sign of life (see ``Heartbeat.loss``). A socket is written with
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
                    if self.given_up:  # (failing shuts the stream down, which wakes poll)
                        raise EOFError("the connection was given up")
                    if writable is None:
                        fd = stream.fileno()
                        if fd < 0:
                            raise EOFError("the connection was closed")
                        writable = select.poll()
                        writable.register(fd, select.POLLOUT)
                    writable.poll(self.poll_interval * 1000.0)
                    continue
                view = view[sent:]
                self.progress = clock()
        else:
            send = stream.send
            while view:
                sent = send(view[:LARGE_PIECE])
                if not sent:
                    raise EOFError("the channel was closed")
                view = view[sent:]
                self.progress = clock()
