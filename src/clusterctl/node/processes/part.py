"""The spawned processes as a part of the node (``part.Part``): the controllers'
requests about processes, the hub's messages on its watch connection, and the
processes' share of the daemon's turns (reaping, resending to other nodes, acks).

Ships to hosts: the standard library only. See docs/how-it-works.md, section
"Spawned processes".
"""

from __future__ import annotations

from ..part import Part
from .requests import ProcessRequests
from .table import Actors


class Processes(Part):
    """The daemon's way to the process table (``Actors``) and its requests."""

    def __init__(self, loop, *, name: str, stats: dict, close_in_child, ids_path: str) -> None:
        self.actors = Actors(loop, name=name, stats=stats, close_in_child=close_in_child,
                             ids_path=ids_path, requests=ProcessRequests)
        self.requests = self.actors.requests
        self.relay = self.actors.peers.relay
        self.handlers = self.requests.handlers

    def cancel(self, conn, request) -> bool:
        """A cancelled call to a process: its late reply is not wanted."""
        self.requests.conn_forget(conn, request)
        return True

    def connection_gone(self, conn) -> None:
        self.actors.connection_gone(conn)

    def watch_opened(self, conn) -> None:
        self.actors.peers.attached(conn)

    def after_read(self) -> None:
        self.relay.send_acks()

    def housekeeping(self, now: float) -> None:
        if self.actors.procs.dying:
            self.actors.procs.reap_dying(now)
        self.relay.resend(now)
        self.relay.send_acks(everything=True)

    def busy(self) -> bool:
        return self.actors.busy()

    def report(self) -> dict:
        return {"processes": len(self.actors.by_num)}

    def trace_to(self, conn, recorder) -> None:
        self.actors.record_to(conn, recorder)

    def stop(self) -> None:
        if not self.actors.stopping:
            self.actors.stopping = True
            self.actors.peers.leaving()

    def shutdown(self) -> None:
        self.actors.shutdown()

    def close_in_child(self) -> None:
        for proc in self.actors.by_num.values():
            proc.sock.close()
