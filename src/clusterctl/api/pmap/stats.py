"""What a run reports while it runs and after: counters per node and for the whole map."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class NodeStats:
    """What one node did in a run (read by the progress display while it runs)."""

    name: str
    slots: int = 0
    state: str = "connecting"  # connecting, running, lost, failed (could not run the function)
    reason: str = ""
    items: int = 0  # results this node delivered
    chunks: int = 0
    busy: float = 0.0  # seconds its workers spent in the function
    failures: int = 0  # items that failed for good here
    retries: int = 0  # items that failed here and were tried again
    requeued: int = 0  # items taken back from it (lost, crashed, could not load)
    crashes: int = 0  # worker crashes
    joined: float | None = None
    left: float | None = None

    def busy_fraction(self, now: float | None = None) -> float | None:
        if self.joined is None or not self.slots:
            return None
        end = self.left if self.left is not None else (now or time.monotonic())
        span = end - self.joined
        return min(1.0, self.busy / (span * self.slots)) if span > 0 else None


class Timed:
    """The clock of a run with ``started``, ``finished`` and ``done`` fields."""

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def rate(self) -> float | None:
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 and self.done else None


@dataclass
class PmapStats(Timed):
    """Counters of a whole run; ``nodes`` in hosts-file order."""

    total: int | None = None
    done: int = 0  # items with a final outcome (value or error)
    failed: int = 0
    retries: int = 0
    requeued: int = 0
    duplicates: int = 0  # late answers for items already done, dropped
    speculated: int = 0  # items started again at the end, on an idle slot, to end sooner
    retried_in: dict[str, int] = field(default_factory=dict)  # retries by where they failed
    started: float | None = None
    finished: float | None = None
    nodes: dict[str, NodeStats] = field(default_factory=dict)

    def eta(self) -> float | None:
        rate = self.rate()
        if self.total is None or not rate:
            return None
        return max(0.0, (self.total - self.done) / rate)

    @property
    def slots(self) -> int:
        return sum(n.slots for n in self.nodes.values() if n.state == "running")


def reason_of(error: BaseException) -> str:
    """Why a node left the run or could not join it, in a few words (for its stats)."""
    return getattr(error, "reason", None) or str(error)
