"""A recorded trace laid out in the Chrome Trace Event format, which Perfetto opens.

- One process for the controller, one per node; on a node, one thread per worker slot.
- A task a worker ran is a complete slice (``X``) on its slot, placed on the
  controller's clock (the node's offset applied), in microseconds from the start.
- On the controller, a thread per map (or pipeline farm) holds a zero-length slice for
  each chunk sent, and one for each attempt that failed (its node and why); flow arrows
  (``s``/``f``) go from a chunk sent to the task that ran it, from a failed attempt to
  the attempt that retried its first item, and from a pipeline farm's chunk to the next
  farm's chunk of the same items.
- Spawned processes (a trace of ``clusterctl trace record``): a thread each on their
  node, with their life, messages and restarts (``processes``).
- Counters (``C``) give the chunks in flight per map.
- ``metadata`` has the command line, the hosts, the versions, each node's clock offset
  with its bound, the events dropped, and what each map and pipeline said of itself.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from clusterctl.api.trace import processes
from clusterctl.api.trace.recording import RawTrace

CONTROLLER_PID = 1


def layout(raw: RawTrace) -> dict:
    events: list[dict] = []
    us = _clock(raw.started)
    labels = list(dict.fromkeys(c[0] for c in raw.chunks))
    tids = {label: i + 1 for i, label in enumerate(labels)}
    pids = {name: i + 2 for i, name in enumerate(raw.nodes)}
    _names(events, raw, labels, tids, pids)
    slices = _node_tasks(events, raw, pids, us)  # (node, rid) -> (pid, tid, start us, end us)
    flows = _Flows(events)
    attempts = defaultdict(list)  # label -> [(index, n, sent us, chunk)] in the order sent
    for chunk in sorted(raw.chunks, key=lambda c: c[5]):
        label, node, rid, index, n, sent, answered, out_bytes, in_bytes, how, tries, strikes, \
            twin = chunk
        tid = tids[label]
        at = us(sent)
        events.append({"name": f"send items {index}-{index + n - 1}", "ph": "X", "pid": CONTROLLER_PID,
                       "tid": tid, "ts": at, "dur": 0, "cat": "chunk",
                       "args": {"node": node, "rid": rid, "items": [index, n], "bytes": out_bytes,
                                "speculative": twin}})
        task = slices.get((node, rid))
        if task is not None:
            flows.add("chunk", (CONTROLLER_PID, tid, at), (task[0], task[1], task[2]))
        if how != "ok":
            end = us(answered)
            events.append({"name": f"failed: items {index}-{index + n - 1}", "ph": "X",
                           "pid": CONTROLLER_PID, "tid": tid, "ts": end, "dur": 0, "cat": "failed",
                           "args": {"node": node, "how": how, "rid": rid, "items": [index, n],
                                    "tries": tries, "strikes": strikes}})
        attempts[label].append((index, n, at, chunk))
    processes.lay_out(events, raw, pids, us, flows)
    _retries(flows, attempts, slices, tids, us)
    _stage_flows(flows, raw, attempts, slices)
    _counters(events, raw, us)
    return {"traceEvents": events, "displayTimeUnit": "ms", "metadata": _metadata(raw)}


def _clock(started: float):
    def us(t: float) -> float:
        return round((t - started) * 1e6, 3)
    return us


def _names(events, raw: RawTrace, labels, tids, pids) -> None:
    events.append({"name": "process_name", "ph": "M", "pid": CONTROLLER_PID, "tid": 0,
                   "args": {"name": "controller"}})
    events.append({"name": "process_sort_index", "ph": "M", "pid": CONTROLLER_PID, "tid": 0,
                   "args": {"sort_index": 0}})
    for label, tid in tids.items():
        events.append({"name": "thread_name", "ph": "M", "pid": CONTROLLER_PID, "tid": tid,
                       "args": {"name": label}})
    for name, pid in pids.items():
        node = raw.nodes[name]
        title = f"{name} ({node.host})" if node.host and node.host != name else name
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                       "args": {"name": title}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                       "args": {"sort_index": pid}})
        slots = max([node.slots] + [e[2] + 1 for e in node.events if e and e[0] == "task"])
        for slot in range(slots):
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": slot + 1,
                           "args": {"name": f"slot {slot}"}})


def _node_tasks(events, raw: RawTrace, pids, us) -> dict:
    """The tasks the nodes ran, as slices on the controller's clock."""
    chunks = {(c[1], c[2]): c for c in raw.chunks}
    slices = {}
    for name, node in raw.nodes.items():
        if node.offset is None:
            continue  # no clock to place its events on
        pid = pids[name]
        last_end: dict[int, float] = {}
        for event in sorted((e for e in node.events if e and e[0] == "task"), key=lambda e: e[4]):
            _, rid, slot, queued, started, ended, bytes_in, bytes_out, how = event[:9]
            start = max(us(started - node.offset), last_end.get(slot, float("-inf")))
            end = max(us(ended - node.offset), start)
            last_end[slot] = end  # one worker runs one task at a time: slices never overlap
            chunk = chunks.get((name, rid))
            label = chunk[0] if chunk else "task"  # (a call, or a twin cancelled unawaited)
            what = f"{label} items {chunk[3]}-{chunk[3] + chunk[4] - 1}" if chunk else label
            args = {"rid": rid, "bytes_in": bytes_in, "bytes_out": bytes_out, "how": how,
                    "queued_us": round((started - queued) * 1e6, 3), "run": label}
            if chunk:
                args["items"] = [chunk[3], chunk[4]]
            events.append({"name": what, "ph": "X", "pid": pid, "tid": slot + 1, "ts": start,
                           "dur": round(end - start, 3), "cat": "task", "args": args})
            slices[(name, rid)] = (pid, slot + 1, start, end)
    return slices


