"""One farm of a pipeline: consecutive stages run together on a set of nodes, by a pmap
scheduler of their own (chunks, windows, retries, lost nodes, exactly once), fed from
the input or from the bounded queue the farm before fills."""

from __future__ import annotations

import time

import cloudpickle

from clusterctl.api.pipeline.feed import Feed
from clusterctl.api.pipeline.stages import StageSpec, group_label
from clusterctl.api.pipeline.stats import FarmStats, StageStats
from clusterctl.api.pmap.blocks import FAILED, PENDING
from clusterctl.api.pmap.buffer import ResultBuffer
from clusterctl.api.pmap.codec import PickledItems
from clusterctl.api.pmap.crew import Member
from clusterctl.api.pmap.inbox import Inbox
from clusterctl.api.pmap.item_errors import ItemError
from clusterctl.api.pmap.options import Options
from clusterctl.api.pmap.scheduler import Scheduler
from clusterctl.api.pmap.stats import NodeStats, PmapStats
from clusterctl.node import stages as node_stages

# The node's package has another name on a host: its Stages class travels by value.
cloudpickle.register_pickle_by_value(node_stages)

QUEUE_MIN_ITEMS = 64  # a queue between farms holds at least this many items ...
QUEUE_MAX_BYTES = 64 << 20  # ... and, beyond twice what the farm has in flight, this many bytes
CAP_SECONDS = 0.05  # how often a queue's capacity is worked out again


