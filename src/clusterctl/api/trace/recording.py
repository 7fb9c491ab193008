"""Recording a trace: the controller's own events (each chunk sent and answered, with
its items, its node, its outcome), each traced node's task events, and each node's
clock offset, gathered at the end into one ``RawTrace``.

The controller's clock is ``time.monotonic()``. A node's events are on its own
monotonic clock; its offset is estimated from pings the NTP way: of a few round trips,
the one with the smallest round trip gives ``offset = t_node - (t_sent + t_back) / 2``,
good within half that round trip (the error bound written with it).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from clusterctl import errors
from clusterctl.node.ops import DEFAULT_CAPACITY

OFFSET_PINGS = 5  # round trips per node to estimate its clock offset
COLLECT_TIMEOUT = 10.0  # seconds to wait for a node's events at the end


@dataclass
class NodeTrace:
    """What one node recorded, and how its clock maps onto the controller's."""

    name: str
    host: str = ""
    slots: int = 0
    offset: float | None = None  # node clock - controller clock, seconds
    error: float | None = None  # the offset's bound (half the smallest round trip)
    rtt: float | None = None
    events: list = field(default_factory=list)
    dropped: int = 0
    state: str = "running"  # or why it could not give its events


@dataclass
class RawTrace:
    """Everything a trace file is made of, before it is laid out (``chrome``)."""

    started: float
    finished: float = 0.0
    command: list[str] = field(default_factory=list)
    chunks: list = field(default_factory=list)  # see Recording.chunk_answered
    nodes: dict[str, NodeTrace] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)  # what each pmap / pipeline said of itself
    samples: list = field(default_factory=list)  # (time, counter, {series: value})
    versions: dict = field(default_factory=dict)


class Recording:
    """The recording of one traced stretch of work (``Cluster(trace=FILE)``, or
    ``with cluster.trace(FILE)``)."""

    def __init__(self, path, capacity: int = DEFAULT_CAPACITY, processes: bool = False) -> None:
        self.path = path
        self.capacity = capacity
        self.processes = processes  # the nodes' spawned processes' events too
        self.raw = RawTrace(started=time.monotonic(), command=list(sys.argv))
        self._conns: dict[int, tuple[str, object]] = {}  # id(conn) -> (node, conn)
        self._lock = threading.Lock()

    # -- while the work runs -----------------------------------------------------------

    def watch(self, name: str, conn) -> None:
        """Have ``conn``'s node record the tasks it is sent on it (once per connection)."""
        key = id(conn)
        with self._lock:
            if key in self._conns:
                return
            self._conns[key] = (name, conn)
        try:
            conn.send({"op": "trace", "start": True, "capacity": self.capacity,
                       **({"processes": True} if self.processes else {})})
        except errors.ClusterError:
            pass  # a connection already lost: its events are lost with it

    def posting(self, post: Callable, label: str) -> Callable:
        """A scheduler's ``post`` that records each chunk answer on its way (``label``:
        the pmap, or the pipeline stages the chunk ran)."""
        chunks = self.raw.chunks

        def traced(event) -> None:
            chunk, head, payload, error = event
            if error is not None:
                how = "lost: " + (getattr(error, "reason", None) or str(error))
            elif head.get("ok"):
                how = "ok"
            else:
                info = head.get("error") or {}
                how = info.get("kind") or "failed"
            node = chunk.node
            chunks.append((label, node.name if node is not None else "?", chunk.rid, chunk.index,
                           chunk.n, chunk.sent, time.monotonic(), len(chunk.payload),
                           len(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else 0,
                           how, chunk.tries, chunk.strikes, chunk.twin is not None))
            post(event)

        return traced

    def sample(self, name: str, values: dict[str, int]) -> None:
        """A counter's values now (a pipeline's queue lengths)."""
        self.raw.samples.append((time.monotonic(), name, values))

    def describe_run(self, description: dict) -> None:
        """What a pmap or pipeline says of itself at its end (stages, figures, nodes)."""
        self.raw.runs.append(description)

    # -- the end -----------------------------------------------------------------------

    def collect(self, describe_node: Callable[[str], tuple[str, int]]) -> RawTrace:
        """Fetch every watched node's events and measure its clock offset."""
        raw = self.raw
        raw.finished = time.monotonic()
        for name, conn in list(self._conns.values()):
            node = raw.nodes.get(name) or NodeTrace(name, *describe_node(name))
            raw.nodes[name] = node
            if conn.lost is not None:
                node.state = "lost: " + (getattr(conn.lost, "reason", None) or str(conn.lost))
                continue
            try:
                self._offset(node, conn)
                pending = conn.request({"op": "trace", "stop": True})
                if not pending.wait(COLLECT_TIMEOUT) or pending.error is not None:
                    node.state = "did not send its events"
                    continue
                node.events.extend(json.loads(bytes(pending.payload) or b"[]"))
                node.dropped += int(pending.head.get("dropped") or 0)
            except (errors.ClusterError, ValueError) as exc:
                node.state = f"events lost: {exc}"
        return raw

    @staticmethod
    def _offset(node: NodeTrace, conn) -> None:
        best = None
        for _ in range(OFFSET_PINGS):
            sent = time.monotonic()
            pending = conn.request({"op": "ping"})
            if not pending.wait(COLLECT_TIMEOUT) or pending.error is not None:
                break
            back = time.monotonic()
            mono = pending.head.get("mono")
            if not isinstance(mono, (int, float)):
                break  # a node that does not say its monotonic clock: no offset
            rtt = back - sent
            if best is None or rtt < best[0]:
                best = (rtt, mono - (sent + back) / 2)
        if best is not None:
            node.rtt, node.offset = best
            node.error = best[0] / 2
