"""What a spawned process printed: ``Cluster.logs``, the lines its node kept (the last
1,000 of a running process, the last 200 of one that ended lately), and with
``follow`` each new line as it comes, until the process ends (``clusterctl logs -f``).

A followed process's lines come as notices on its node's connection, tagged with what
this follow asked under, and go to this follow's queue (``TaskOutput.follow``); the tag
is in place before the request goes, so no line slips past. The follow also monitors the
process, so a node lost meanwhile ends it with an error rather than a wait forever.
"""

from __future__ import annotations

import itertools
import json
import queue
import time
from typing import Iterator, NamedTuple

from clusterctl import errors
from clusterctl.api.calls import answer_of

_tags = itertools.count(1)
WAKE_SECONDS = 0.5  # how often a follow looks whether its process's node is still there


class LogLine(NamedTuple):
    when: float  # by the clock of the process's host
    stream: str  # "out" or "err"
    text: str


class ProcessLogs:
    """The lines of process ``to`` (its ``pid``, once asked): iterate them. Following,
    the iteration ends when the process does, ``ended`` then saying why."""

    def __init__(self, conn, to: str, task_output, *, lines: int | None, follow: bool,
                 timeout: float | None) -> None:
        self.conn, self.to, self.follow = conn, to, follow
        self.task_output = task_output
        self.ended: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._tag = f"logs-{next(_tags)}" if follow else None
        head: dict = {"op": "logs", "to": to}
        if lines is not None:
            head["lines"] = lines
        if follow:
            head.update(follow=True, tag=self._tag)
            task_output.follow(self._tag, lambda head, lines: self._queue.put((head, lines)))
        try:
            pending = conn.request(head)
            answer = answer_of(conn, pending, timeout)
        except BaseException:
            self._stop()
            raise
        self.pid: str = answer["pid"]
        self.running = bool(answer.get("running"))
        self.dropped = answer.get("dropped") or 0  # lines it printed over its rate, not kept
        self._kept = json.loads(bytes(pending.payload) or b"[]")
        if not (follow and self.running):
            self._stop()

    def __iter__(self) -> Iterator[LogLine]:
        for when, stream, text in self._kept:
            yield LogLine(when, stream, text)
        if self._tag is None:
            return
        monitor = self.conn.request({"op": "monitor", "to": self.pid})
        quiet = 0  # wake-ups with nothing since the monitor said it ended
        try:
            while True:
                try:
                    head, lines = self._queue.get(timeout=WAKE_SECONDS)
                except queue.Empty:
                    if monitor.done and monitor.error is not None:
                        raise errors.NodeLost(self.conn.node, f"lost while following {self.pid}: "
                                              f"{getattr(monitor.error, 'reason', monitor.error)}")
                    quiet += monitor.done
                    if quiet > 2:  # (its end was told, its last word did not come)
                        self.ended = str((monitor.head or {}).get("reason") or "ended")
                        return
                    continue
                now = time.time()
                for entry in lines:
                    if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str):
                        yield LogLine(now, str(entry[1]), entry[2])
                if head.get("ended") is not None:
                    self.ended = str(head["ended"])
                    return
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._tag is not None:
            self.task_output.unfollow(self._tag)
            self._tag = None
