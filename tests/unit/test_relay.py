"""The relay between nodes' processes, in parts (no process, no hub: a loop that records
what would be sent, and frames written out by hand): what waits goes to a new hub at
once, and each sender's frames are delivered once each, in order, whatever comes twice
or out of turn."""

from __future__ import annotations

import json

from clusterctl.node import wire
from clusterctl.node.processes.relay import RESEND_SECONDS, Relay


class Loop:
    """What the relay sends, by connection."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, dict]] = []

    def send(self, conn, frame: bytes) -> None:
        payload = wire.frame_payload(frame)
        head = wire.decode_head(frame[wire.HEADER_SIZE:len(frame) - len(payload)])
        self.sent.append((conn, head))


class Hub:
    """A hub's watch connection, as the relay sees it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.closed = False


def message(n: int) -> bytes:
    return wire.encode({"op": "msg", "to": "n2.1"}, json.dumps(n).encode())


def test_what_waits_for_a_hub_goes_to_a_new_one_the_moment_it_attaches():
    loop = Loop()
    relay = Relay(loop, "n1", lambda *a: None)
    first = Hub("first")
    relay.attach(first)
    relay.send("n2", message(1))
    assert [(c, h["q"]) for c, h in loop.sent] == [(first, 1)]
    first.closed = True  # the hub was killed: frames wait, unacknowledged
    relay.detach(first)
    relay.send("n2", message(2))
    relay.send("n3", message(3))
    assert len(loop.sent) == 1
    second = Hub("second")
    relay.attach(second)  # well before RESEND_SECONDS: no periodic resend makes up for it
    assert sorted((h["node"], h["q"]) for c, h in loop.sent[1:] if c is second) == \
        [("n2", 1), ("n2", 2), ("n3", 1)]
    assert RESEND_SECONDS >= 1.0


def relayed(session: str, seq: int, n: int) -> tuple[dict, bytes]:
    """A frame from n2's session ``session`` as n1 reads it: its head, its inner frame."""
    return {"op": "relay", "node": "n1", "src": "n2", "s": session, "q": seq}, message(n)


def test_each_senders_frames_are_delivered_once_each_and_in_order():
    delivered = []
    relay = Relay(Loop(), "n1", lambda src, head, payload, raw: delivered.append(
        (src, json.loads(bytes(payload)))))
    for seq in (1, 3):  # 2 went missing: 3 waits for it (it comes again, in order)
        relay.received(*relayed("a", seq, seq))
    assert delivered == [("n2", 1)]
    for seq in (2, 3, 2, 1):  # the resend: 2 and 3 in turn, then duplicates
        relay.received(*relayed("a", seq, seq))
    assert delivered == [("n2", 1), ("n2", 2), ("n2", 3)]
    assert relay.acks[("n2", "a")] == 3  # a duplicate is answered with how far we are
    for seq in (1, 2, 3, 4):  # everything sent again through a new hub, then the next one
        relay.received(*relayed("a", seq, seq))
    assert [n for _, n in delivered] == [1, 2, 3, 4]
    relay.received(*relayed("b", 1, 10))  # a new session of n2's (it had forgotten us)
    assert [n for _, n in delivered] == [1, 2, 3, 4, 10]
    relay.received(*relayed("c", 2, 20))  # a session this node never saw the start of
    assert [n for _, n in delivered] == [1, 2, 3, 4, 10] and ("n2", "c") in relay.resets
