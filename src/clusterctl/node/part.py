"""What a part of the node offers its daemon: the one interface through which the
worker pool (``workers.tasks.Tasks``) and the spawned processes
(``processes.part.Processes``) plug into the daemon. The daemon holds a list of parts and
loops over them at each point of its life; nothing reaches into a part's insides.

Ships to hosts: the standard library only.
"""

from __future__ import annotations


class Part:
    """One subsystem of the node. Every method has a default that does nothing, so a
    part says only what concerns it.

    ``handlers`` maps each kind of controller message the part answers (``ops.NODE_TAKES``)
    to ``handler(conn, head, raw)``: no two parts handle the same kind."""

    handlers: dict = {}

    def cancel(self, conn, request) -> bool:
        """A controller cancels ``request``: True if it was this part's (it is answered)."""
        return False

    def connection_gone(self, conn) -> None:
        """A controller connection closed: what it asked for goes with it."""

    def watch_opened(self, conn) -> None:
        """The hub's watch connection authenticated: the hub connects this node to others."""

    def after_read(self) -> None:
        """The messages of one read were handled (to act on them together)."""

    def housekeeping(self, now: float) -> None:
        """Twice a second: reap, resend, time out."""

    def busy(self) -> bool:
        """Whether it has work in hand (a node with none exits when idle)."""
        return False

    def report(self) -> dict:
        """What a ``pong`` says of it."""
        return {}

    def trace_to(self, conn, recorder) -> None:
        """``conn`` asked for (recorder) or stopped (None) a trace of this part's work."""

    def stop(self) -> None:
        """The node is stopping: start nothing new."""

    def shutdown(self) -> None:
        """The node's last moments: end what runs, and reap it."""

    def close_in_child(self) -> None:
        """In a newly forked worker or process: let go of this part's descriptors."""
