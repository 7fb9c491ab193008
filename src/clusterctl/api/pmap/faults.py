"""What becomes of items that did not come back with a result: tried again (on another
node if there is one), split in halves to find the one that crashes, or failed for good
(``ItemError``, ``PoisonItem``). docs/how-it-works.md, "pmap: exactly once", has the table.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from clusterctl import errors
from clusterctl.api.pmap import timeouts
from clusterctl.api.pmap.blocks import Block, Chunk
from clusterctl.api.pmap.item_errors import ItemError, ItemTimeout, PoisonItem
from clusterctl.api.pmap.nodes import MapNode
from clusterctl.api.pmap.options import Options
from clusterctl.api.pmap.stats import PmapStats
from clusterctl.session.outcomes import remote_error


class Faults:
    """The retry and poison policy. Chunks to do again go to the front of ``retry``;
    items failed for good go to ``fail``; ``stopped`` says whether a chunk is past the
    item the map stopped at (it is then not done again)."""

    def __init__(self, options: Options, stats: PmapStats, retry: deque[Chunk],
                 fail: Callable[[Block, int, ItemError], None],
                 stopped: Callable[[Chunk], bool], codec) -> None:
        self.options = options
        self.codec = codec  # how a chunk's items travel: to take them apart and make new chunks
        self.stats = stats
        self.retry = retry
        self._fail = fail
        self._stopped = stopped

    # -- an item's function raised -----------------------------------------------------

    def item_failed(self, chunk: Chunk, j: int, outcome) -> None:
        """Item ``j`` of ``chunk`` raised: retry it alone elsewhere, or fail it."""
        block, offset = chunk.block, chunk.offset + j
        if not block.is_pending(offset):
            self.stats.duplicates += 1
            return
        info = outcome[1] if isinstance(outcome[1], dict) else {}
        exc = outcome[2] if len(outcome) > 2 else None
        node = chunk.node
        if chunk.tries < self.options.retries and self.retryable(info, exc):
            node.stats.retries += 1
            self.stats.retries += 1
            where = info.get("where")
            if where:
                self.stats.retried_in[where] = self.stats.retried_in.get(where, 0) + 1
            payload = self.codec.encode(self.codec.items(chunk.payload)[j:j + 1], block.start + offset)
            self.retry.append(chunk.again(offset, 1, payload, tries=chunk.tries + 1,
                                          avoid=frozenset((node.name,))))
            return
        node.stats.failures += 1
        error = ItemError(
            block.start + offset, info.get("node", node.name), info.get("type", "Error"),
            info.get("message", ""), info.get("traceback", ""), exception=exc,
            attempts=chunk.tries + 1, where=info.get("where"))
        if info.get("hint"):  # a result that cannot be pickled: what to return instead
            error.hint = info["hint"]
        self._fail(block, offset, error)

    def retryable(self, info: dict, exc) -> bool:
        retry_on = self.options.retry_on
        if retry_on is None:
            return True
        if isinstance(exc, BaseException):
            return isinstance(exc, retry_on)
        names = {c.__qualname__ for c in retry_on} | {f"{c.__module__}.{c.__qualname__}"
                                                     for c in retry_on}
        return info.get("type") in names

    # -- the node answered the chunk with an error ---------------------------------------

    def chunk_failed(self, node: MapNode, chunk: Chunk, head: dict,
                     payload) -> errors.ClusterError | None:
        """The node answered ``chunk`` with an error. Returns the error if the node cannot
        load the function or the items (the caller takes it out of the run, then calls
        ``requeue``)."""
        info = head.get("error") or {}
        kind = info.get("kind")
        if kind == "crashed":
            node.stats.crashes += 1
            if not chunk.covered():
                self._crashed(node, chunk, info)
        elif kind == "cancelled" and chunk.expired:  # by us: it was over its time limit
            self._timed_out(node, chunk, info)
        elif kind == "cancelled":  # not by us (we forget what we cancel): do it again
            if not chunk.covered():
                self.requeue(chunk, node)
        else:
            return remote_error(info, payload, node.name)
        return None

    def _crashed(self, node: MapNode, chunk: Chunk, info: dict) -> None:
        crash = (node.name, info.get("message", "the worker crashed"))
        if chunk.n > 1:  # halve it, until the item that crashes is alone
            self.requeue_split(chunk, node, last_crash=crash)
            return
        strikes = chunk.strikes + 1
        if strikes >= self.options.poison_after:
            self._poison(chunk, node, strikes, crash)
            return
        self._count_requeued(node, 1)
        self.retry.appendleft(chunk.again(strikes=strikes, avoid=chunk.avoid | {node.name},
                                          last_crash=crash))

    def _timed_out(self, node: MapNode, chunk: Chunk, info: dict) -> None:
        """The node's answer to a chunk cancelled for being over its time limit."""
        if chunk.covered():
            return  # its twin runs on
        if timeouts.not_started(info, chunk):  # it waited behind another task: again
            self._count_requeued(node, chunk.n)
            self.retry.appendleft(chunk.again(unstarted=chunk.unstarted + 1))
            return
        if chunk.n > 1:  # halve it, until the item that is too slow is alone
            self.requeue_split(chunk, node, unstarted=0)
            return
        limit = f"{self.options.item_timeout:g}"
        message = f"it ran longer than the item timeout of {limit} s; its worker was stopped"
        exc = ItemTimeout(f"item {chunk.index} ran longer than {limit} s")
        self.item_failed(chunk, 0, (False, {"type": "ItemTimeout", "message": message,
                                            "node": node.name}, exc))

    def undecodable(self, chunk: Chunk, node: MapNode, exc: Exception) -> None:
        """The chunk's results cannot be unpickled here: each of its items fails."""
        message = f"the results could not be unpickled here: {type(exc).__name__}: {exc}"
        for j in range(chunk.n):
            node.stats.failures += 1
            self._fail(chunk.block, chunk.offset + j, ItemError(
                chunk.index + j, node.name, "SerializationError", message))

    # -- doing chunks again ----------------------------------------------------------------

    def requeue(self, chunk: Chunk, node: MapNode, lost: bool = False) -> None:
        """Do a chunk again elsewhere: its node was lost (``lost``), or could not load the
        function, or cancelled it by itself."""
        if self._stopped(chunk):
            return
        if not lost:
            self._count_requeued(node, chunk.n)
            self.retry.appendleft(chunk.again(avoid=chunk.avoid | {node.name}))
            return
        strikes = chunk.strikes + 1
        if chunk.n == 1 and strikes >= self.options.poison_after:
            self._poison(chunk, node, strikes, chunk.last_crash)
        elif chunk.n > 1 and strikes >= 2:  # lost twice: maybe one of its items kills nodes
            self.requeue_split(chunk, node, strikes=strikes)
        else:
            self._count_requeued(node, chunk.n)
            self.retry.appendleft(chunk.again(strikes=strikes))

    def requeue_split(self, chunk: Chunk, node: MapNode, **changes) -> None:
        """Do a chunk again as two halves (to find the item that crashes, or is too slow,
        or too large to send)."""
        self._count_requeued(node, chunk.n)
        items = self.codec.items(chunk.payload)
        half = chunk.n // 2
        for offset, part in ((half, items[half:]), (0, items[:half])):
            start = chunk.offset + offset
            payload = self.codec.encode(part, chunk.block.start + start)
            self.retry.appendleft(chunk.again(start, len(part), payload, **changes))

    def _poison(self, chunk: Chunk, node: MapNode, strikes: int, crash) -> None:
        where, message = crash or (node.name, "its node was lost while running it")
        node.stats.failures += 1
        self._fail(chunk.block, chunk.offset, PoisonItem(
            chunk.index, where, "WorkerCrashed", message, attempts=strikes))

    def _count_requeued(self, node: MapNode, n: int) -> None:
        node.stats.requeued += n
        self.stats.requeued += n
