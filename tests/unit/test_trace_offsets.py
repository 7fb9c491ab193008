"""A node's clock offset, the NTP way, in parts (the end-to-end tests are a node in a time
namespace, tests/local/test_trace.py): of a few pings, the one with the smallest round
trip gives the offset, the middle of its round trip against the node's clock."""

from __future__ import annotations

from clusterctl.api.trace import recording
from clusterctl.api.trace.recording import NodeTrace, Recording


class Clock:
    """The controller's monotonic clock, advanced by the fake node as each ping goes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Pending:
    def __init__(self, head: dict | None) -> None:
        self.head, self.error = head, None

    def wait(self, timeout) -> bool:
        return self.head is not None


class Node:
    """A node whose clock runs ``ahead`` seconds ahead; each ping takes the next round
    trip, its clock read ``share`` of the way through it (not always the middle)."""

    def __init__(self, clock: Clock, ahead: float, trips: list[tuple[float, float]]) -> None:
        self.clock, self.ahead, self.trips = clock, ahead, list(trips)

    def request(self, head: dict) -> Pending:
        assert head == {"op": "ping"}
        if not self.trips:
            return Pending(None)
        rtt, share = self.trips.pop(0)
        mono = self.clock.now + rtt * share + self.ahead
        self.clock.now += rtt  # (the answer is back when ``wait`` returns)
        return Pending({"op": "pong", "mono": mono})


def test_the_smallest_round_trip_gives_the_offset_and_half_of_it_the_bound(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(recording.time, "monotonic", clock.monotonic)
    trips = [(0.010, 0.9), (0.002, 0.5), (0.006, 0.1), (0.004, 0.5), (0.030, 0.0)]
    node = NodeTrace("n1")
    Recording._offset(node, Node(clock, 5000.0, trips))
    assert abs(node.rtt - 0.002) < 1e-9
    assert abs(node.offset - 5000.0) < 1e-9  # its clock read mid-trip: exact
    assert abs(node.error - 0.001) < 1e-9


def test_a_node_that_does_not_say_its_clock_gets_no_offset(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(recording.time, "monotonic", clock.monotonic)

    class Old(Node):
        def request(self, head):
            pending = super().request(head)
            pending.head.pop("mono")
            return pending

    node = NodeTrace("old")
    Recording._offset(node, Old(clock, 0.0, [(0.001, 0.5)] * 5))
    assert node.offset is None and node.error is None
    silent = NodeTrace("silent")
    Recording._offset(silent, Node(clock, 0.0, []))  # no answer at all
    assert silent.offset is None
