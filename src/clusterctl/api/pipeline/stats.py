"""What a pipeline measures per stage, live and at the end: the figures the seed papers
took by hand from their traces, and the stage that holds the run back.

Each farm's figures are measured over its part of the run: from the first item it took
to the run's last outcome handed out (or now, while it runs).

- T_S, the service time: seconds the stage's function took per item, on one slot.
- replicas: the slots serving the stage, on average over that time (a node that joined
  later counts from then, a lost one until then). A farm's slots (or its fixed
  ``replicas=``) are shared among the stages fused in it in proportion to their time.
- capacity = replicas / T_S: the items per second the stage could serve.
- T_A, the inter-arrival time: that time over the items the stage served, the mean
  time between its items.
- ρ = T_S / (replicas × T_A): the slot time the stage used over the slot time it had,
  that is the items per second it served against its capacity. It cannot pass 1; near
  1 the stage's slots are full. In a farm of fused stages every stage has the farm's ρ.

Why not T_A from the times items entered the stage, first to last: under backpressure
that misleads. The stage holding the run back takes an item only when it has served
one, so its intake keeps its own pace and its ρ stays at 1 or below however far
behind it is; a faster stage before it takes every item into the queue between them
in a burst and then idles, so over its intake its T_A is short and its ρ as high or
higher (`a`, 0.2 s on 2 slots, was once named with ρ 0.89, while `b`, 0.5 s on 1
slot, had 34 items waiting). Up to the run's end, every stage carries the same items
(fewer past failed ones), so ρ is highest where the capacity is least: the stage the
run waits for.

The bottleneck is the stage with the highest load: its ρ, plus the slot time the items
waiting in its queue will take. At the end nothing waits and the load is ρ; while the
run goes, a stage whose queue grows has items coming faster than it serves them, and
is named even before its ρ passes that of a stage before it, busy while it filled that
queue. Below BUSY_RHO no stage is busy: the input or the consumer of the results sets
the pace. In a farm of fused stages, which share their load, the stage taking most of
the farm's slot time is the one named.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from clusterctl.api.pmap.stats import Timed

MIN_SPAN = 1e-3  # a run shorter than this from its first item has no rate to tell yet
BUSY_RHO = 0.6  # below this no stage is busy: the input or the consumer sets the pace


@dataclass
class StageStats:
    """Counters of one stage (read by the display while the pipeline runs)."""

    index: int
    name: str
    group: int  # the farm it runs in
    head: bool  # the first stage of its farm (its items come from a queue, or the input)
    items_in: int = 0  # head: items that entered the farm (inner stages: the stage before's out)
    items_out: int = 0  # items that left it with a result (the last stage: handed out)
    failed: int = 0
    retries: int = 0
    busy: float = 0.0  # seconds in the function ...
    timed: int = 0  # ... over this many items
    queue: int = 0  # head of a later farm: items waiting in its queue
    queue_max: int = 0
    first_in: float | None = None  # head: when the farm took its first item (its figures start)


@dataclass
class FarmStats:
    """The share of slots a farm has: its fixed ``replicas``, else its nodes' slots (the
    running nodes' now; over the run they are counted from its nodes' stats)."""

    replicas: int | None
    slots: int = 0


@dataclass
class StageFigures:
    index: int
    name: str
    items_in: int
    items_out: int
    failed: int
    retries: int
    queue: int
    queue_max: int
    replicas: float | None
    t_s: float | None
    t_a: float | None
    rho: float | None
    share: float  # of its farm's busy time
    capacity: float | None  # items per second it could serve: replicas / T_S
    load: float | None  # ρ, and the slot time the items waiting in its farm's queue will take
    group: int  # its farm


@dataclass
class PipelineStats(Timed):
    stages: list[StageStats]
    farms: list[FarmStats]
    total: int | None = None
    done: int = 0  # results handed out, and items failed (each as soon as it failed)
    failed: int = 0
    started: float | None = None
    ended: float | None = None  # the work ended (the last outcome, or a stop), before the wind-down
    finished: float | None = None
    farm_nodes: list[dict] = field(default_factory=list)  # per farm: node -> its NodeStats

    @property
    def nodes(self) -> dict[str, str]:
        """Each node's state (``running``, ``lost: why``, ...), the worst over the farms."""
        states: dict[str, str] = {}
        for nodes in self.farm_nodes:
            for name, node in nodes.items():
                state = node.state if not node.reason else f"{node.state}: {node.reason}"
                if name not in states or states[name] in ("running", "connecting"):
                    states[name] = state
        return states



