"""Starting overdue chunks (stuck, or queued behind a long item) again elsewhere.

At the end (the input is all out) twins go to idle slots; while input is still read
(``early``, and only for chunks late by more than SPECULATE_EARLY_AFTER, so that the
noise of a busy machine starts nothing twice), to nodes with room in their window,
before new input, so one slow item does not hold up the items behind it on its worker
(nor, when ordered, every result after it). The first answer wins; the other attempt is
cancelled (its worker is killed if it is running). So a slow or stuck node cannot hold
up the map; the price is that the function may run twice for those items.
"""

from __future__ import annotations

from typing import Callable

from clusterctl.api.pmap.blocks import Chunk
from clusterctl.api.pmap.nodes import MapNode
from clusterctl.api.pmap.tuning import SPECULATE_AFTER, SPECULATE_EARLY_AFTER


def has_room(early: bool) -> Callable[[MapNode], bool]:
    """Whether a node may take a twin: room in its window (early), or an idle slot (at the end)."""
    if early:
        return lambda n: len(n.inflight) < n.window
    return lambda n: len(n.inflight) < n.slots


def overdue(nodes: list[MapNode], per_item: Callable[[MapNode], float | None], now: float,
            early: bool) -> list[Chunk]:
    """The chunks in flight on ``nodes`` late enough to be started again, the oldest first."""
    found = []
    factor, slack = (4, SPECULATE_EARLY_AFTER) if early else (2, SPECULATE_AFTER)
    for node in nodes:
        item_time = per_item(node)
        if item_time is None or not node.inflight:
            continue
        rtt = node.conn.rtt or 0.0
        # a chunk waits behind those sent to the node before it (in flight is in the
        # order sent): by its rank, it is expected back after that many rounds of slots
        for rank, chunk in enumerate(node.inflight.values()):
            expected = (rank // node.slots + 1) * chunk.n * item_time + rtt
            if chunk.twin is None and not chunk.expired and \
                    now - chunk.sent > factor * expected + slack:
                found.append(chunk)
    found.sort(key=lambda c: c.sent)
    return found


def target(targets: list[MapNode], chunk: Chunk) -> MapNode:
    """Where a twin of ``chunk`` goes: another node if one has room (its own may be
    stuck), the emptiest first."""
    return min(targets, key=lambda n: (n is chunk.node, len(n.inflight) / n.slots))
