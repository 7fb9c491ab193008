"""Nodes joining a map: each is connected to (and pinged) in a thread of its own, so a
slow or unreachable host holds up no other, and each starts work as soon as it joins."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from clusterctl import errors

JOINED = object()  # the first field of the event a connector posts


class Connectors:
    def __init__(self, cluster, post: Callable, prepare: Callable | None = None) -> None:
        self._cluster = cluster
        self._post = post
        self._prepare = prepare  # (conn) -> None: made ready in this thread (its packages)
        self._threads: list[threading.Thread] = []
        self.pending = 0  # nodes still being connected

    def start(self, names: Iterable[str]) -> None:
        for name in names:
            self.pending += 1
            thread = threading.Thread(target=self._connect, args=(name,), daemon=True,
                                      name=f"clusterctl-pmap-connect-{name}")
            thread.start()
            self._threads.append(thread)

    def _connect(self, name: str) -> None:
        """Post ``(JOINED, name, connection, None)``, or ``(JOINED, name, None, error)``."""
        cluster = self._cluster
        try:
            conn, error = cluster.connect(name), None
            try:
                conn.ping(cluster.connect_timeout)  # the round trip sizes its window
            except errors.NodeLost:  # a connection left from before, to a node since gone
                conn = cluster.connect(name)
                conn.ping(cluster.connect_timeout)
            if self._prepare is not None:  # (so hosts get their packages side by side)
                self._prepare(conn)
        except errors.ClusterError as exc:
            conn, error = None, exc
        except Exception as exc:  # noqa: BLE001 - reported as this node's failure
            conn, error = None, errors.NodeUnreachable(name, f"{type(exc).__name__}: {exc}")
        self._post((JOINED, name, conn, error))

    def joined(self) -> None:
        """One connector's event was handled."""
        self.pending -= 1

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` in all for the connectors still running."""
        deadline = time.monotonic() + seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
