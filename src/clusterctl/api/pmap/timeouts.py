"""item_timeout: when a chunk's time limit starts counting, and which chunks are over it.

The controller does not see when a node starts a chunk, only when it answers. The node
runs its tasks in the order sent, one per worker, with a few handed ahead to each worker
(behind the task it runs). So a chunk's limit starts counting when fewer than ``slots``
chunks sent before it to its node are in flight, and starts again each time one of those
comes back (it may have waited behind that one on the same worker): a limit is never
short, but may be long by the time a chunk waited behind another. The chunks found over
their limit are cancelled, the latest sent first, so one handed ahead behind a stuck one
is answered "not started" (and sent again) before the stuck one's worker is killed; the
node's answer for a chunk whose worker was killed says it was running: it took too long.
"""

from __future__ import annotations

from clusterctl.api.pmap.blocks import Chunk
from clusterctl.api.pmap.nodes import MapNode


def time_limit(timeout: float, n: int, per_item: float | None) -> float:
    """A chunk's limit: ``timeout`` for its slowest item, and time for the other ``n - 1``
    (four times their expected time, and at most ``timeout`` each). One found over it is
    split in halves until the item that is too slow is alone."""
    if n == 1:
        return timeout
    other = timeout if per_item is None else min(timeout, 4 * per_item)
    return timeout + (n - 1) * other


def start_clock(node: MapNode, chunk: Chunk) -> None:
    """``chunk`` is being sent to ``node``: its clock starts now if a worker is free for it."""
    if len(node.inflight) < node.slots:
        chunk.clock = chunk.sent


def restart_clocks(node: MapNode, seq: int, now: float) -> None:
    """The chunk sent ``seq``-th left ``node``: those sent after it may have waited behind it."""
    for rank, chunk in enumerate(node.inflight.values()):
        if rank >= node.slots:
            return
        if chunk.seq > seq and not chunk.expired:
            chunk.clock = now


def over_limit(node: MapNode, now: float) -> list[Chunk]:
    """``node``'s chunks over their limit and not cancelled yet, the latest sent first."""
    over = [c for c in node.inflight.values() if c.clock is not None and not c.expired
            and now - c.clock > c.limit]
    over.reverse()
    return over


def not_started(info: dict, chunk: Chunk) -> bool:
    """The node's answer to a chunk cancelled for its limit says it had not started (it
    waited behind another task); sent again twice at most so."""
    return "running" not in str(info.get("message", "")) and chunk.unstarted < 2


def cancel_over_limit(nodes, now: float) -> None:
    """Cancel the chunks that are over their time limit on ``nodes``."""
    for node in nodes:
        for chunk in over_limit(node, now):
            chunk.expired = True
            if chunk.rid is not None:
                node.conn.cancel(chunk.rid)
