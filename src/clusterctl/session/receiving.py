"""Reading a node's stream: wait for input, read in sizes that fit what is coming, decode
the frames and hand them on.

See docs/how-it-works.md, section "A task's round trip".
"""

from __future__ import annotations

import select
import socket
import time
from typing import Callable

from clusterctl import errors
from clusterctl.node import wire
from clusterctl.session.outcomes import stream_failure

RECV_SIZE = 1 << 16
RECV_SIZE_MAX = 1 << 22  # one read while a large frame comes in


class Receiver:
    """Takes in what the node sends, one read at a time, for whichever thread holds the
    reading role. Frames go to ``route``; a broken stream, garbage or an interrupted read
    goes to ``fail`` as the ClusterError it means."""

    def __init__(self, node: str, stream, max_payload: int, route: Callable,
                 fail: Callable[["errors.ClusterError"], None]) -> None:
        self.node = node
        self.stream = stream
        self._route = route
        self._fail = fail
        self._decoder = wire.FrameDecoder(max_payload)
        self._poller = None
        self.more = False  # the last read filled its buffer: more may be waiting
        self.last_read = time.monotonic()  # when bytes last came in

    def start(self) -> None:
        """Wait with ``poll`` from now on, if the stream can be polled; the stream then
        stays blocking, so a large send is never cut short by a read timeout."""
        self._poller = _poller_for(self.stream)
        if self._poller is not None:
            self.stream.settimeout(None)

    def polled(self) -> bool:
        """Whether input is waited for with ``poll`` (the stream has a descriptor)."""
        return self._poller is not None

    def receive(self, wait: float | None) -> bool:
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
            self.more = len(chunk) == size  # the read may have left more behind
            self.last_read = time.monotonic()
            self._route(decoder.feed(chunk))
            return True
        except errors.ClusterError as exc:
            self._fail(exc)
        except wire.FrameError as exc:
            self._fail(errors.ProtocolError(self.node, f"garbage from the node: {exc}"))
        except (OSError, EOFError, ValueError) as exc:  # ValueError: the stream was closed
            self._fail(errors.NodeLost(self.node, f"connection broke ({stream_failure(exc)})"))
        except BaseException:
            if chunk is not None:  # interrupted between reading and routing: bytes are lost
                self._fail(errors.Cancelled("interrupted while reading from the node"))
            raise
        return True


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
