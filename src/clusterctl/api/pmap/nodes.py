"""A node as one map sees it: its connection, its slots, its chunks in flight, its window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterctl.api.pmap.tuning import MIN_DEPTH

if TYPE_CHECKING:
    from clusterctl.api.pmap.blocks import Chunk
    from clusterctl.api.pmap.stats import NodeStats


class MapNode:
    """One node taking part in a map (``slots`` is its number of worker processes)."""

    __slots__ = ("name", "conn", "slots", "inflight", "window", "refill", "item_time", "max_n",
                 "stats", "running", "fd")

    def __init__(self, name: str, conn, stats: NodeStats) -> None:
        self.name = name
        self.conn = conn
        self.slots = slots_of(conn)
        self.inflight: dict[int, Chunk] = {}  # id(chunk) -> chunk, in the order sent
        self.window = self.slots * MIN_DEPTH  # chunks it may have in flight
        self.refill = 1  # free room in the window before it is topped up
        self.item_time: float | None = None  # seconds per item in the function, smoothed
        self.max_n = 0  # the largest chunk it answered
        self.stats = stats
        self.running = True
        self.fd: int | None = None  # polled by the map's thread (see Inbox.watch)

    def room(self) -> int:
        return self.window - len(self.inflight)


def slots_of(conn) -> int:
    """A connected node's worker processes, as its hello said (at least one)."""
    return max(1, int(conn.hello.get("slots") or 1))
