"""When a spawned process that ended is started again: Erlang's restart types and the
restart intensity (at most N restarts in T seconds), as pure decisions.

Ships to hosts, so it imports only the standard library. See docs/how-it-works.md,
section "Spawned processes".
"""

from __future__ import annotations

from collections import deque

RESTART_TYPES = ("permanent", "transient", "temporary")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")  # OTP's, for a group
DEFAULT_INTENSITY = 3  # restarts allowed ...
DEFAULT_PERIOD = 5.0  # ... within this many seconds; one more and the process stays down


def problem(kind, intensity, period) -> str | None:
    """Why these settings cannot be used (a usage error, said in one line), or None."""
    if kind not in RESTART_TYPES:
        return "restart must be one of %s, not %r" % (", ".join(RESTART_TYPES), kind)
    if type(intensity) is not int or intensity < 0:
        return "the restart intensity must be a whole number of restarts (0 or more), not %r" % (intensity,)
    if type(period) not in (int, float) or not 0 < period <= 1e6:
        return "the restart period must be a number of seconds above 0, not %r" % (period,)
    return None


class Restarts:
    """One process's restart policy and the restarts it had: ``wanted`` says whether an
    exit calls for a restart at all, ``allow`` whether the intensity still permits one."""

    __slots__ = ("kind", "intensity", "period", "times", "count")

    def __init__(self, kind: str = "temporary", intensity: int = DEFAULT_INTENSITY,
                 period: float = DEFAULT_PERIOD) -> None:
        self.kind, self.intensity, self.period = kind, intensity, float(period)
        self.times: deque = deque()  # when the recent restarts happened (monotonic seconds)
        self.count = 0

    def wanted(self, abnormal: bool) -> bool:
        """permanent: always; transient: after an abnormal exit only; temporary: never."""
        return self.kind == "permanent" or (self.kind == "transient" and abnormal)

    def allow(self, now: float) -> bool:
        """Count a restart at ``now`` and say yes, unless ``intensity`` restarts happened
        within the last ``period`` seconds already: then no (and nothing is counted)."""
        times = self.times
        while times and now - times[0] > self.period:
            times.popleft()
        if len(times) >= self.intensity:
            return False
        times.append(now)
        self.count += 1
        return True

    def given_up(self, last_exit: str) -> str:
        """Why the process stays down, for ``ps``."""
        return ("restarted %d times within %g s (the limit): stays down; its last exit: %s"
                % (self.intensity, self.period, last_exit))

    def describe(self) -> dict:
        return {"restart": self.kind, "intensity": self.intensity, "period": self.period}


def to_restart(strategy: str, children: int, ended: int) -> list[int]:
    """Which of a group's ``children`` (in the order they started) restart when child
    ``ended`` ends and must restart: it alone (one_for_one), all of them (one_for_all), or
    it and those started after it (rest_for_one)."""
    if strategy == "one_for_one":
        return [ended]
    if strategy == "one_for_all":
        return list(range(children))
    if strategy == "rest_for_one":
        return list(range(ended, children))
    raise ValueError("strategy must be one of %s, not %r" % (", ".join(STRATEGIES), strategy))
