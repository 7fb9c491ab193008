"""What a pipeline measures per stage, live and at the end: the figures the seed papers
took by hand from their traces.

- T_S, the service time: seconds the stage's function took per item, on one slot.
- T_A, the inter-arrival time: seconds between items entering the stage (taken from
  its queue, or read from the input; a farm's inner stages get the items as they
  leave the stage before, on the same slot).
- replicas: the slots serving the stage. A farm's slots (or its fixed ``replicas=``)
  are shared among the stages fused in it in proportion to the time each takes.
- ρ = T_S / (replicas × T_A): how busy those slots are. Near 1, the stage holds the
  pipeline back: it is the bottleneck. In a farm of fused stages every stage has the
  farm's ρ; the stage taking most of the farm's time is then the one to name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from clusterctl.api.pmap.stats import Timed

MIN_SPAN = 1e-3  # arrivals closer than this in all came at once: no T_A to tell
BUSY_RHO = 0.6  # below this no stage is busy: the input or the consumer sets the pace


@dataclass
class StageStats:
    """Counters of one stage (read by the display while the pipeline runs)."""

    index: int
    name: str
    group: int  # the farm it runs in
    head: bool  # the first stage of its farm (its items come from a queue, or the input)
    items_in: int = 0  # head: items that entered the farm (inner stages: the stage before's out)
    items_out: int = 0
    failed: int = 0
    retries: int = 0
    busy: float = 0.0  # seconds in the function, over the items that came out
    queue: int = 0  # head of a later farm: items waiting in its queue
    queue_max: int = 0
    first_in: float | None = None
    last_in: float | None = None
    input_closed: bool = False  # every item it will get has reached it


@dataclass
class FarmStats:
    """The share of slots a farm has: its fixed ``replicas``, else its running nodes' slots."""

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


@dataclass
class PipelineStats(Timed):
    stages: list[StageStats]
    farms: list[FarmStats]
    total: int | None = None
    done: int = 0  # items with a final outcome (value or error)
    failed: int = 0
    started: float | None = None
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
    """Every stage's T_S, T_A, replicas and ρ as of ``now`` (or the end)."""
    now = stats.finished or now or time.monotonic()
    rows = []
    for stage in stats.stages:
        farm = stats.farms[stage.group]
        mates = [s for s in stats.stages if s.group == stage.group]
        farm_busy = sum(s.busy for s in mates)
        share = stage.busy / farm_busy if farm_busy > 0 else 1.0 / len(mates)
        capacity = farm.replicas if farm.replicas is not None else farm.slots
        if farm.replicas is not None and farm.slots:
            capacity = min(farm.replicas, farm.slots)
        items_in = stage.items_in
        head = stage if stage.head else next(s for s in mates if s.head)
        t_s = stage.busy / stage.items_out if stage.items_out else None
        t_a = None  # measured over two arrivals at least, some time apart
        if items_in >= 2 and head.first_in is not None:
            end = head.last_in if head.input_closed and head.last_in is not None else now
            if end - head.first_in > MIN_SPAN:
                t_a = (end - head.first_in) / (items_in - 1)
        replicas = capacity * share if capacity else None
        rho = t_s / (replicas * t_a) if t_s is not None and t_a and replicas else None
        rows.append(StageFigures(stage.index, stage.name, items_in, stage.items_out, stage.failed,
                                 stage.retries, stage.queue, stage.queue_max, replicas, t_s, t_a,
                                 rho, share))
    return rows


def bottleneck(rows: list[StageFigures]) -> tuple[StageFigures | None, str]:
    """The stage holding the pipeline back, and why, in one line."""
    measured = [r for r in rows if r.rho is not None]
    if not measured:
        return None, "not measured yet: no item has come through"
    top = max(measured, key=lambda r: (round(r.rho, 2), r.share))
    name = f"stage {top.index + 1} ({top.name})"
    if top.rho < BUSY_RHO:
        return None, (f"no stage is busy (the highest ρ is {top.rho:.2f}, {name}): the input "
                      "or the consumer of the results sets the pace")
    why = [f"ρ {top.rho:.2f}"]
    mates = [r for r in rows if r is not top and r.rho is not None and abs(r.rho - top.rho) < 0.005]
    if mates:
        why.append(f"{top.share:.0%} of its farm's slot time")
    if top.queue_max > 0:
        why.append(f"its queue grew to {top.queue_max} items")
    return top, f"{name}: " + ", ".join(why)