def figures(stats: PipelineStats, now: float | None = None) -> list[StageFigures]:
    """Every stage's T_S, T_A, replicas, ρ and capacity as of ``now`` (or the end)."""
    end = stats.ended or stats.finished or now or time.monotonic()
    rows = []
    for stage in stats.stages:
        mates = [s for s in stats.stages if s.group == stage.group]
        head = mates[0]
        start = head.first_in
        span = end - start if start is not None and end - start > MIN_SPAN else None
        farm_busy = sum(s.busy for s in mates)
        share = stage.busy / farm_busy if farm_busy > 0 else 1.0 / len(mates)
        slots = farm_slots(stats, stage.group, start, end)
        replicas = slots * share if slots else None
        t_s = stage.busy / stage.timed if stage.timed else None
        t_a = span / stage.timed if span and stage.timed else None
        rho = capacity = load = None
        if t_s is not None and t_a is not None and replicas:
            rho = t_s / (replicas * t_a)
            capacity = replicas / t_s
            load = rho + head.queue / (capacity * span)  # the queue in front of the farm
        rows.append(StageFigures(stage.index, stage.name, stage.items_in, stage.items_out,
                                 stage.failed, stage.retries, stage.queue, stage.queue_max,
                                 replicas, t_s, t_a, rho, share, capacity, load, stage.group))
    return rows


def farm_slots(stats: PipelineStats, group: int, start: float | None, end: float) -> float:
    """The slots farm ``group`` had on average from ``start`` (its first item) to ``end``:
    each of its nodes' slots while it was in the farm (one that joined later from then,
    a lost one until it was lost, one that has gone since still for its time), capped by
    ``replicas=``. Without its nodes' stats, or before its first item: the slots it has now."""
    farm = stats.farms[group]
    nodes = stats.farm_nodes[group].values() if group < len(stats.farm_nodes) else ()
    joined = [n for n in nodes if n.joined is not None and n.slots]
    slots = float(farm.slots)
    if start is not None and end > start and joined:
        seconds = sum(n.slots * max(0.0, min(end, n.left or end) - max(start, n.joined))
                      for n in joined)
        slots = seconds / (end - start)
    if farm.replicas is not None:
        slots = min(farm.replicas, slots) if slots else farm.replicas
    return slots


def bottleneck(rows: list[StageFigures]) -> tuple[StageFigures | None, str]:
    """The stage holding the pipeline back, and why, in one line: the stage with the
    highest load (its ρ, and the items waiting for it), if that is busy."""
    measured = [r for r in rows if r.load is not None]
    if not measured:
        return None, "not measured yet: no item has come through"
    top = max(measured, key=lambda r: (round(r.load, 2), r.share))
    name = f"stage {top.index + 1} ({top.name})"
    if top.load < BUSY_RHO:
        return None, (f"no stage is busy (the highest ρ is {top.rho:.2f}, {name}): the input "
                      "or the consumer of the results sets the pace")
    farm = [r for r in rows if r.group == top.group]
    why = [f"ρ {top.rho:.2f}"]
    if len(farm) > 1:  # fused: the farm's slots serve its items through all of its stages
        why.append(f"{top.share:.0%} of its farm's slot time")
        why.append(f"the farm's {_slots(top.replicas / top.share)} serve at most "
                   f"{_rate(top.capacity)} items/s")
    else:
        slots = _slots(top.replicas)
        why.append(f"its {slots} {'serves' if slots == '1 slot' else 'serve'} at most "
                   f"{_rate(top.capacity)} items/s")
    queue_max = farm[0].queue_max  # (the queue in front of the farm)
    if queue_max > 0:
        why.append(f"its queue grew to {queue_max} item{'s' * (queue_max != 1)}")
    return top, f"{name}: " + ", ".join(why)


def _slots(n: float) -> str:
    """``1 slot``, ``4 slots``, ``3.5 slots``."""
    count = f"{n:.0f}" if abs(n - round(n)) < 0.05 else f"{n:.1f}"
    return f"{count} slot" if count == "1" else f"{count} slots"


def _rate(per_second: float) -> str:
    """Items per second as the verdict shows them: ``0.25``, ``2.0``, ``25.0``, ``1,250``."""
    if per_second >= 100:
        return f"{per_second:,.0f}"
    return f"{per_second:.1f}" if per_second >= 1 else f"{per_second:.2g}"
