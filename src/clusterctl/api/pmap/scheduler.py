"""Handing out work: which node gets which chunk, when, and how big; and taking the
answers in. Runs in the map's thread only (see ``Inbox``).

docs/how-it-works.md, sections "pmap: chunks, windows and read-ahead" and "pmap:
exactly once", describe what it does and why.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from clusterctl import errors
from clusterctl.api.pmap import answers, speculation, timeouts
from clusterctl.api.pmap.blocks import Block, Chunk
from clusterctl.api.pmap.buffer import ResultBuffer
from clusterctl.api.pmap.faults import Faults
from clusterctl.api.pmap.inbox import Inbox
from clusterctl.api.pmap.item_errors import ItemError
from clusterctl.api.pmap.nodes import MapNode, Roster
from clusterctl.api.pmap.options import Options
from clusterctl.api.pmap.overhead import ControllerCost
from clusterctl.api.pmap.sizing import Sizing
from clusterctl.api.pmap.source import Source
from clusterctl.api.pmap.stats import PmapStats, reason_of
from clusterctl.api.pmap.tuning import (MAX_INFLIGHT_BYTES, SPECULATE_SCAN_SECONDS,
                                        TIMEOUT_SCAN_SECONDS)


class Scheduler:
    """The chunks in flight on each node, the retry queue, and where the map stopped.

    ``codec`` says how the function, items and results travel (``codec.py``).
    Items failed for good are ``failures`` (``on_error="collect"``); with "raise", the
    first is ``stop_error``.
    """

    def __init__(self, options: Options, stats: PmapStats, source: Source,
                 buffer: ResultBuffer, inbox: Inbox, codec,
                 post: Callable | None = None) -> None:
        self.options = options
        self.stats = stats
        self.source = source
        self.buffer = buffer
        self.inbox = inbox
        self.post = post or inbox.post  # where answers go (tagged, when schedulers share an inbox)
        self.codec = codec
        self.cost = ControllerCost(active=options.chunksize is None)
        self.sizing = Sizing(options.chunksize, self.cost)
        self.roster = Roster()
        self.nodes = self.roster.nodes
        self.retry: deque[Chunk] = deque()
        self.faults = Faults(options, stats, self.retry, self.fail_cell, self._stopped, codec)
        self.failures: list[ItemError] = []
        self.load_errors: list[errors.ClusterError] = []
        self.stop_index: int | None = None
        self.stop_error: ItemError | None = None
        self.cancelling: set[int] = set()  # chunks cancelled at the end, not confirmed yet
        self._inflight_bytes = 0
        self.inflight_chunks = 0  # over all nodes (``options.max_inflight`` caps it)
        self._seq = 0  # chunks sent
        self._touched: set[MapNode] = set()  # nodes sent requests not flushed yet
        self._speculated_at = 0.0  # when overdue chunks were last looked for
        self._expiry_at = 0.0  # item_timeout: when chunks over their limit were last looked for
        self.on_lost: Callable[[MapNode], None] = lambda node: None  # after a node is lost

    def add_node(self, node: MapNode) -> None:
        self.roster.add(node)
        self._size_window(node)
        self._resize_ahead()
        self.inbox.watch(node)

    def running(self) -> list[MapNode]:
        return self.roster.running()

    # -- handing out work --------------------------------------------------------------

    def fill(self) -> None:
        """Hand out work to every node with room; what goes to one node goes in one write."""
        try:
            self._fill_windows()
        finally:
            touched, self._touched = self._touched, set()
            for node in touched:
                node.conn.flush()

    def _fill_windows(self) -> None:
        self._scan()
        while not self._at_cap():
            node = self.roster.freest(self._touched)
            if node is None:
                return
            chunk = self._next_chunk(node)
            if chunk is None:
                if self.retry:
                    self._place_retries()
                elif self.source.done and self.options.speculate:
                    self._speculate()
                return
            self._send(node, chunk)

    def _scan(self) -> None:
        """Now and then: cancel chunks over their time limit; twin chunks overdue while
        input is still read."""
        early = self.options.speculate and not self.source.done
        if self.options.item_timeout is None and not early:
            return
        now = time.monotonic()
        if self.options.item_timeout is not None and now - self._expiry_at >= TIMEOUT_SCAN_SECONDS:
            self._expiry_at = now
            timeouts.cancel_over_limit(self.running(), now)
        if early and now - self._speculated_at >= SPECULATE_SCAN_SECONDS:
            self._speculated_at = now
            self._speculate(early=True)

    def _speculate(self, early: bool = False) -> None:
        """Start overdue chunks again elsewhere (see ``speculation``)."""
        nodes = self.running()
        room = speculation.has_room(early)
        targets = [n for n in nodes if room(n)]
        if not targets:
            return
        for chunk in speculation.overdue(nodes, self.sizing.per_item, time.monotonic(), early):
            targets = [n for n in targets if room(n)]
            if not targets or self._at_cap():
                return
            twin = chunk.again()
            twin.twin, chunk.twin = chunk, twin
            self.stats.speculated += chunk.n
            self._send(speculation.target(targets, chunk), twin)

    def _place_retries(self) -> None:
        """Retries that avoid the node with the most room go to others that have room."""
        for chunk in list(self.retry):
            node = next((n for n in self.nodes.values() if n.running and n.room() > 0 and (
                n.name not in chunk.avoid or self._only_avoided(chunk))), None)
            if node is not None and not self._at_cap():
                self.retry.remove(chunk)
                self._send(node, chunk)

    def _next_chunk(self, node: MapNode) -> Chunk | None:
        """A retry this node may take, or else new input."""
        retry = self.retry
        for i, chunk in enumerate(retry):
            if node.name not in chunk.avoid or self._only_avoided(chunk):
                del retry[i]
                return chunk
        source = self.source
        if source.done or self.stop_index is not None:
            return None
        if node.inflight and self._inflight_bytes >= MAX_INFLIGHT_BYTES:
            return None
        n = self.sizing.chunk_items(node, source.left(), self.roster.slots)
        n = self.buffer.readable(n, source.next_index)
        if not n:
            return None
        started = self.cost.clock()
        chunk = source.read(n)
        self.cost.item_work(started)
        if source.done:
            self.stats.total = source.total
        if chunk is None:
            return None
        self.buffer.add(chunk.block)
        self.sizing.read(len(chunk.payload), chunk.n)
        return chunk

    def _at_cap(self) -> bool:
        cap = self.options.max_inflight
        return cap is not None and self.inflight_chunks >= cap

    def _only_avoided(self, chunk: Chunk) -> bool:
        return all(n.name in chunk.avoid for n in self.nodes.values() if n.running)

    def _send(self, node: MapNode, chunk: Chunk) -> None:
        chunk.node = node
        chunk.live = True
        chunk.sent = time.monotonic()
        self._seq += 1
        chunk.seq = self._seq
        timeout = self.options.item_timeout
        if timeout is not None:
            chunk.limit = timeouts.time_limit(timeout, chunk.n, self.sizing.per_item(node))
            timeouts.start_clock(node, chunk)
        node.inflight[id(chunk)] = chunk
        self.inflight_chunks += 1
        self.roster.changed(node)
        self._inflight_bytes += len(chunk.payload)
        head = dict(self.codec.head(), at=chunk.index)  # (at: names what its items print)
        post = self.post
        self._touched.add(node)
        try:
            node.conn.request(head, chunk.payload, flush=False,
                              callback=lambda h, p, e, chunk=chunk: post((chunk, h, p, e)))
        except errors.SerializationError as exc:  # over the frame limit: nothing was sent
            self._take_back(chunk)
            if chunk.n == 1:
                raise errors.SerializationError(
                    f"input item {chunk.index} is too large to send: {exc.message}",
                    hint=exc.hint) from None
            self.faults.requeue_split(chunk, node)
            return
        chunk.rid = head.get("id")

    def _take_back(self, chunk: Chunk) -> None:
        """Mark a chunk answered (or abandoned): nothing it sends later counts."""
        chunk.live = False
        node = chunk.node
        if node.inflight.pop(id(chunk), None) is not None:
            self.inflight_chunks -= 1
            self.roster.changed(node)
            self._inflight_bytes -= len(chunk.payload)
            if self.options.item_timeout is not None and node.running:
                timeouts.restart_clocks(node, chunk.seq, time.monotonic())

    # -- answers -----------------------------------------------------------------------

    def answer(self, chunk: Chunk, head: dict | None, payload, error) -> None:
        """A node's answer to ``chunk`` (or ``error``: its connection was lost)."""
        if not chunk.live:  # fenced: cancelled, or taken back when its node was lost
            if self.cancelling:
                self.cancelling.discard(id(chunk))
            return
        self._take_back(chunk)
        node = chunk.node
        if error is not None:
            self.retire(node, "lost", reason_of(error))
            if not chunk.covered():
                self.faults.requeue(chunk, node, lost=True)
        elif not head.get("ok"):
            load_error = self.faults.chunk_failed(node, chunk, head, payload)
            if load_error is not None:  # it cannot load the function or the items
                self.load_errors.append(load_error)
                self.retire(node, "failed", load_error.one_line())
                if not chunk.covered():
                    self.faults.requeue(chunk, node)
        else:
            if chunk.covered():  # this attempt won: the other is not needed any more
                self.cancel(chunk.twin)
            self._deliver(node, chunk, payload)

    def _deliver(self, node: MapNode, chunk: Chunk, payload: bytes) -> None:
        """Put a chunk's results into its block's cells."""
        stats = node.stats
        stats.chunks += 1
        self.cost.answered()
        started = self.cost.clock()
        try:
            spent, all_ok, data = answers.decode(self.codec.answer(payload), chunk,
                                                 len(node.inflight) / node.slots)
        except Exception as exc:  # noqa: BLE001 - every item of the chunk fails with it
            self.faults.undecodable(chunk, node, exc)
            return
        finally:
            self.cost.item_work(started)
        if self.sizing.learn(node, chunk.n, spent, len(payload)):
            self._size_window(node)
        stats.busy += spent
        delivered = answers.fill(chunk, all_ok, data, self.stats, self.faults.item_failed)
        if delivered:
            stats.items += delivered
            self.stats.done += delivered
            self.buffer.account(chunk.block, len(payload) * delivered // max(1, chunk.n))
        chunk.payload = b""

    def fail_cell(self, block: Block, offset: int, error: ItemError) -> None:
        """An item failed for good: as ``on_error`` says, collect it, or stop there."""
        if not block.fail(offset, error):
            self.stats.duplicates += 1
            return
        self.stats.done += 1
        self.stats.failed += 1
        if self.options.on_error == "collect":
            self.failures.append(error)
        elif self.options.on_error == "raise":
            self._stop(error)
        self.buffer.account(block, 0)

    def _stop(self, error: ItemError) -> None:
        """on_error="raise": stop at the first failed item; cancel the work after it."""
        index = error.index
        if self.stop_index is not None and self.stop_index <= index:
            return
        self.stop_index, self.stop_error = index, error
        for node in self.nodes.values():
            for chunk in [c for c in node.inflight.values() if self._stopped(c)]:
                self.cancel(chunk)
        kept = [c for c in self.retry if not self._stopped(c)]
        self.retry.clear()
        self.retry.extend(kept)
        self.buffer.drop_after(index)

    def _stopped(self, chunk: Chunk) -> bool:
        """The map stopped at an item before this chunk's (unordered: at any item)."""
        stop = self.stop_index
        return stop is not None and (not self.options.ordered or chunk.index > stop)

    # -- nodes leaving, work cancelled -------------------------------------------------

    def retire(self, node: MapNode, state: str, reason: str) -> None:
        """Take a node out of the run; its chunks in flight go back to the queue."""
        if not node.running:
            return
        node.running = False
        self.roster.retired(node)
        node.stats.state = state
        node.stats.reason = reason
        node.stats.left = time.monotonic()
        self.inbox.unwatch(node)  # (late replies, if any, come through its connection's thread)
        self._resize_ahead()
        for chunk in list(node.inflight.values()):
            self._take_back(chunk)
            if not chunk.covered():
                self.faults.requeue(chunk, node, lost=state == "lost")
        if state == "lost":
            self.on_lost(node)

    def cancel(self, chunk: Chunk, wait: bool = False) -> None:
        """Cancel a chunk on its node. With ``wait``, its answer (the node's confirmation,
        sent once the worker running it is gone) is awaited: see ``cancelling``."""
        self._take_back(chunk)
        conn = chunk.node.conn
        if chunk.rid is None:
            return
        if wait and conn.lost is None:
            self.cancelling.add(id(chunk))
        else:
            conn.forget(chunk.rid)
        conn.cancel(chunk.rid)

    def _size_window(self, node: MapNode) -> None:
        window = node.window
        self.sizing.size_window(node, self.source.left(), self.roster.slots)
        self.roster.changed(node)
        if node.window != window:
            self._resize_ahead()

    def _resize_ahead(self) -> None:
        self.buffer.ahead = 4 * sum(n.window for n in self.nodes.values() if n.running) + 8
