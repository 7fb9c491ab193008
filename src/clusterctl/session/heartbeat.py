"""The controller's heartbeat on one connection: a ping when we were quiet, and the
silence after which the node counts as lost.

See docs/how-it-works.md, section "Heartbeats and loss".
"""

from __future__ import annotations

import time

from clusterctl import errors
from clusterctl.node import wire


class Heartbeat:
    """Decides when to ping and when the node is lost, from the times the sender and the
    receiver note. It acts on nothing else: whoever ticks it fails the connection."""

    def __init__(self, node: str, interval: float, timeout: float, sender, receiver) -> None:
        self.node = node
        self.interval = interval
        self.timeout = timeout
        self._sender = sender  # (``Sender``: last_write, progress, busy, write_if_free)
        self._receiver = receiver  # (``Receiver``: last_read)

    def ping_if_quiet(self, now: float) -> None:
        """The node hears from us at least every interval, or it cancels our work; and
        when we have not heard from it for an interval, it is asked to answer (a ping's
        pong), or ``loss`` would take a node that only receives for lost.

        Never waits for the send lock: a send in progress feeds the node's heartbeat
        anyway, and the thread that ticks must stay free to check ours. A broken write
        is raised."""
        if now - self._sender.last_write < self.interval and \
                now - self._receiver.last_read < self.interval:
            return
        self._sender.write_if_free(*wire.encode_parts({"op": "ping", "t": time.time(), "id": 0}, b""))

    def loss(self, now: float) -> errors.NodeLost | None:
        """Lost when nothing arrived and no large send made progress for the timeout.

        Only large sends count: a small one (a ping) lands in the socket's buffer
        whether or not the node reads, but a large one stops making progress once the
        buffers along the way are full, so its progress shows that the node reads.
        """
        silent = now - max(self._receiver.last_read, self._sender.progress)
        if not silent > self.timeout:
            return None
        stalled = ", and it took none of what we are sending" if self._sender.busy() else ""
        return errors.NodeLost(self.node, "no heartbeat for %.1f s%s: the host may be "
                               "down or the network cut" % (silent, stalled))
