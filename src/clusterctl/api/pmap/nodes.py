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


class Roster:
    """The nodes of one map by name, the slots of the running ones, and the running ones
    with room for another chunk: only those are looked at when work is handed out, so
    that costs the same with 100 nodes as with 2. They are an ordered set: among nodes
    with as much room, the one that has had it longest gets work first."""

    def __init__(self) -> None:
        self.nodes: dict[str, MapNode] = {}
        self.slots = 0  # of the running nodes
        self._wanting: dict[MapNode, None] = {}

    def add(self, node: MapNode) -> None:
        self.nodes[node.name] = node
        self.changed(node)
        self._count_slots()

    def retired(self, node: MapNode) -> None:
        """``node`` stopped running (set ``running`` first)."""
        self._wanting.pop(node, None)
        self._count_slots()

    def changed(self, node: MapNode) -> None:
        """``node``'s room (its chunks in flight, or its window) changed."""
        if node.running and node.room() > 0:
            self._wanting.setdefault(node, None)
        else:
            self._wanting.pop(node, None)

    def running(self) -> list[MapNode]:
        return [n for n in self.nodes.values() if n.running]

    def freest(self, touched: set[MapNode]) -> MapNode | None:
        """The node with the most room per slot for another chunk. A node with a deep
        window gets work once a quarter of it (``refill``) is free, and is then filled up
        (while it is ``touched``): fewer, fuller writes."""
        best, most = None, 0.0
        for node in self._wanting:
            free = node.room()
            if free >= (1 if node in touched else node.refill) and free / node.slots > most:
                best, most = node, free / node.slots
        return best

    def _count_slots(self) -> None:
        self.slots = sum(n.slots for n in self.nodes.values() if n.running)