class Farm:
    """``group``'s stages on ``names``; ``source`` is the input (a ``Source``) or the queue
    in front (a ``Feed``), metered (``Metered``)."""

    def __init__(self, group: list[StageSpec], names: list[str], options: Options,
                 source, inbox: Inbox, stages: list[StageStats], farm_stats: FarmStats,
                 recording=None) -> None:
        self.group = group
        self.label = group_label(group)
        self.stages = stages  # this farm's, in order
        self.farm_stats = farm_stats
        self._by_label = {spec.label: i for i, spec in enumerate(group)}
        self.fused = len(group) > 1  # a lone stage runs as it is: its chunks' time is its own
        codec = PickledItems(node_stages.Stages([s.fn for s in group], [s.label for s in group])
                             if self.fused else group[0].fn)
        codec.name = self.label
        self.source = source
        self.stats = PmapStats(total=source.total, nodes={n: NodeStats(n) for n in names})
        self.buffer = ResultBuffer(options.ordered)
        self.scheduler = Scheduler(options, self.stats, source, self.buffer, inbox, codec,
                                   post=lambda event: inbox.post((self, event)))
        if recording is not None:
            self.scheduler.post = recording.posting(self.scheduler.post, self.label)
        self.member = Member(self.scheduler, names, self.label)
        self.last = False  # the pipeline's last farm: its last stage's out is counted as handed out
        self.taken = 0  # items handed out of this farm (results and failures)
        self._cap, self._cap_at = QUEUE_MIN_ITEMS, 0.0
        self._stopped: ItemError | None = None  # unordered: the error the farm stopped at

    @property
    def feed(self) -> Feed | None:
        inner = self.source.source
        return inner if isinstance(inner, Feed) else None

    def held(self) -> int:
        """Items read into this farm and not handed out yet (in flight, or held back)."""
        return self.source.read_out - self.taken

    # -- the queue in front ------------------------------------------------------------

    def wants_more(self) -> bool:
        """Whether the queue in front has room (the farm before may hand out more)."""
        feed = self.feed
        return feed is None or feed.count < self.queue_cap()

    def queue_cap(self) -> int:
        """Twice the items this farm can have in flight (at least QUEUE_MIN_ITEMS), within
        QUEUE_MAX_BYTES of pickled items: enough to keep its slots busy, bounded. Worked
        out again every CAP_SECONDS (its windows and chunks change slowly)."""
        now = time.monotonic()
        if now - self._cap_at >= CAP_SECONDS:
            self._cap_at = now
            self._cap = self._queue_cap()
        return self._cap

    def _queue_cap(self) -> int:
        scheduler = self.scheduler
        sizing = scheduler.sizing
        running = scheduler.running()
        slots = sum(n.slots for n in running) or 1
        inflight = 0
        for node in running:
            per_chunk = sizing.target_items(node, None, slots) if sizing.per_item(node) else 1
            inflight += node.window * per_chunk
        cap = scheduler.options.max_inflight
        if cap is not None:
            inflight = min(inflight, cap * max(1, sizing.max_n or 1) * 2)
        items = max(QUEUE_MIN_ITEMS, 2 * inflight)
        per_item = sizing.item_bytes
        if per_item:
            items = min(items, max(2 * slots, int(QUEUE_MAX_BYTES // per_item)))
        return items

    def note_arrivals(self, now: float) -> None:
        """Count the items that entered this farm (read from the input, or taken from its
        queue) and the items waiting in its queue; its first item starts its figures'
        clock."""
        head = self.stages[0]
        feed = self.feed
        arrived = self.source.read_out
        if arrived != head.items_in:
            if head.first_in is None:
                head.first_in = now
            head.items_in = arrived
        if feed is not None:
            head.queue = feed.count
            head.queue_max = max(head.queue_max, feed.count)
        self.farm_stats.slots = self.scheduler.roster.slots
        if self.source.done:
            self.stats.total = self.source.total

    # -- results out -------------------------------------------------------------------

    def finished(self) -> bool:
        scheduler = self.scheduler
        stopped = self.scheduler.options.ordered and scheduler.stop_index is not None
        return self.buffer.empty() and (self.source.done or stopped)

    def take(self):
        """The next block of results ready to go on, or None: ``(runs, failures)``, runs
        of consecutive ``[index, values]`` that succeeded and ``(index, ItemError)`` pairs,
        with every stage's counters brought up to date."""
        scheduler = self.scheduler
        stop_error = scheduler.stop_error
        if stop_error is not None and not scheduler.options.ordered and self._stopped is None:
            # on_error="raise", unordered: the failed item's block may never complete
            self._stopped = stop_error
            return [], [(stop_error.index, self._failed(stop_error))]
        block = self.buffer.ready(scheduler.stop_index)
        if block is None:
            return None
        self.taken += block.n
        if not block.errors and not block.remaining:  # every item came through: the common case
            values = block.values
            if self.fused:
                runs = [[block.start, [cell[0] for cell in values]]]
                busy = [sum(column) for column in zip(*[cell[1] for cell in values])]
            else:
                runs, busy = [[block.start, values]], None
            self._count(block.n, busy)
            return runs, []
        return self._sift(block)

    def _sift(self, block):
        """``take`` for a block with failed items, or stopped part way (on_error="raise")."""
        scheduler = self.scheduler
        stop = scheduler.stop_index if scheduler.options.ordered else None
        runs: list[list] = []
        failures: list[tuple[int, ItemError]] = []
        busy = [0.0] * len(self.stages) if self.fused else None
        ok = 0
        index = block.start
        for cell in block.values or ():
            if stop is not None and index > stop:
                break
            if cell is FAILED:
                error = block.errors[index - block.start]
                if error is not self._stopped:  # (handed out already)
                    failures.append((index, self._failed(error)))
            elif cell is not PENDING:
                if busy is not None:
                    cell, times = cell
                    for j, seconds in enumerate(times):
                        busy[j] += seconds
                ok += 1
                if runs and runs[-1][0] + len(runs[-1][1]) == index:
                    runs[-1][1].append(cell)
                else:
                    runs.append([index, [cell]])
            index += 1
        self._count(ok, busy)
        return runs, failures

    def _count(self, ok: int, busy: list[float] | None) -> None:
        """``ok`` more items came through every stage, taking ``busy`` seconds in each
        (None: a lone stage, whose time is its chunks', over the items they answered).
        The last farm's last stage counts its out as the pipeline hands its results out."""
        stages = self.stages
        if busy is None:
            stages[0].busy = sum(node.busy for node in self.stats.nodes.values())
            stages[0].timed = self.stats.done
        for j, stage in enumerate(stages):
            if busy is not None:
                stage.busy += busy[j]
                stage.timed += ok
            if not (self.last and j == len(stages) - 1):
                stage.items_out += ok
        self._pass_on()

    def _pass_on(self) -> None:
        """What left each fused stage entered the next."""
        stages = self.stages
        for j in range(1, len(stages)):
            stages[j].items_in = stages[j - 1].items_out

    def _failed(self, error: ItemError) -> ItemError:
        """Count a failed item at the stage it failed in (or the farm's first, if it
        cannot be told: a crash), and name that stage in its error."""
        at = self._by_label.get(error.where or "")
        if at is None:
            at = 0
            error.locate(self.label)
        for j, stage in enumerate(self.stages):
            if j < at:
                stage.items_out += 1
            elif j == at:
                stage.failed += 1
        self._pass_on()
        return error

    def count_retries(self) -> None:
        retried = self.stats.retried_in
        for spec, stage in zip(self.group, self.stages):
            stage.retries = retried.get(spec.label, 0)
        if len(self.stages) == 1:
            self.stages[0].retries = self.stats.retries
