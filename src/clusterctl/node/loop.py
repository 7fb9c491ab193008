"""The node's event loop: the poller, the endpoints in it, and all writing.

See docs/how-it-works.md, "Inside a node".
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections import deque

RECV_SIZE = 1 << 16
RECV_SIZE_MAX = 1 << 22  # one read while a large frame comes in
SENDMSG_PARTS = 64

if hasattr(select, "epoll"):  # Linux
    new_poller, POLL_SECONDS = select.epoll, 1.0
    READ, WRITE, BROKEN = select.EPOLLIN, select.EPOLLOUT, select.EPOLLHUP | select.EPOLLERR
else:  # other POSIX systems: poll has the same interface, in milliseconds
    new_poller, POLL_SECONDS = select.poll, 1000.0
    READ, WRITE, BROKEN = select.POLLIN, select.POLLOUT, select.POLLHUP | select.POLLERR


class Endpoint:
    """A non-blocking descriptor in the poller, with an output queue. What it is for is
    told by its two callbacks, so the loop needs to know nothing else about it:
    ``on_readable(ep)`` when it can be read (or hung up), and ``on_broken(ep, reason)``
    when writing to it failed or its write side was closed."""

    __slots__ = ("sock", "fd", "wfd", "out", "writing", "closed", "dirty", "on_readable",
                 "on_broken")

    def __init__(self, sock, on_readable, on_broken=None, fd: int | None = None) -> None:
        self.sock = sock
        self.fd = sock.fileno() if fd is None else fd
        self.wfd = getattr(sock, "wfd", self.fd)  # a PipeStream writes to a descriptor of its own
        self.out: deque = deque()
        self.writing = False
        self.closed = False
        self.dirty = False  # has output not tried yet (written at the end of the loop's turn)
        self.on_readable = on_readable
        self.on_broken = on_broken


class PipeStream:
    """An SSH channel's own stdin and stdout, handed to the node by the boot script on the
    host (``boot.splice``), with the socket methods the node uses. The node then reads
    and writes the channel's pipes itself: no process copies the bytes in between.
    ``companion`` is the boot script's unix connection; closing it lets the script exit."""

    def __init__(self, rfd: int, wfd: int, companion: socket.socket) -> None:
        self.rfd, self.wfd, self.companion = rfd, wfd, companion

    def fileno(self) -> int:
        return self.rfd

    def recv(self, size: int) -> bytes:
        return os.read(self.rfd, size)

    def send(self, data) -> int:
        return os.write(self.wfd, data)

    def sendmsg(self, parts) -> int:
        return os.writev(self.wfd, parts)

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.companion.close()


class Loop:
    """The one place that polls and writes. Connections and workers queue output here
    (``send``) and it goes out at the end of the loop's turn, so what one turn sends to one
    endpoint costs one write; what a socket does not take waits for it to be writable.
    Reading stays with the endpoint's owner, who knows how much a frame needs."""

    def __init__(self) -> None:
        self.poller = new_poller()
        self.endpoints: dict[int, Endpoint] = {}  # fd -> endpoint (both fds of a PipeStream)
        self.dirty: list[Endpoint] = []  # endpoints with output to write this turn

    def turn(self, timeout: float) -> None:
        """Wait for events (``timeout`` in the poller's unit), handle them, then write."""
        try:
            events = self.poller.poll(timeout)
        except InterruptedError:
            events = ()
        endpoints = self.endpoints
        for fd, mask in events:
            ep = endpoints.get(fd)
            if ep is None:
                continue
            if fd != ep.fd:  # the write side of a PipeStream
                if mask & BROKEN:
                    ep.on_broken(ep, "the channel's output was closed")
                elif mask & WRITE:
                    self.flush(ep)
                continue
            if mask & WRITE:
                self.flush(ep)
            if mask & (READ | BROKEN) and not ep.closed:
                ep.on_readable(ep)
        if self.dirty:
            self.write_dirty()

    def watch(self, ep: Endpoint) -> None:
        self.endpoints[ep.fd] = ep
        self.poller.register(ep.fd, READ)

    def unwatch(self, ep: Endpoint) -> None:
        if self.endpoints.pop(ep.fd, None) is not None:
            try:
                self.poller.unregister(ep.fd)
            except (KeyError, ValueError, OSError):
                pass
        if ep.wfd != ep.fd and self.endpoints.pop(ep.wfd, None) is not None:
            try:
                self.poller.unregister(ep.wfd)
            except (KeyError, ValueError, OSError):
                pass

    def close_in_child(self) -> None:
        """In a forked worker: let go of the poller (the endpoints are their owners')."""
        self.poller.close()

    # -- output --------------------------------------------------------------------------

    def send(self, ep: Endpoint, *parts) -> None:
        """Queue output for ``ep``; it is written at the end of the loop's turn, so what
        one turn sends to one endpoint (several results, tasks) costs one write."""
        if ep.closed:
            return
        ep.out.extend(parts)
        if not ep.dirty and not ep.writing:
            ep.dirty = True
            self.dirty.append(ep)

    def write_dirty(self) -> None:
        """Write what this turn queued; what the socket does not take waits for POLLOUT."""
        while self.dirty:
            dirty, self.dirty = self.dirty, []
            for ep in dirty:  # (a failed write may queue more: the loop takes it too)
                ep.dirty = False
                if not ep.closed:
                    self.flush(ep)

    def flush(self, ep: Endpoint) -> None:
        """The socket is writable: push out what is queued."""
        out = ep.out
        while out:
            try:
                if len(out) == 1:
                    sent = ep.sock.send(out[0])
                else:
                    sent = ep.sock.sendmsg([out[i] for i in range(min(len(out), SENDMSG_PARTS))])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                ep.out.clear()
                ep.on_broken(ep, "write failed: %s" % exc)
                return
            while sent:
                first = out[0]
                if sent >= len(first):
                    sent -= len(first)
                    out.popleft()
                else:
                    out[0] = memoryview(first)[sent:]
                    sent = 0
        self.want_write(ep, bool(out))

    def want_write(self, ep: Endpoint, want: bool) -> None:
        if want != ep.writing and not ep.closed:
            ep.writing = want
            if ep.wfd == ep.fd:
                self.poller.modify(ep.fd, READ | WRITE if want else READ)
            elif want:
                self.endpoints[ep.wfd] = ep
                self.poller.register(ep.wfd, WRITE)
            else:
                self.endpoints.pop(ep.wfd, None)
                self.poller.unregister(ep.wfd)

    def flush_blocking(self, ep: Endpoint, timeout: float = 1.0) -> None:
        """Push out what is queued (a refusal, a goodbye) before closing."""
        deadline = time.monotonic() + timeout
        if ep.dirty:
            ep.dirty = False
            self.dirty.remove(ep)
        while ep.out and not ep.closed and time.monotonic() < deadline:
            self.flush(ep)
            if ep.out:
                time.sleep(0.005)
