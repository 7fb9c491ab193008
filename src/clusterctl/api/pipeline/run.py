"""One pipeline run: the loop in the caller's thread that keeps every farm busy, moves
results from each farm to the queue of the next, holds a farm back while the queue
after it is full, and hands out the last farm's results; and ``pipeline`` and
``pipeline_results``. docs/how-it-works.md, section "Pipelines", says why it is so."""

from __future__ import annotations

import dataclasses
import heapq
import time
from typing import Any, Callable, Iterable, Iterator

from clusterctl import errors
from clusterctl.api.pipeline.farm import Farm
from clusterctl.api.pipeline.feed import Feed, Metered
from clusterctl.api.pipeline.stages import farm_nodes, parse_stages, plan
from clusterctl.api.pipeline.stats import (FarmStats, PipelineStats, StageStats, bottleneck,
                                           figures)
from clusterctl.api.pmap.crew import Crew
from clusterctl.api.pmap.inbox import Inbox
from clusterctl.api.pmap.item_errors import ItemError, ItemErrors
from clusterctl.api.pmap.options import ON_ERROR, Options
from clusterctl.api.pmap.outcome import Outcome
from clusterctl.api.pmap.source import Source, pickle_items
from clusterctl.api.pmap.tuning import DEFAULT_POISON_AFTER, WAIT_SECONDS

QUEUE_SAMPLE_SECONDS = 0.1  # traced: how often the queues' lengths are recorded


