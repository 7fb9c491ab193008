"""One parallel map: the loop in the caller's thread that connects the nodes, keeps the
scheduler busy and hands out the results; and ``pmap`` and ``pmap_results``."""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Iterable, Iterator

from clusterctl import errors
from clusterctl.api.pmap.blocks import FAILED, PENDING, Block
from clusterctl.api.pmap.buffer import ResultBuffer
from clusterctl.api.pmap.codec import codec_for
from clusterctl.api.pmap.crew import Crew, Member
from clusterctl.api.pmap.inbox import Inbox
from clusterctl.api.pmap.item_errors import ItemError, ItemErrors
from clusterctl.api.pmap.options import Options
from clusterctl.api.pmap.outcome import Outcome
from clusterctl.api.pmap.scheduler import Scheduler
from clusterctl.api.pmap.source import Source
from clusterctl.api.pmap.stats import NodeStats, PmapStats
from clusterctl.api.pmap.tuning import DEFAULT_POISON_AFTER, WAIT_SECONDS


class PMap:
    """One parallel map: its live statistics, and its outcomes.

    ``pmap`` and ``pmap_results`` wrap it; use it directly to watch ``stats`` while it
    runs (the CLI's progress display does). Iterate ``values()`` or ``outcomes()``, once.
    """

    def __init__(self, cluster, fn: Callable[[Any], Any] | str, iterable: Iterable[Any], *,
                 ordered: bool = True, chunksize: int | None = None, retries: int = 0,
                 retry_on: tuple[type[BaseException], ...] | None = None,
                 on_error: str = "raise", limit: int | None = None,
                 poison_after: int = DEFAULT_POISON_AFTER, nodes: Iterable[str] | None = None,
                 speculate: bool = True, total: int | None = None,
                 item_timeout: float | None = None) -> None:
        codec = codec_for(fn)
        self.options = Options(ordered=ordered, chunksize=chunksize, retries=retries,
                               retry_on=retry_on, on_error=on_error, poison_after=poison_after,
                               speculate=speculate, item_timeout=item_timeout)
        source = Source(iterable, total=total, limit=limit, encode=codec.encode)
        self.cluster = cluster
        self.names = cluster.node_names(nodes)
        if not self.names:
            raise errors.UsageError("pmap was given no nodes to run on")
        self.stats = PmapStats(total=source.total, nodes={n: NodeStats(n) for n in self.names})
        self._inbox = Inbox()
        self._buffer = ResultBuffer(ordered)
        self._scheduler = Scheduler(self.options, self.stats, source, self._buffer,
                                    self._inbox, codec)
        recording = getattr(cluster, "recording", None)
        if recording is not None:
            self._scheduler.post = recording.posting(self._scheduler.post,
                                                             f"pmap {codec.name}")
        self._member = Member(self._scheduler, self.names)
        self._crew = Crew(cluster, self._inbox, [self._member])
        self._started = False

    @property
    def failures(self) -> list[ItemError]:
        """``on_error="collect"``: every item failed so far."""
        return self._scheduler.failures

    # -- what the caller iterates ------------------------------------------------------

    def values(self, *, indexed: bool = False) -> Iterator[Any]:
        """The results (in input order unless ``ordered=False``), failed items per
        ``on_error``; with ``indexed``, ``(index, result)`` pairs."""
        raise_mode = self.options.on_error == "raise"
        blocks = self._blocks()
        try:
            for block in blocks:
                if not block.errors:
                    if indexed:
                        yield from zip(itertools.count(block.start), block.values)
                    else:
                        yield from block.values
                    continue
                found = block.errors
                for j, value in enumerate(block.values):
                    if value is FAILED:
                        if raise_mode:
                            raise found[j]
                    elif value is not PENDING:
                        yield (block.start + j, value) if indexed else value
        finally:
            blocks.close()
        if self.options.on_error == "collect" and self.failures:
            self.failures.sort(key=lambda e: e.index)
            raise ItemErrors(self.failures, self.stats.done)

    def outcomes(self) -> Iterator[Outcome]:
        """One ``Outcome`` per item, errors as values; ``on_error`` does not apply."""
        self.options.on_error = "values"
        blocks = self._blocks()
        try:
            for block in blocks:
                start, found = block.start, block.errors
                for j, value in enumerate(block.values):
                    if value is FAILED:
                        yield Outcome(start + j, error=found[j])
                    else:
                        yield Outcome(start + j, value)
        finally:
            blocks.close()

    # -- the loop ----------------------------------------------------------------------

    def _blocks(self) -> Iterator[Block]:
        if self._started:
            raise errors.UsageError("a pmap can be iterated only once")
        self._started = True
        self.stats.started = time.monotonic()
        self._inbox.open()
        scheduler = self._scheduler
        crew = self._crew
        cost = scheduler.cost  # the map's own CPU: not while the caller has the results
        cost.resume()
        try:
            crew.start()
            while True:
                scheduler.fill()
                block = self._ready()
                if block is not None:
                    cost.pause()
                    yield block
                    cost.resume()
                    stop = scheduler.stop_index
                    if block.errors and stop is not None and self.options.ordered and \
                            block.start <= stop < block.start + block.n:
                        raise scheduler.stop_error
                    self._inbox.drain(None, self._handle)
                    continue
                if self._finished():
                    crew.settle()
                    return
                crew.check_alive(self._member)
                self._inbox.drain(WAIT_SECONDS, self._handle)
        finally:
            crew.shutdown(self._handle)
            self.stats.finished = time.monotonic()

    def _ready(self) -> Block | None:
        scheduler = self._scheduler
        if not self.options.ordered and scheduler.stop_error is not None:
            raise scheduler.stop_error
        return self._buffer.ready(scheduler.stop_index)

    def _finished(self) -> bool:
        stopped = self.options.ordered and self._scheduler.stop_index is not None
        return self._buffer.empty() and (self._scheduler.source.done or stopped)

    def _handle(self, event) -> None:
        if self._crew.is_join(event):
            self._crew.joined(*event[1:])
        else:
            self._scheduler.answer(*event)


