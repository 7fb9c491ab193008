"""How big a chunk is and how many go in flight to a node, from what the map learned of
the function: seconds per item, and bytes per item and per result (all smoothed).

A chunk aims at TARGET_CHUNK_SECONDS of work, so the per-message cost stays near 1%, or
longer when the controller's own cost per chunk times the slots would take more than
CONTROLLER_SHARE of its CPU (many nodes); chunks at most double from one to the next,
and shrink near the end of a known input so every node ends together. A node's window holds enough chunks that the next is
there when a worker is free, also while answers and new chunks travel.
"""

from __future__ import annotations

import math

from clusterctl.api.pmap.nodes import MapNode
from clusterctl.api.pmap.overhead import ControllerCost
from clusterctl.api.pmap.tuning import (CONTROLLER_SHARE, MAX_CHUNK_BYTES, MAX_CHUNK_ITEMS,
                                        MAX_CHUNK_SECONDS, MAX_DEPTH, MIN_CHUNK_SECONDS, MIN_DEPTH,
                                        TARGET_CHUNK_SECONDS)


class Sizing:
    def __init__(self, chunksize: int | None, cost: ControllerCost | None = None) -> None:
        self.chunksize = chunksize  # fixed by the caller, or None: adapted
        self.cost = cost or ControllerCost()
        self.item_time: float | None = None  # seconds per item, over all nodes
        self.item_bytes: float | None = None  # pickled input per item
        self.result_bytes: float | None = None  # pickled results per item
        self.max_n = 0  # the largest chunk answered

    def per_item(self, node: MapNode) -> float | None:
        """Seconds per item on this node (or over all nodes, until this one answered)."""
        return node.item_time if node.item_time is not None else self.item_time

    def chunk_items(self, node: MapNode, left: int | None, slots: int) -> int:
        """Items for the next chunk to ``node``; ``left`` items not read yet (if known),
        ``slots`` running over all nodes."""
        if self.chunksize:
            return self.chunksize
        if node.item_time is None and self.item_time is None:
            return 1  # learn the item time from a single item first
        n = self.target_items(node, left, slots)
        return max(1, min(n, 2 * max(node.max_n, self.max_n // 4) + 1))  # at most doubling

    def chunk_seconds(self, slots: int) -> float:
        """A chunk's compute time: TARGET_CHUNK_SECONDS, or longer so that the messages of
        ``slots`` slots, each answering a chunk this long, take the controller at most
        CONTROLLER_SHARE of its CPU."""
        per_chunk = self.cost.per_chunk
        if per_chunk is None:
            return TARGET_CHUNK_SECONDS
        return min(MAX_CHUNK_SECONDS, max(TARGET_CHUNK_SECONDS, slots * per_chunk / CONTROLLER_SHARE))

    def target_items(self, node: MapNode, left: int | None, slots: int) -> int:
        """Items for a chunk of about ``chunk_seconds`` on this node, within the caps."""
        if self.chunksize:
            return self.chunksize
        per_item = max(self.per_item(node) or 1.0, 1e-8)
        n = round(self.chunk_seconds(slots) / per_item)  # (1.98 items of 10.1 ms make 2)
        for size in (self.item_bytes, self.result_bytes):
            if size:
                n = min(n, int(MAX_CHUNK_BYTES / size))
        if left is not None:  # near the end, smaller chunks, so every node ends together
            n = min(n, max(math.ceil(left / (4 * (slots or 1))), int(MIN_CHUNK_SECONDS / per_item)))
        return max(1, min(n, MAX_CHUNK_ITEMS))

    def read(self, nbytes: int, n: int) -> None:
        """A chunk of ``n`` items was read and pickled to ``nbytes``."""
        per_item = nbytes / n
        self.item_bytes = per_item if self.item_bytes is None else \
            0.7 * self.item_bytes + 0.3 * per_item

    def learn(self, node: MapNode, n: int, spent: float, nbytes: int) -> bool:
        """A chunk of ``n`` items came back from ``node``, its function having taken
        ``spent`` seconds and its results ``nbytes``; True if its window is due a resize
        (every 8 answers, or when chunks grow)."""
        per_item = spent / n
        node.item_time = per_item if node.item_time is None else \
            0.6 * node.item_time + 0.4 * per_item
        self.item_time = per_item if self.item_time is None else \
            0.8 * self.item_time + 0.2 * per_item
        per_result = nbytes / n
        self.result_bytes = per_result if self.result_bytes is None else \
            0.7 * self.result_bytes + 0.3 * per_result
        if n > node.max_n:
            node.max_n = n
            self.max_n = max(self.max_n, n)
            return True
        return not node.stats.chunks & 7

    def size_window(self, node: MapNode, left: int | None, slots: int) -> None:
        """Enough chunks in flight that the next is there when a worker is free, also
        while answers and new chunks travel (the node's round trip)."""
        per_item = self.per_item(node)
        if per_item is None:
            return
        latency = node.conn.rtt or 0.0
        chunk_time = max(self.target_items(node, left, slots) * per_item, 1e-6)
        depth = MIN_DEPTH + math.ceil(latency / chunk_time)
        node.window = node.slots * max(MIN_DEPTH, min(MAX_DEPTH, depth))
        node.refill = max(1, node.window // 4)
