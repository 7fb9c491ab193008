"""The worker pool as a part of the node (``part.Part``): what a controller asks of the
workers (tasks: ``call`` and ``map``; the functions they name: ``defn``; where they
run: ``situate``; cancelling one), and the pool's share of the daemon's turns.

Ships to hosts: the standard library only. See docs/how-it-works.md, "Inside a node".
"""

from __future__ import annotations

from .. import ops, wire
from ..part import Part
from .pool import Pool


class Tasks(Part):
    """The daemon's way to the pool: tasks in, their functions remembered per
    connection, cancels, and the pool's housekeeping."""

    def __init__(self, pool: Pool, restricted: bool = False) -> None:
        self.pool = pool
        self.restricted = restricted  # a restricted host's node: its owner's policy rules
        self.handlers = {"call": self.task, "map": self.task, "defn": self.define,
                         "situate": self.situate,
                         "envgiven": lambda conn, head, raw: pool.asks.given(conn, head)}

    def task(self, conn, head: dict, raw: bytes) -> None:
        """A ``call`` or ``map``: queued for a worker (its ``result`` goes back when done),
        unless it names a function this connection never defined."""
        task_id = head["id"]
        key = head.get("fk")
        if key is None and head["op"] == "map" and not (head.get("mod") and head.get("fun")):
            self.refuse(conn, task_id, "a map names no function")
        elif key is not None and key not in conn.functions:
            self.refuse(conn, task_id, "function %s was not defined" % key)
        else:
            conn.tasks[task_id] = self.pool.submit(conn, task_id, raw, key, head["op"] == "map")

    def define(self, conn, head: dict, raw: bytes) -> None:
        """A ``defn``: the function's frame, kept for this connection's tasks only."""
        conn.functions[head["key"]] = raw

    def situate(self, conn, head: dict, raw: bytes) -> None:
        """A ``situate``: the directory and environment this connection's tasks run in,
        set in a worker before them (no answer). A restricted node's host owner did not
        allow a controller to change them: there it is ignored."""
        if not self.restricted:
            conn.situation = raw

    def refuse(self, conn, task_id, message: str) -> None:
        self.pool.loop.send(conn, wire.encode(ops.error_head(
            "protocol", task_id, "ProtocolError", message, self.pool.name)))

    def cancel(self, conn, request) -> bool:
        task = conn.tasks.pop(request, None)
        if task is None:
            return False
        if self.pool.cancel(task):
            self.pool.loop.send(conn, wire.encode(ops.error_head(
                "cancelled", request, "Cancelled", "cancelled", self.pool.name)))
        return True

    def connection_gone(self, conn) -> None:
        self.pool.asks.forget(conn)
        self.pool.connection_gone(conn)

    def after_read(self) -> None:
        self.pool.dispatch()

    def housekeeping(self, now: float) -> None:
        if self.pool.processes.dying:
            self.pool.processes.reap_dying(now)

    def busy(self) -> bool:
        return self.pool.busy()

    def report(self) -> dict:
        return {"running": self.pool.running(), "queued": len(self.pool.queue)}

    def stop(self) -> None:
        self.pool.stop()

    def shutdown(self) -> None:
        self.pool.shutdown()

    def close_in_child(self) -> None:
        for worker in self.pool.workers:
            worker.sock.close()
