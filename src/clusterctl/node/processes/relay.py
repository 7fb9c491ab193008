"""Frames to and from the processes of other nodes, through the hub: numbered per pair
of nodes, kept until the other node acknowledges them and sent again through a new hub,
so that between two live processes nothing is lost or reordered when a hub dies.

The node's one way out is the hub's watch connection (the ``uplink``): SSH is the only
way in, and the hub holds it. A frame for node D goes up as ``{"op": "relay", "node": D,
"src": us, "s": session, "q": seq}`` with the inner frame (a message, a reply, a notice)
as its payload; the hub forwards it as it is to D's watch connection. D delivers each
seq once, in order, and answers ``ack`` (cumulative, once per read). Ships to hosts:
the standard library only. See docs/how-it-works.md, section "Spawned processes".
"""

from __future__ import annotations

import os
import time
from collections import deque

from .. import wire
from ..log import log

OUTBOX_BYTES = 1 << 26  # frames a node keeps for one other node, unacknowledged (64 MiB)
RESEND_SECONDS = 2.0  # unacknowledged frames this old are sent again (a frame the hub lost)
ACK_EVERY = 64  # frames taken from one session before an ack goes on its own; fewer ride
# on the next frame back to that node, or go at the node's next housekeeping (0.5 s)


class Outbox:
    """What this node sent to one other node and has not heard acknowledged."""

    __slots__ = ("session", "seq", "frames", "bytes", "sent_at")

    def __init__(self, session: str) -> None:
        self.session = session
        self.seq = 0
        self.frames: deque = deque()  # (seq, relay frame)
        self.bytes = 0
        self.sent_at = 0.0  # when the oldest unacknowledged frame was last sent