class _Flows:
    """Flow arrows as ``s``/``f`` pairs, each bound to the slice at its point."""

    def __init__(self, events: list) -> None:
        self.events = events
        self.next_id = 1

    def add(self, cat: str, source: tuple, target: tuple) -> None:
        pid, tid, ts = source
        to_pid, to_tid, to_ts = target
        flow = self.next_id
        self.next_id += 1
        self.events.append({"name": cat, "cat": cat, "ph": "s", "id": flow, "pid": pid, "tid": tid,
                            "ts": ts})
        self.events.append({"name": cat, "cat": cat, "ph": "f", "bp": "e", "id": flow,
                            "pid": to_pid, "tid": to_tid, "ts": to_ts})


def _retries(flows: _Flows, attempts, slices, tids, us) -> None:
    """From each failed attempt to the next attempt that took its first item."""
    for label, sent in attempts.items():
        for i, (index, n, at, chunk) in enumerate(sent):
            if chunk[9] == "ok":
                continue
            later = next((a for a in sent[i + 1:] if a[0] <= index < a[0] + a[1]), None)
            if later is None:
                continue
            source = slices.get((chunk[1], chunk[2]))
            start = (source[0], source[1], source[3]) if source else \
                (CONTROLLER_PID, tids[label], us(chunk[6]))
            target = slices.get((later[3][1], later[3][2]))
            flows.add("retry", start, (target[0], target[1], target[2]) if target else
                      (CONTROLLER_PID, tids[label], later[2]))


def _stage_flows(flows: _Flows, raw: RawTrace, attempts, slices) -> None:
    """From a pipeline farm's chunk to the next farm's chunk that took its first item."""
    for run in raw.runs:
        farms = [f["label"] for f in run.get("farms", [])]
        for before, after in zip(farms, farms[1:]):
            done = sorted((a[0], a[1], a[3]) for a in attempts.get(before, ()) if a[3][9] == "ok")
            starts = [d[0] for d in done]
            for index, n, at, chunk in attempts.get(after, ()):
                k = bisect.bisect_right(starts, index) - 1
                if k < 0 or not done[k][0] <= index < done[k][0] + done[k][1]:
                    continue
                source = slices.get((done[k][2][1], done[k][2][2]))
                target = slices.get((chunk[1], chunk[2]))
                if source and target:
                    flows.add("stage", (source[0], source[1], source[3]),
                              (target[0], target[1], target[2]))


def _counters(events, raw: RawTrace, us) -> None:
    changes = sorted([(c[5], c[0], 1) for c in raw.chunks] + [(c[6], c[0], -1) for c in raw.chunks])
    inflight: dict[str, int] = defaultdict(int)
    for t, label, step in changes:
        inflight[label] += step
        events.append({"name": "chunks in flight", "ph": "C", "pid": CONTROLLER_PID, "tid": 0,
                       "ts": us(t), "args": {label: inflight[label]}})
    for t, name, values in raw.samples:
        events.append({"name": name, "ph": "C", "pid": CONTROLLER_PID, "tid": 0, "ts": us(t),
                       "args": values})


def _metadata(raw: RawTrace) -> dict:
    return {
        "clusterctl": raw.versions,
        "command": raw.command,
        "duration_us": round((raw.finished - raw.started) * 1e6, 3),
        "hosts": {name: node.host for name, node in raw.nodes.items()},
        "slots": {name: node.slots for name, node in raw.nodes.items()},
        "offsets": {name: {"offset_us": _us(node.offset), "error_us": _us(node.error),
                           "rtt_us": _us(node.rtt)} for name, node in raw.nodes.items()},
        "dropped": {name: node.dropped for name, node in raw.nodes.items()},
        "node_states": {name: node.state for name, node in raw.nodes.items()},
        "runs": raw.runs,
    }


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 3)
