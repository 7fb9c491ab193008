"""On the node: a worker's ask for a module its running task imports and its host lacks
(``envwant``, see workers/wants.py), passed to the controller of that task, and the
controller's answer (``envgiven``) passed back to the worker that waits; and what the
task printed (``taskout``, see workers/output.py), passed to that controller too.

Ships to hosts: the standard library only. See docs/how-it-works.md, "The environment
that travels".
"""

from __future__ import annotations

from .. import ops, wire
from .channel import CHANNEL, WANT_SEQ


class Asks:
    """The asks that wait for their controller's answer: want number -> (worker, connection)."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.waiting: dict[int, tuple[object, object]] = {}
        self.count = 0

    def from_worker(self, worker, frame) -> None:
        """A worker's own message about the task it runs, for that task's controller:
        what it printed (``taskout``, passed on as the worker framed it; dropped when no
        task of a live connection runs there), or an ``envwant``, asked of it. With no
        such task, the worker hears at once that nothing comes."""
        try:
            head = wire.frame_head(frame)
        except wire.FrameError:
            head = {}
        task = worker.assigned[0] if worker.assigned else None
        if head.get("op") == "taskout":
            if task is not None and not task.cancelled and not task.conn.closed:
                self.loop.send(task.conn, bytes(frame))
            return
        module = head.get("module")
        if task is None or task.conn.closed or not ops.TEXT.test(module):
            self.answer(worker, [])
            return
        self.count += 1
        self.waiting[self.count] = (worker, task.conn)
        self.loop.send(task.conn, wire.encode({"op": "envwant", "want": self.count,
                                               "module": module}))

    def given(self, conn, head: dict) -> None:
        """A controller's ``envgiven``: to the worker that asked, if it still waits."""
        entry = self.waiting.get(head["want"])
        if entry is None or entry[1] is not conn:
            return  # (its worker ended meanwhile; or it was not this connection's to answer)
        del self.waiting[head["want"]]
        if not entry[0].closed:
            self.answer(entry[0], head["ids"], head.get("error"))

    def answer(self, worker, ids: list, error: str | None = None) -> None:
        head = {"op": "envgiven", "ids": ids}
        if error:
            head["error"] = error
        frame = wire.encode(head)
        self.loop.send(worker, CHANNEL.pack(WANT_SEQ, len(frame)) + frame)

    def forget(self, conn) -> None:
        """The asks to a connection that closed: never answered. (A worker that ended is
        a closed slot: an answer for it is dropped when it comes.)"""
        if self.waiting:
            for want, (_, asked) in list(self.waiting.items()):
                if asked is conn:
                    del self.waiting[want]
