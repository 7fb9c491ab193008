"""Blocks read and not handed out yet, and the order they are handed out in.

Ordered, a block waits until every block before it went out; the results held back so
are bounded (``MAX_BUFFERED_BYTES``, ``READ_AHEAD_ITEMS`` and a few windows' worth of
blocks), so one slow item cannot make the map read its whole input. Unordered, a block
goes out as soon as it is complete.
"""

from __future__ import annotations

from collections import deque

from clusterctl.api.pmap.blocks import Block
from clusterctl.api.pmap.tuning import MAX_BUFFERED_BYTES, READ_AHEAD_ITEMS


class ResultBuffer:
    def __init__(self, ordered: bool) -> None:
        self.ordered = ordered
        self._open: deque[Block] = deque()  # ordered: blocks not yet handed out, in order
        self._complete: deque[Block] = deque()  # unordered: finished blocks not handed out
        self._unfinished = 0  # unordered: blocks read but not handed out
        self._nbytes = 0  # ordered: pickled results held back
        self.ahead = 8  # ordered, the first block done: blocks read ahead (4 windows' worth)

    def add(self, block: Block) -> None:
        if self.ordered:
            self._open.append(block)
        else:
            self._unfinished += 1

    def account(self, block: Block, nbytes: int) -> None:
        """A block got results: count their bytes, and queue it when complete."""
        if self.ordered:
            block.nbytes += nbytes
            self._nbytes += nbytes
        elif block.remaining == 0 and not block.complete:
            block.complete = True
            self._unfinished -= 1
            self._complete.append(block)

    def readable(self, n: int, next_index: int) -> int:
        """How many of ``n`` more items may be read now (0: the consumer is behind)."""
        if not self.ordered or not self._open:
            return n
        head = self._open[0]
        if not head.remaining and len(self._open) >= self.ahead:
            return 0  # the consumer is behind: only a few windows' worth ahead
        # a slow item holds up the results after it: the slots work on, this far
        room = READ_AHEAD_ITEMS - (next_index - head.start)
        if room <= 0 or self._nbytes >= MAX_BUFFERED_BYTES:
            return 0
        return min(n, room)

    def ready(self, stop_index: int | None) -> Block | None:
        """The next block to hand out, if there is one. Ordered and stopped at an item
        (``stop_index``), the block holding it goes out once the cells before it are done."""
        if not self.ordered:
            return self._complete.popleft() if self._complete else None
        if not self._open:
            return None
        head = self._open[0]
        if head.remaining:
            stop = stop_index
            if stop is None or not head.start <= stop < head.start + head.n:
                return None
            if head.pending_before(stop - head.start):
                return None
        self._open.popleft()
        self._nbytes -= head.nbytes
        return head

    def empty(self) -> bool:
        """Nothing is left to hand out of what was read."""
        if self.ordered:
            return not self._open
        return not self._unfinished and not self._complete

    def drop_after(self, index: int) -> None:
        """Stopped at item ``index``: the blocks after it will not be handed out."""
        while self._open and self._open[-1].start > index:
            dropped = self._open.pop()
            self._nbytes -= dropped.nbytes

    def clear(self) -> None:
        self._open.clear()
        self._complete.clear()