class Pipeline:
    """One pipeline: its live statistics (``stats``; ``figures(stats)`` gives each stage's
    T_S, T_A, replicas and ρ, ``bottleneck`` names the stage holding the run back) and
    its outcomes. Iterate ``values()`` or ``outcomes()`` once, or ``fold`` the values."""

    def __init__(self, cluster, stages, iterable: Iterable[Any], *, ordered: bool = True,
                 retries: int = 0, retry_on: tuple[type[BaseException], ...] | None = None,
                 on_error: str = "raise", limit: int | None = None,
                 poison_after: int = DEFAULT_POISON_AFTER, nodes: Iterable[str] | None = None,
                 speculate: bool = True, total: int | None = None,
                 item_timeout: float | None = None) -> None:
        if on_error not in ON_ERROR:
            raise errors.UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, "
                                    f"not {on_error!r}")
        specs = parse_stages(stages)
        self.on_error = on_error
        self.ordered = ordered
        names = cluster.node_names(nodes)
        if not names:
            raise errors.UsageError("the pipeline was given no nodes to run on")
        known = cluster.node_names(None)
        groups = plan(specs)
        pinned = {n for spec in specs if spec.nodes for n in spec.nodes}
        self._inbox = Inbox()
        stage_stats: list[StageStats] = []
        farm_stats: list[FarmStats] = []
        self.farms: list[Farm] = []
        source = Metered(Source(iterable, total=total, limit=limit, encode=pickle_items))
        for number, group in enumerate(groups):
            on = farm_nodes(group, names, pinned, known)
            options = Options(ordered=ordered, retries=retries, retry_on=retry_on,
                              on_error="raise" if on_error == "raise" else "skip",
                              poison_after=poison_after, speculate=speculate,
                              item_timeout=item_timeout, max_inflight=group[0].replicas)
            mine = [StageStats(s.index, s.name, number, j == 0) for j, s in enumerate(group)]
            stage_stats += mine
            farm_stats.append(FarmStats(group[0].replicas))
            self.farms.append(Farm(group, on, options, source, self._inbox, mine,
                                   farm_stats[-1], getattr(cluster, "recording", None)))
            source = Metered(Feed(pickle_items))
        self.farms[-1].last = True
        self.stats = PipelineStats(stage_stats, farm_stats, total=self.farms[0].source.total,
                                   farm_nodes=[f.stats.nodes for f in self.farms])
        self._crew = Crew(cluster, self._inbox, [f.member for f in self.farms])
        self.failures: list[ItemError] = []  # on_error="collect": every item failed so far
        self._pending: list[tuple[int, ItemError]] = []  # failed earlier, not handed out yet
        self._started = False
        self._recording = getattr(cluster, "recording", None)
        self._sampled = 0.0  # when the queues' lengths were last put in the trace

    # -- what the caller iterates ------------------------------------------------------

    def values(self, *, indexed: bool = False) -> Iterator[Any]:
        """The results (in input order unless ``ordered=False``); failed items as
        ``on_error`` says. With ``indexed``, ``(index, result)`` pairs."""
        stats, last = self.stats, self.stats.stages[-1]
        for start, values, error in self._outputs():
            if error is None:
                for offset, value in enumerate(values):  # counted as taken: a caller may
                    stats.done += 1                      # stop part way through a run
                    last.items_out += 1
                    yield (start + offset, value) if indexed else value
            elif self.on_error == "raise":
                raise error
        if self.on_error == "collect" and self.failures:
            self.failures.sort(key=lambda e: e.index)
            raise ItemErrors(self.failures, self.stats.done)

    def outcomes(self) -> Iterator[Outcome]:
        """One ``Outcome`` per item, errors as values; ``on_error`` does not apply."""
        self.on_error = "values"
        for farm in self.farms:  # a failed item stops no farm: it is handed out in its place
            farm.scheduler.options.on_error = "skip"
        stats, last = self.stats, self.stats.stages[-1]
        for start, values, error in self._outputs():
            if error is not None:
                yield Outcome(start, error=error)
                continue
            for offset, value in enumerate(values):
                stats.done += 1
                last.items_out += 1
                yield Outcome(start + offset, value)

    def fold(self, fn: Callable[[Any, Any], Any], initial: Any = None) -> Any:
        """Fold the results into one value, here, as they come out (in input order unless
        ``ordered=False``): ``fn(accumulator, result)``, starting from ``initial``."""
        accumulator = initial
        for value in self.values():
            accumulator = fn(accumulator, value)
        return accumulator

    # -- the loop ----------------------------------------------------------------------

    def _outputs(self) -> Iterator[tuple[int, Any, ItemError | None]]:
        """Runs of results ``(start, values, None)`` and failed items ``(index, None,
        error)``, in input order unless unordered."""
        if self._started:
            raise errors.UsageError("a pipeline can be iterated only once")
        self._started = True
        self.stats.started = time.monotonic()
        self._inbox.open()
        crew = self._crew
        last = self.farms[-1]
        try:
            crew.start()
            while True:
                self._step()
                if not self.ordered and self._pending:
                    yield from self._flush_failures(None)
                taken = last.take()
                if taken is not None:
                    yield from self._handed_out(*taken)
                    self._inbox.drain(None, self._handle)
                    continue
                if last.finished():
                    self.stats.ended = time.monotonic()  # (not the wait for nodes still starting)
                    crew.settle()
                    yield from self._flush_failures(None)
                    self._raise_stop()
                    return
                for farm in self.farms:
                    if not farm.finished():
                        crew.check_alive(farm.member)
                self._inbox.drain(WAIT_SECONDS, self._handle)
        finally:
            if self.stats.ended is None:  # stopped early: an error, Ctrl-C, a caller gone
                self.stats.ended = time.monotonic()
            crew.shutdown(self._handle)
            self.stats.finished = time.monotonic()
            for farm in self.farms:
                farm.count_retries()
            if self._recording is not None:
                self._recording.describe_run(describe(self))

    def _step(self) -> None:
        """Hand out work where the queue after a farm has room; move what each farm put
        out on to the next farm's queue; close a queue once the farm before is done."""
        now = time.monotonic()
        farms = self.farms
        self.stats.total = farms[0].source.total
        if self._recording is not None and now - self._sampled >= QUEUE_SAMPLE_SECONDS:
            self._sampled = now
            self._recording.sample("queue", {f.label: f.feed.count for f in farms[1:]})
        for k, farm in enumerate(farms):
            downstream = farms[k + 1] if k + 1 < len(farms) else None
            if downstream is None:
                farm.scheduler.fill()
            elif downstream.wants_more():
                farm.source.allow = downstream.queue_cap() - downstream.source.count - farm.held()
                farm.scheduler.fill()
            # noted as read, not at the next step: that comes once an answer did, and the
            # run's clock would start a round trip late
            farm.note_arrivals(time.monotonic())
            if downstream is None:
                continue
            feed = downstream.source
            while (taken := farm.take()) is not None:
                runs, failures = taken
                for start, values in runs:
                    feed.put(start, values)
                self._failed(failures)
            if not feed.closed and farm.finished():
                feed.close()

    def _handed_out(self, runs, failures) -> Iterator[tuple[int, Any, ItemError | None]]:
        """The last farm's block: runs of results ``(start, values, None)``, and (in
        order) the items that failed before them, in this farm or earlier, as
        ``(index, None, error)``."""
        self._failed(failures)
        for start, values in runs:
            yield from self._flush_failures(start)
            yield start, values, None  # (each value counts in ``done`` as it is taken)
        if not self.ordered:
            yield from self._flush_failures(None)

    def _failed(self, failures: list[tuple[int, ItemError]]) -> None:
        """Items failed, in any farm: each is done (its outcome is known) and failed now,
        though it is handed out in its place in the order."""
        for index, error in failures:
            self.stats.done += 1
            self.stats.failed += 1
            if self.on_error == "collect":
                self.failures.append(error)
            heapq.heappush(self._pending, (index, id(error), error))

    def _flush_failures(self, before: int | None) -> Iterator[tuple[int, Any, ItemError]]:
        """The failed items not handed out yet with an index below ``before`` (all: None)."""
        pending = self._pending
        while pending and (before is None or pending[0][0] < before):
            index, _, error = heapq.heappop(pending)
            if self.on_error in ("raise", "values"):
                yield index, None, error

    def _raise_stop(self) -> None:
        """on_error="raise", in order: the run stopped at its first failed item."""
        stops = [f.scheduler.stop_error for f in self.farms if f.scheduler.stop_error is not None]
        if stops and self.on_error == "raise":
            raise min(stops, key=lambda e: e.index)

    def _handle(self, event) -> None:
        if self._crew.is_join(event):
            self._crew.joined(*event[1:])
        else:
            farm, answer = event
            farm.scheduler.answer(*answer)


def describe(run: Pipeline) -> dict:
    """What a trace keeps of a pipeline: its farms, and each stage's figures and the
    bottleneck as the run's own display had them."""
    rows = figures(run.stats)
    neck, why = bottleneck(rows)
    return {"kind": "pipeline", "farms": [{"label": f.label, "nodes": f.member.names} for f in run.farms],
            "stages": [dataclasses.asdict(row) for row in rows],
            "bottleneck": None if neck is None else neck.index, "why": why,
            "done": run.stats.done, "failed": run.stats.failed, "elapsed": run.stats.elapsed()}


# -- the API ----------------------------------------------------------------------------

def pipeline(cluster, stages, iterable: Iterable[Any], **options: Any) -> Iterator[Any]:
    """Run every item of ``iterable`` through ``stages`` over the world's slots; yield
    the results (see ``Cluster.pipeline``)."""
    return Pipeline(cluster, stages, iterable, **options).values()


def pipeline_results(cluster, stages, iterable: Iterable[Any], **options: Any) -> Iterator[Outcome]:
    """Like ``pipeline``, but yield one ``Outcome`` per item, errors as values."""
    return Pipeline(cluster, stages, iterable, **options).outcomes()