# -- the API ----------------------------------------------------------------------------

def pmap(cluster, fn: Callable[[Any], Any], iterable: Iterable[Any], *, ordered: bool = True,
         chunksize: int | None = None, retries: int = 0,
         retry_on: tuple[type[BaseException], ...] | None = None, on_error: str = "raise",
         limit: int | None = None, poison_after: int = DEFAULT_POISON_AFTER,
         nodes: Iterable[str] | None = None, speculate: bool = True,
         item_timeout: float | None = None) -> Iterator[Any]:
    """Apply ``fn`` to every item of ``iterable`` over all nodes' slots; yield the results.

    ``fn`` is a function, which travels pickled by value, or a ``"module.function"`` name
    that every node imports: then items and results travel as plain data (JSON values,
    tuples, bytes), nothing is pickled, and restricted hosts that allow the function
    take part (a restricted host never takes part in a map of pickled code).

    - ``ordered``: results in input order (default), else as they finish.
    - ``chunksize``: items per message; None adapts it to the function's speed.
    - ``retries``: how often an item whose function raised is tried again (on another
      node if there is one); ``retry_on`` limits that to these exception types.
    - ``on_error``: ``"raise"`` (stop at the first failed item, after yielding the
      results before it, and raise its ``ItemError`` with the remote traceback),
      ``"skip"`` (leave failed items out), ``"collect"`` (leave them out, then raise
      ``ItemErrors`` listing all of them).
    - ``limit``: read at most this many items (for endless generators).
    - ``poison_after``: an item that crashed its worker, or was running when its node
      was lost, this many times is failed as ``PoisonItem``.
    - ``nodes``: the node names to use (default: the whole world).
    - ``speculate``: start items that are overdue (stuck, or queued behind a long item)
      again on another slot; the first result wins and the other run is cancelled.
      Turn it off if running an item twice would be wrong (a lost node's items are
      always run again, so the function should be idempotent anyway).
    - ``item_timeout``: seconds an item may run; one that runs longer is stopped (its
      worker is killed) and fails like an exception, as ``ItemError`` with
      ``remote_type`` ``"ItemTimeout"`` (retried under ``retries``). The limit counts
      from when the item can have started on its node, so it may be generous, never short.

    The iterator does the work as it is consumed; leaving it early cancels the rest.
    Raises ``AllNodesLost`` if no node is left to finish the work.
    """
    run = PMap(cluster, fn, iterable, ordered=ordered, chunksize=chunksize, retries=retries,
               retry_on=retry_on, on_error=on_error, limit=limit, poison_after=poison_after,
               nodes=nodes, speculate=speculate, item_timeout=item_timeout)
    return run.values()


def pmap_results(cluster, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
                 ordered: bool = True, chunksize: int | None = None, retries: int = 0,
                 retry_on: tuple[type[BaseException], ...] | None = None,
                 limit: int | None = None, poison_after: int = DEFAULT_POISON_AFTER,
                 nodes: Iterable[str] | None = None, speculate: bool = True,
                 item_timeout: float | None = None) -> Iterator[Outcome]:
    """Like ``pmap``, but yield one ``Outcome`` per item (``index``, ``value`` or ``error``),
    so a failed item never stops the others."""
    run = PMap(cluster, fn, iterable, ordered=ordered, chunksize=chunksize, retries=retries,
               retry_on=retry_on, limit=limit, poison_after=poison_after, nodes=nodes,
               speculate=speculate, item_timeout=item_timeout)
    return run.outcomes()
