"""What spawned processes print: the last lines of each, kept on the node for
``clusterctl logs`` (and ``logs -f``, which follows them as they come).

A process's ``sys.stdout`` and ``sys.stderr`` send their lines as ``taskout`` frames
(workers/output.py, as a task's do). A process outlives the command that spawned it, so
there is nobody to show them to at once: the node keeps the last LINES_KEPT of each
running process, and the last ENDED_LINES_KEPT of the last ENDED_KEPT that ended (why
a process crashed is often in what it printed last). A controller that follows a
process gets each new line as it comes, tagged with what it asked under, and a last
``taskout`` saying how the process ended.

Ships to hosts: the standard library only.
"""

from __future__ import annotations

import json
import time
from collections import deque

from .. import wire

LINES_KEPT = 1000
ENDED_LINES_KEPT = 200
ENDED_KEPT = 100


class Printed:
    """The lines kept per process id, and who follows which process."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.lines: dict[str, deque] = {}  # id -> [when, stream, text], oldest first
        self.dropped: dict[str, int] = {}  # id -> lines its process dropped (over its rate)
        self.followers: dict[str, list] = {}  # id -> [(connection, tag)]
        self.gone: deque = deque()  # ids of ended processes whose lines are kept

    def add(self, ident: str, payload, dropped) -> None:
        """A ``taskout`` from process ``ident``: kept, and passed to its followers."""
        try:
            lines = json.loads(bytes(payload).decode("utf-8", "replace"))
        except ValueError:
            return
        kept = self.lines.setdefault(ident, deque(maxlen=LINES_KEPT))
        now = time.time()
        for entry in lines if isinstance(lines, list) else ():
            if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str):
                kept.append([now, entry[1], entry[2]])
        if type(dropped) is int and dropped > 0:
            self.dropped[ident] = self.dropped.get(ident, 0) + dropped
        self.tell(ident, {"dropped": dropped} if dropped else {}, bytes(payload))

    def tell(self, ident: str, head: dict, payload: bytes = b"[]") -> None:
        followers = self.followers.get(ident)
        if not followers:
            return
        followers[:] = [(conn, tag) for conn, tag in followers if not conn.closed]
        for conn, tag in followers:
            self.loop.send(conn, wire.encode({"op": "taskout", "tag": tag, **head}, payload))

    def ended(self, ident: str, reason: str) -> None:
        """Process ``ident`` ended: its last lines stay (fewer), its followers are told."""
        self.tell(ident, {"ended": reason[:4000]})
        self.followers.pop(ident, None)
        kept = self.lines.pop(ident, None)
        if kept:
            self.lines[ident] = deque(list(kept)[-ENDED_LINES_KEPT:], maxlen=ENDED_LINES_KEPT)
            self.gone.append(ident)
            while len(self.gone) > ENDED_KEPT:
                old = self.gone.popleft()
                self.lines.pop(old, None)
                self.dropped.pop(old, None)

    def logs(self, conn, request, ident: str, lines: int | None, running: bool,
             tag: str | None) -> bytes:
        """The answer to a ``logs`` request for process ``ident``: its last ``lines``
        (all kept: None). A ``tag`` for one ``running``: the connection follows it under
        that tag from now on."""
        kept = list(self.lines.get(ident, ()))
        if lines is not None:
            kept = kept[-lines:] if lines else []
        if tag is not None and running:
            self.followers.setdefault(ident, []).append((conn, tag))
        head = {"op": "logged", "id": request, "pid": ident, "running": running}
        if self.dropped.get(ident):
            head["dropped"] = self.dropped[ident]
        return wire.encode(head, json.dumps(kept).encode())
