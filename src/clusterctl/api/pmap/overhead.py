"""The controller's own CPU cost per chunk, measured while the map runs.

Every chunk costs the map's thread the same work, however many items it holds: choosing
a node, writing the request, polling, reading and routing the answer. With many slots
that work adds up: 100 one-slot nodes answering 10 ms chunks are 10,000 messages a
second, more than one core can handle. ``Sizing`` makes chunks longer as this cost times
the number of slots grows (docs/how-it-works.md, section "pmap: chunks, windows and
read-ahead").

What is measured is the map's thread's CPU time (``time.thread_time``) while it works for
the map, not while the caller consumes results, without the pickling of items and the
unpickling of results: those grow with the chunk, and bigger chunks would not save them.
"""

from __future__ import annotations

import time

from clusterctl.api.pmap.tuning import COST_SAMPLE_CHUNKS


class ControllerCost:
    """CPU seconds the map's thread spends per chunk answered (``per_chunk``; None until
    the first sample of ``COST_SAMPLE_CHUNKS`` answers). Not ``active`` (chunks of a size
    the caller fixed), it measures nothing and costs nothing."""

    def __init__(self, active: bool = True) -> None:
        self.active = active
        self.per_chunk: float | None = None
        self._spent = 0.0  # CPU seconds of the map's own work since the last sample
        self._chunks = 0  # chunks answered since then
        self._resumed: float | None = None  # thread time when the map's thread resumed

    def resume(self) -> None:
        """The map's thread works for the map from now on."""
        if self.active:
            self._resumed = time.thread_time()

    def pause(self) -> None:
        """The map's thread leaves the map (to the caller, with results)."""
        if self._resumed is not None:
            self._spent += time.thread_time() - self._resumed
            self._resumed = None

    def clock(self) -> float:
        """The thread time now, to pass to ``item_work`` later (0.0 when not active)."""
        return time.thread_time() if self.active else 0.0

    def item_work(self, since: float) -> None:
        """Work that grows with the items (pickling them, unpickling results) ran from
        ``since`` (``clock()``) until now: not a cost of the message."""
        if self.active:
            self._spent -= time.thread_time() - since

    def answered(self) -> None:
        """One more chunk was answered; every ``COST_SAMPLE_CHUNKS``, a new sample."""
        self._chunks += 1
        if self._chunks < COST_SAMPLE_CHUNKS or self._resumed is None:
            return
        self.pause()
        sample = max(0.0, self._spent) / self._chunks
        self.per_chunk = sample if self.per_chunk is None else 0.7 * self.per_chunk + 0.3 * sample
        self._spent, self._chunks = 0.0, 0
        self.resume()
