"""What reaches the map's thread, and the one place it waits.

The map's thread reads the nodes' connections itself (``NodeConnection.pump``), so a
reply costs no hand-off between threads; what other threads post (a node joining, a
connection failing, replies a connection's own thread took in) arrives on a queue and
wakes the poll through a pipe.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from typing import Callable

from clusterctl.api.pmap.nodes import MapNode
from clusterctl.api.pmap.tuning import PUMP_SECONDS


class Inbox:
    def __init__(self) -> None:
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: int | None = None  # the thread running the map
        self._poller = select.poll()
        self._polled: dict[int, list[MapNode]] = {}  # fd -> nodes whose connection this thread reads
        self._wake_r = self._wake_w = -1
        self._wake_lock = threading.Lock()
        self._pumped = 0.0  # when this thread last read the nodes' connections

    def open(self) -> None:
        """The calling thread is the map's from now on."""
        self._thread = threading.get_ident()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, select.POLLIN)

    def post(self, event) -> None:
        """Put an event for the map's thread, waking its poll if posted from another."""
        self._events.put(event)
        if threading.get_ident() != self._thread:
            with self._wake_lock:  # (never a write to a descriptor closed and reused)
                if self._wake_w >= 0:
                    try:
                        os.write(self._wake_w, b"!")
                    except OSError:  # full: it is woken already
                        pass

    def take(self):
        """The next event posted, or None."""
        try:
            return self._events.get_nowait()
        except queue.Empty:
            return None

    def drain(self, timeout: float | None, handle: Callable) -> None:
        """Hand every event to ``handle``; wait up to ``timeout`` for the first (None: no wait)."""
        events = self._events  # this thread is its only reader: not empty stays not empty
        if events.empty():
            if timeout is None and time.monotonic() - self._pumped < PUMP_SECONDS:
                return  # looked a moment ago: hand out more results first
            self._pump(timeout)
            if events.empty():
                return
        event = events.get_nowait()
        while True:
            handle(event)
            if events.empty():
                return
            event = events.get_nowait()

    def _pump(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` (None: not at all) for input from a node or a wake-up,
        and read what came."""
        try:
            ready = self._poller.poll(0 if timeout is None else timeout * 1000.0)
        except InterruptedError:
            return
        self._pumped = time.monotonic()
        for fd, _ in ready:
            if fd == self._wake_r:
                try:
                    os.read(fd, 4096)
                except OSError:
                    pass
                continue
            watchers = self._polled.get(fd)
            if not watchers:
                continue
            conn = watchers[0].conn
            if conn.lost is not None or conn.fileno() != fd:
                for node in list(watchers):  # its fd is closed, or about to be reused
                    self.unwatch(node)
                continue
            conn.pump()

    def watch(self, node: MapNode) -> None:
        """Read ``node``'s connection in the map's thread, if it has a descriptor to poll.
        Several nodes may share one connection (a pipeline's stages on one host): it is
        read here until the last of them is unwatched."""
        fd = node.conn.fileno()
        if fd is None:
            return  # its connection's thread reads for it
        node.fd = fd
        watchers = self._polled.get(fd)
        if watchers is None:
            node.conn.adopt()
            self._polled[fd] = watchers = []
            self._poller.register(fd, select.POLLIN)
        watchers.append(node)

    def unwatch(self, node: MapNode) -> None:
        """Give ``node``'s connection back to its own thread (once no node watches it)."""
        fd = node.fd
        if fd is None:
            return
        node.fd = None
        watchers = self._polled.get(fd)
        if watchers is None or not any(w is node for w in watchers):
            return
        watchers[:] = [w for w in watchers if w is not node]
        if watchers:
            return
        del self._polled[fd]
        try:
            self._poller.unregister(fd)
        except (KeyError, ValueError):
            pass
        node.conn.unadopt()

    def close(self) -> None:
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
