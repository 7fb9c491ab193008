"""The figures a trace file holds, read back from the file alone (any trace clusterctl
wrote): per node and slot how busy it was, per map the service time per item and the
stragglers, per pipeline stage T_S, T_A and ρ and the bottleneck, retries and lost
nodes, round trips, bytes moved, load imbalance, and a timeline of busy shares."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from clusterctl import errors
from clusterctl.api.trace import processes

STRAGGLER_FACTOR = 3.0  # an item this many times the median time per item is a straggler ...
STRAGGLER_MIN_US = 1000.0  # ... if it is also this long
TIMELINE_BUCKETS = 60


@dataclass
class SlotFigures:
    node: str
    slot: int
    tasks: int
    busy_us: float
    busy: float  # share of the run


@dataclass
class NodeFigures:
    name: str
    host: str
    slots: int
    tasks: int
    items: int
    busy_us: float
    busy: float  # share of its slots' time over the run
    queue_wait_us: float | None  # mean wait of a task on the node before a worker took it
    bytes_in: int
    bytes_out: int
    mb_per_s: float
    rtt_us: float | None
    offset_us: float | None
    offset_error_us: float | None
    dropped: int
    state: str
    timeline: list[float] = field(default_factory=list)  # busy share per bucket


@dataclass
class RunFigures:
    label: str
    tasks: int
    items: int
    per_item_us: float | None  # mean service time per item
    median_item_us: float | None
    stragglers: list[dict] = field(default_factory=list)


@dataclass
class Analysis:
    duration_us: float
    command: list[str]
    nodes: list[NodeFigures]
    slots: list[SlotFigures]
    runs: list[RunFigures]
    failed_attempts: list[dict]
    retries: int
    requeued_items: int
    lost_nodes: dict[str, str]
    imbalance: float | None  # the busiest node's busy time over the mean
    pipelines: list[dict]
    dropped: int
    processes: list[dict] = field(default_factory=list)  # spawned processes (processes.figures)

    def to_json(self) -> dict:
        return asdict(self)


def load(path) -> dict:
    """A trace file, checked to be one clusterctl wrote (``UsageError`` if not)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise errors.UsageError(f"cannot read trace {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise errors.UsageError(f"{path} is not a trace file: not JSON ({exc})",
                                hint="give a file written with --trace FILE") from None
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list) \
            or not isinstance(data.get("metadata"), dict):
        raise errors.UsageError(f"{path} is not a clusterctl trace (no traceEvents and metadata)",
                                hint="give a file written with --trace FILE")
    return data


