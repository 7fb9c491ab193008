"""A node's trace: the tasks of the connections that asked for one, as timestamped
events in a bounded ring. When the ring is full the oldest event goes and is counted as
dropped: recording never stalls the node, and the trace says how much it lost.

Times are the node's monotonic clock; the controller maps them onto its own with the
offset it measures by ping (``mono`` in a pong), so a node whose clock runs elsewhere
still lands on one timeline.

A task event is a list: ``["task", request id, slot, queued, started, ended, bytes in,
bytes out, how]``, ``how`` being ``"ok"`` (answered), or why it ended otherwise
(``"crashed"``, ``"cancelled"``...). A worker runs its tasks in order, so a task
started when it was handed to its worker, or when the one before it there ended.

A connection that asks for ``processes`` also gets the node's spawned processes'
events: ``["proc", time, id, what, detail, name]`` (``what``: "spawn" with the function,
"running" likewise for one running when the trace started, "exit" with the reason,
"restart" with the id it replaces) and ``["msg", time, from, to,
bytes, where]`` for each message the node routed (``where``: "local" from a process
here, "out" to another node, "in" from another node, "program" from a controller).
"""

from __future__ import annotations

from collections import deque

from ..ops import DEFAULT_CAPACITY  # events a connection's ring holds, unless it asks for another size
MAX_CAPACITY = 5_000_000


class Recorder:
    """One connection's ring of events."""

    __slots__ = ("events", "capacity", "dropped")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = max(1, min(capacity, MAX_CAPACITY))
        self.events: deque = deque(maxlen=self.capacity)
        self.dropped = 0

    def add(self, event: list) -> None:
        if len(self.events) == self.capacity:
            self.dropped += 1
        self.events.append(event)

    def take(self) -> tuple[list, int]:
        """Everything recorded since the last take, and how many events were dropped."""
        events, dropped = list(self.events), self.dropped
        self.events.clear()
        self.dropped = 0
        return events, dropped