class Relay:
    """This node's pairs with the other nodes: outboxes (numbered, unacknowledged
    frames), and for each sender the last seq delivered. ``deliver(src, frame)`` is
    told each new inner frame from another node, in order."""

    def __init__(self, loop, name: str, deliver) -> None:
        self.loop = loop
        self.name = name
        self.deliver = deliver  # (src node, head, payload, raw inner frame) -> None
        self.uplink = None  # the hub's watch connection, while there is one
        self.epoch = "%d.%d" % (os.getpid(), time.time_ns())
        self.sessions = 0
        self.out: dict[str, Outbox] = {}
        self.seen: dict[tuple[str, str], int] = {}  # (src node, its session) -> last seq
        self.acks: dict[tuple[str, str], int] = {}  # acks owed at the end of this read
        self.resets: set[tuple[str, str]] = set()  # sessions to tell their sender are over
        self.taken: dict[tuple[str, str], int] = {}  # frames taken since the last ack sent

    def up(self) -> bool:
        return self.uplink is not None and not self.uplink.closed

    # -- sending ------------------------------------------------------------------------------

    def send(self, node: str, frame: bytes) -> str | None:
        """Send an inner frame to ``node``'s processes; why it cannot be, or None."""
        box = self.out.get(node)
        if box is None:
            self.sessions += 1
            box = self.out[node] = Outbox("%s.%d" % (self.epoch, self.sessions))
        if box.bytes + len(frame) > OUTBOX_BYTES:
            return ("%d bytes for node %s wait unacknowledged (the limit): %s"
                    % (box.bytes, node, "the hub does not reach it" if self.up()
                       else "no hub connects this node to the others"))
        box.seq += 1
        head = {"op": "relay", "node": node, "src": self.name, "s": box.session, "q": box.seq}
        owed = self.owed(node)
        if owed is not None:  # an ack rides along: a call and its reply need no ack frames
            head["as"], head["aq"] = owed
        relayed = wire.encode(head, frame)
        box.frames.append((box.seq, relayed))
        box.bytes += len(relayed)
        if self.up():
            if len(box.frames) == 1:
                box.sent_at = time.monotonic()
            self.loop.send(self.uplink, relayed)
        return None

    def attach(self, conn) -> None:
        """A hub's watch connection: the way out from now on; what waits goes out now."""
        self.uplink = conn
        log("the hub (%s) is this node's way to the others" % conn.label)
        self.resend(time.monotonic(), everything=True)

    def detach(self, conn) -> None:
        if self.uplink is conn:
            self.uplink = None

    def resend(self, now: float, everything: bool = False) -> None:
        """Send again what was not acknowledged in ``RESEND_SECONDS`` (or everything, to a
        new hub): the other node drops what it has already."""
        if not self.up():
            return
        for box in self.out.values():
            if box.frames and (everything or now - box.sent_at > RESEND_SECONDS):
                box.sent_at = now
                for _, relayed in box.frames:
                    self.loop.send(self.uplink, relayed)

    def resend_to(self, node: str) -> None:
        """``node`` is reachable again: what it has not acknowledged goes again now."""
        box = self.out.get(node)
        if box is not None and box.frames and self.up():
            box.sent_at = time.monotonic()
            for _, relayed in box.frames:
                self.loop.send(self.uplink, relayed)

    def forget(self, node: str) -> None:
        """``node`` was lost: what waits for it is dropped (its processes are gone), and
        the next frame to it starts a new session. What came from it is remembered: a
        node that was only out of reach goes on where it was, nothing twice."""
        self.out.pop(node, None)

    # -- receiving ----------------------------------------------------------------------------

    def received(self, head: dict, payload) -> None:
        """A relayed frame from another node: delivered if it is the next of its pair."""
        src, session, seq = head["src"], head["s"], head["q"]
        if "as" in head:
            self.acked({"src": src, "s": head["as"], "q": head["aq"]})
        last = self.seen.get((src, session), 0)
        if seq != last + 1:
            if seq <= last:
                self.acks[src, session] = last  # a resend: say again how far we are
            elif last == 0:  # a session this node forgot (it declared ``src`` lost): over
                self.resets.add((src, session))
            return  # (a gap: what is missing comes again, in order)
        self.seen[src, session] = seq
        self.acks[src, session] = seq
        self.taken[src, session] = self.taken.get((src, session), 0) + 1
        raw = bytes(payload)
        inner_payload = wire.frame_payload(raw)
        inner = wire.decode_head(raw[wire.HEADER_SIZE:len(raw) - len(inner_payload)])
        self.deliver(src, inner, inner_payload, raw)

    def owed(self, node: str) -> tuple[str, int] | None:
        """An ack owed to ``node`` (its session, how far), taken to ride on a frame to it."""
        for key in self.acks:
            if key[0] == node:
                self.taken.pop(key, None)
                return key[1], self.acks.pop(key)
        return None

    def send_acks(self, everything: bool = False) -> None:
        """After a read: an ack for each session that has ``ACK_EVERY`` frames taken
        since its last; at housekeeping (``everything``), for every session owed one."""
        if self.resets and self.up():
            for src, session in self.resets:
                self.loop.send(self.uplink, wire.encode({"op": "reset", "node": src, "src": self.name,
                                                         "s": session}))
            self.resets.clear()
        if not self.acks or not self.up():
            return
        for key in [k for k in self.acks if everything or self.taken.get(k, 0) >= ACK_EVERY]:
            (src, session), seq = key, self.acks.pop(key)
            self.taken.pop(key, None)
            self.loop.send(self.uplink, wire.encode({"op": "ack", "node": src, "src": self.name,
                                                     "s": session, "q": seq}))

    def reset(self, head: dict) -> None:
        """The other node declared this one lost and forgot our session: what waits for it
        is dropped (as a lost node's messages are), and the next frame starts anew."""
        box = self.out.get(head["src"])
        if box is not None and box.session == head["s"]:
            del self.out[head["src"]]
            log("%d frames for node %s dropped: it had taken this node for lost"
                % (len(box.frames), head["src"]))

    def acked(self, head: dict) -> None:
        box = self.out.get(head["src"])
        if box is None or box.session != head["s"]:
            return
        frames = box.frames
        while frames and frames[0][0] <= head["q"]:
            box.bytes -= len(frames.popleft()[1])
        box.sent_at = time.monotonic()
