"""The bounded queue in front of a farm that is not the first: what the stage before it
put out, waiting to be handed out in chunks, as runs of consecutive input indices (so
every item keeps its index in the input all the way through the pipeline)."""

from __future__ import annotations

from collections import deque
from typing import Callable

from clusterctl.api.pmap.blocks import Block, Chunk


class Feed:
    """A ``Source`` whose items arrive while the run goes: ``put`` them, ``close`` it at
    the end. It reads what is there, and is ``done`` once closed and empty."""

    def __init__(self, encode: Callable[[list, int], bytes]) -> None:
        self.encode = encode
        self._runs: deque[list] = deque()  # [start index, values]
        self.count = 0  # items waiting
        self.fed = 0  # items put in, in all
        self.closed = False
        self.total: int | None = None  # items put in, once closed
        self.next_index = 0  # one past the last item read out

    @property
    def done(self) -> bool:
        return self.closed and not self.count

    def put(self, start: int, values: list) -> None:
        if not values:
            return
        runs = self._runs
        if runs and runs[-1][0] + len(runs[-1][1]) == start:
            runs[-1][1].extend(values)
        else:
            runs.append([start, list(values)])
        self.count += len(values)
        self.fed += len(values)

    def close(self) -> None:
        self.closed = True
        self.total = self.fed

    def left(self) -> int | None:
        """Items still to come, once that is known."""
        return self.count if self.closed else None

    def read(self, n: int) -> Chunk | None:
        """Up to ``n`` waiting items with consecutive indices, as a new block's chunk."""
        if not self._runs:
            return None
        run = self._runs[0]
        start, values = run
        if len(values) <= n:
            self._runs.popleft()
            taken = values
        else:
            taken, run[1] = values[:n], values[n:]
            run[0] = start + n
        self.count -= len(taken)
        self.next_index = start + len(taken)
        block = Block(start, len(taken))
        return Chunk(block, 0, block.n, self.encode(taken, start))


class Metered:
    """A farm's input (a ``Source`` or a ``Feed``) read no further than ``allow`` items at
    a time (None: as far as the scheduler wants): the farm before a full queue reads
    only what the queue has room for, so its chunks do not grow past what the next
    farm can take."""

    def __init__(self, source) -> None:
        self.source = source
        self.allow: int | None = None
        self.read_out = 0  # items read out, in all

    def read(self, n: int) -> Chunk | None:
        if self.allow is not None:
            n = min(n, self.allow)
            if n <= 0:
                return None
        chunk = self.source.read(n)
        if chunk is not None:
            self.read_out += chunk.n
            if self.allow is not None:
                self.allow -= chunk.n
        return chunk

    def left(self) -> int | None:
        return self.source.left()

    @property
    def done(self) -> bool:
        return self.source.done

    @property
    def total(self) -> int | None:
        return self.source.total

    @property
    def next_index(self) -> int:
        return self.source.next_index

    @property
    def count(self) -> int:
        return self.source.count

    @property
    def closed(self) -> bool:
        return self.source.closed

    def put(self, start: int, values: list) -> None:
        self.source.put(start, values)

    def close(self) -> None:
        self.source.close()
