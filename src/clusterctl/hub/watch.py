"""The hub's own connection to every node it has reached: a heartbeat that tells the hub,
within the heartbeat bound, that a node was lost, and a ping that answers a command's
``world``. A command asks once for all its nodes (one round trip, however many), and the
hub pings each on the connection it keeps: no stream, no handshake, no thread per node
and command. See docs/how-it-works.md, section "The hub".

The connection is a watch (``handshake.authenticate``): it only pings, so a node nobody
uses still exits when idle. Work never goes over it: work belongs to the command that
sent it, on a stream of the command's own.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from clusterctl import errors
from clusterctl.config.hosts import HostSpec
from clusterctl.session.connection import NodeConnection
from clusterctl.session.opening import Heartbeat, open_node
from clusterctl.transport.base import Transport

MAX_PARALLEL = 64  # nodes a world request opens or pings at once
PINGS_PER_TIMEOUT = 4  # a watch sends a heartbeat this often within the heartbeat timeout
FORGET_SECONDS = 3600.0  # a watch lost this long, not reconnected, is forgotten: its node is
# taken as gone for good (each lost watch costs a try every few seconds, for ever otherwise)


def watch_heartbeat(interval: float, timeout: float) -> Heartbeat:
    """The heartbeat of a watch, from the command's: the same timeout (a lost node is
    seen as soon), but no more pings than it needs, since the hub watches every node."""
    return Heartbeat(max(interval, timeout / PINGS_PER_TIMEOUT), timeout)


class Watch:
    """One node as the hub sees it: ``state`` is "connecting", "up" (with the last
    ``pong``) or "lost" (with its ``reason``), since ``since`` (a time.time())."""

    def __init__(self, spec: HostSpec, router=None) -> None:
        self.spec = spec
        self.router = router  # the hub's Router: it routes the node's frames
        self.how: tuple | None = None  # (transport maker, heartbeat, settings, timeout) last used
        self.state = "connecting"
        self.since = time.time()
        self.reason = ""
        self.pong: dict = {}
        self.conn: NodeConnection | None = None
        self._lock = threading.Lock()  # one opening at a time

    def ping(self, transport: Callable[[], Transport], *, start: bool, heartbeat: Heartbeat,
             settings, timeout: float) -> dict | None:
        """The node's hello, a fresh pong and the round trip, connecting first if the
        hub has no live connection to it; None if no node runs and ``start`` is false.
        A connection that broke before the hub noticed (the node was stopped a moment
        ago, by ``down --nodes``) is replaced once, as a missing one would be."""
        self.how = (transport, heartbeat, settings, timeout)
        for attempt in (1, 2):
            had = self.conn
            conn = self._connection(transport, start=start, heartbeat=heartbeat,
                                    settings=settings, timeout=timeout)
            if conn is None:
                return None
            try:
                pong = conn.ping(timeout)
                break
            except errors.ClusterError as exc:
                if conn.lost is None:
                    raise
                self._set("lost", exc.one_line())
                if attempt == 2 or conn is not had:
                    raise
        self.pong = pong
        if self.router is not None:
            self.router.load(self.spec.name, pong)
        self._set("up", "")
        return {"hello": dict(conn.hello), "pong": pong, "rtt": conn.rtt}

    def _connection(self, transport, *, start, heartbeat, settings, timeout) -> NodeConnection | None:
        with self._lock:
            conn = self.conn
            if conn is not None and conn.lost is None:
                return conn
            if self.state != "lost":
                self._set("connecting", "")
            try:
                conn = open_node(self.spec, transport(), settings, start=start,
                                 deadline=time.monotonic() + timeout, heartbeat=heartbeat,
                                 stop_timeout=timeout, on_close=self._closed, watch=True)
            except errors.ClusterError as exc:
                self._set("lost", exc.one_line())
                raise
            self.conn = conn
            if conn is None:
                self._set("lost", "not running")
                return None
            self._set("up", "")  # (reconnected by the hub itself, or about to be pinged)
            if self.router is not None and not conn.restricted:
                # (a restricted host's owner is not trusted: nothing it sends is routed, and
                # its node runs no spawned process that could be routed to)
                self.router.attach(self.spec.name, conn)
            return conn

    def reconnect(self) -> None:
        """Open the connection again if it is gone and the node runs (not started): the
        router's way to the node comes back by itself after a cut."""
        if self.how is None or (self.conn is not None and self.conn.lost is None):
            return
        transport, heartbeat, settings, timeout = self.how
        try:
            self._connection(transport, start=False, heartbeat=heartbeat, settings=settings,
                             timeout=timeout)
        except Exception:  # noqa: BLE001 - still lost; the state says why
            pass

    def _closed(self) -> None:
        """The connection ended: the node was lost (no heartbeat), or went away."""
        conn = self.conn
        if conn is not None and conn.lost is not None and not conn.closed:
            self._set("lost", conn.lost.one_line())
            if self.router is not None:
                self.router.lost(self.spec.name, conn, conn.lost.one_line())

    def _set(self, state: str, reason: str) -> None:
        if state != self.state or reason != self.reason:
            self.state, self.reason, self.since = state, reason, time.time()

    def describe(self) -> dict:
        conn = self.conn
        return {"node": self.spec.name, "target": self.spec.target, "state": self.state,
                "since": self.since, "reason": self.reason,
                "rtt": conn.rtt if conn is not None else None,
                "pid": conn.hello.get("pid") if conn is not None else None}

    def close(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.close()


class Watches:
    """Every node the hub watches, keyed by how its host was resolved and its name."""

    def __init__(self, router=None) -> None:
        self.router = router
        self._watches: dict[tuple, Watch] = {}
        self._down_since: dict[tuple, float] = {}  # key -> when its watch was first seen lost
        self._lock = threading.Lock()
        self._closed = False

    def world(self, jobs: list[tuple[tuple, HostSpec, Callable[[], Transport]]], *, start: bool,
              heartbeat: Heartbeat, settings, timeout: float) -> list[tuple[str, object]]:
        """Ping every node of ``jobs`` (pool key, spec, transport maker) at once:
        ("pong", hello pong and rtt), ("absent", None), or ("pang", the ClusterError)."""

        def one(job) -> tuple[str, object]:
            key, spec, transport = job
            try:
                found = self._watch(key, spec).ping(transport, start=start, heartbeat=heartbeat,
                                                    settings=settings, timeout=timeout)
            except errors.ClusterError as exc:
                return "pang", exc
            except Exception as exc:  # noqa: BLE001 - a bug, or a peer not foreseen: this node's
                return "pang", errors.NodeUnreachable(spec.name, f"{type(exc).__name__}: {exc}")
            return ("absent", None) if found is None else ("pong", found)

        if len(jobs) == 1:
            return [one(jobs[0])]
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(jobs)), "clusterctl-hub-world") as pool:
            return list(pool.map(one, jobs))

    def _watch(self, key: tuple, spec: HostSpec) -> Watch:
        with self._lock:
            if self._closed:
                raise errors.HubError("the hub is stopping")
            key = (key, spec.name, spec.host, spec.user, spec.port)
            watch = self._watches.get(key)
            if watch is None:
                watch = self._watches[key] = Watch(spec, self.router)
            return watch

    def reconnect(self) -> None:
        """Every lost watch tries again (a node that runs is reached; none is started)."""
        stopped = self.router.stopped if self.router is not None else set()
        with self._lock:
            watches = [w for w in self._watches.values() if (w.conn is None or w.conn.lost is not None)
                       and w.spec.name not in stopped]
        for watch in watches:
            if not self._closed:
                watch.reconnect()

    def forget_lost(self) -> list[tuple[tuple, HostSpec]]:
        """Forget every watch that has been lost (and not reconnected since) for longer
        than ``FORGET_SECONDS``, as far as calls of this (every few seconds) have seen:
        (pool key, spec) of each. A watch being opened is left alone."""
        now = time.monotonic()
        with self._lock:
            for key, watch in self._watches.items():
                if watch.conn is None or watch.conn.lost is not None:
                    self._down_since.setdefault(key, now)
                else:
                    self._down_since.pop(key, None)
            gone = [key for key, since in self._down_since.items()
                    if now - since > FORGET_SECONDS and not self._watches[key]._lock.locked()]
            forgotten = [(key, self._watches.pop(key)) for key in gone]
            for key in gone:
                del self._down_since[key]
        for _, watch in forgotten:
            watch.close()
        return [(key[0], watch.spec) for key, watch in forgotten]

    def describe(self) -> list[dict]:
        with self._lock:
            watches = list(self._watches.values())
        return [w.describe() for w in watches]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watches, self._watches = list(self._watches.values()), {}
            self._down_since.clear()
        for watch in watches:
            watch.close()