def analyze(data: dict) -> Analysis:
    meta = data["metadata"]
    events = data["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    by_pid = {pid: name.split(" (")[0] for pid, name in names.items()}
    tasks = [e for e in events if e.get("ph") == "X" and e.get("cat") == "task"]
    duration = float(meta.get("duration_us") or 0.0) or max(
        (e["ts"] + e["dur"] for e in tasks), default=0.0)
    nodes = _nodes(meta, tasks, by_pid, duration)
    failed = [dict(e["args"], ts=e["ts"]) for e in events
              if e.get("ph") == "X" and e.get("cat") == "failed"]
    busy = [n.busy_us for n in nodes if n.slots or n.tasks]
    mean_busy = sum(busy) / len(busy) if busy else 0.0
    lost = {name: state for name, state in meta.get("node_states", {}).items()
            if state != "running"}
    lost.update({f["node"]: f["how"] for f in failed if str(f["how"]).startswith("lost")})
    return Analysis(
        duration_us=duration, command=list(meta.get("command") or []), nodes=nodes,
        slots=_slots(tasks, by_pid, duration), runs=_runs(tasks, by_pid), failed_attempts=failed,
        retries=sum(1 for f in failed if not str(f["how"]).startswith("lost")),
        requeued_items=sum(f["items"][1] for f in failed if str(f["how"]).startswith("lost")),
        lost_nodes=lost, imbalance=(max(busy) / mean_busy) if mean_busy else None,
        pipelines=[r for r in meta.get("runs", []) if r.get("kind") == "pipeline"],
        dropped=sum(int(v or 0) for v in meta.get("dropped", {}).values()),
        processes=processes.figures(events, by_pid))


def _nodes(meta: dict, tasks: list[dict], by_pid: dict, duration: float) -> list[NodeFigures]:
    mine = defaultdict(list)
    for task in tasks:
        mine[by_pid.get(task["pid"], str(task["pid"]))].append(task)
    out = []
    for name in list(meta.get("hosts", {})) or list(mine):
        own = mine.get(name, [])
        slots = int(meta.get("slots", {}).get(name) or 0) or len({t["tid"] for t in own}) or 1
        busy_us = sum(t["dur"] for t in own)
        waits = [t["args"].get("queued_us", 0.0) for t in own]
        moved_in = sum(int(t["args"].get("bytes_in", 0)) for t in own)
        moved_out = sum(int(t["args"].get("bytes_out", 0)) for t in own)
        offsets = meta.get("offsets", {}).get(name, {})
        out.append(NodeFigures(
            name=name, host=meta.get("hosts", {}).get(name, ""), slots=slots, tasks=len(own),
            items=sum(t["args"].get("items", [0, 1])[1] for t in own), busy_us=busy_us,
            busy=busy_us / (slots * duration) if duration else 0.0,
            queue_wait_us=sum(waits) / len(waits) if waits else None,
            bytes_in=moved_in, bytes_out=moved_out,
            mb_per_s=(moved_in + moved_out) / duration if duration else 0.0,  # bytes/µs = MB/s
            rtt_us=offsets.get("rtt_us"), offset_us=offsets.get("offset_us"),
            offset_error_us=offsets.get("error_us"), dropped=int(meta.get("dropped", {}).get(name) or 0),
            state=meta.get("node_states", {}).get(name, "running"),
            timeline=timeline(own, slots, duration)))
    return out


def timeline(tasks: list[dict], slots: int, duration: float, buckets: int = TIMELINE_BUCKETS) -> list[float]:
    """Busy share of ``slots`` in each of ``buckets`` equal spans of the run."""
    if duration <= 0:
        return []
    width = duration / buckets
    busy = [0.0] * buckets
    for task in tasks:
        start, end = task["ts"], task["ts"] + task["dur"]
        first, last = int(max(0.0, start) // width), int(min(duration, end) // width)
        for b in range(max(0, first), min(buckets - 1, last) + 1):
            lo, hi = b * width, (b + 1) * width
            busy[b] += max(0.0, min(hi, end) - max(lo, start))
    return [min(1.0, b / (width * max(1, slots))) for b in busy]


def _slots(tasks: list[dict], by_pid: dict, duration: float) -> list[SlotFigures]:
    grouped = defaultdict(list)
    for task in tasks:
        grouped[(by_pid.get(task["pid"], str(task["pid"])), task["tid"] - 1)].append(task)
    return [SlotFigures(node, slot, len(own), sum(t["dur"] for t in own),
                        sum(t["dur"] for t in own) / duration if duration else 0.0)
            for (node, slot), own in sorted(grouped.items())]


def _runs(tasks: list[dict], by_pid: dict) -> list[RunFigures]:
    grouped = defaultdict(list)
    for task in tasks:
        grouped[task["args"].get("run", "task")].append(task)
    out = []
    for label, own in grouped.items():
        per_item = [(t["dur"] / max(1, t["args"].get("items", [0, 1])[1]), t) for t in own
                    if t["args"].get("how") == "ok"]
        items = sum(t["args"].get("items", [0, 1])[1] for t in own if t["args"].get("how") == "ok")
        total = sum(t["dur"] for _, t in per_item)
        median = statistics.median(p for p, _ in per_item) if per_item else None
        stragglers = [{"node": by_pid.get(t["pid"], str(t["pid"])), "items": t["args"].get("items"),
                       "per_item_us": p, "ts": t["ts"]}
                      for p, t in per_item
                      if median and p > STRAGGLER_FACTOR * median and p > STRAGGLER_MIN_US]
        out.append(RunFigures(label, len(own), items, total / items if items else None, median,
                              sorted(stragglers, key=lambda s: -s["per_item_us"])[:20]))
    return out
