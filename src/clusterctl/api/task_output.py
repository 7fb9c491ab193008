"""What tasks print, shown here: each line a node's worker sent (``taskout``, see the
node's workers/output.py), prefixed with where it came from, ``n1[17]`` (node and item)
or ``n1`` (a call), written to this process's stderr, or to what the command gives
(``write``: above its live progress), or nowhere (``quiet``).

A line is text from another machine: control characters (a terminal's escape
sequences among them) are shown as ``?``, so a task cannot move the cursor or retitle
the terminal. Lines come from many nodes at once; beyond RATE lines a second (after a
burst of BURST) they are dropped here too, and counted: ``dropped`` (and the counts the
nodes sent of what they dropped themselves) is said once at the end, ``summary()``.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from typing import Callable

RATE = 500.0  # lines a second shown, on average, from all nodes ...
BURST = 5000  # ... after a first burst of this many

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class TaskOutput:
    """Takes ``taskout`` messages (from connection reader threads) and shows the lines."""

    def __init__(self, quiet: bool = False, write: Callable[[str, str], None] | None = None) -> None:
        self.quiet = quiet
        self.write = write or _to_stderr  # (prefix, line) -> shown
        self.shown = 0
        self.dropped = 0  # here, over RATE
        self.dropped_on_nodes = 0  # by the nodes' slots, over theirs
        self._tokens = float(BURST)
        self._refilled = time.monotonic()
        self._lock = threading.Lock()
        self._followers: dict[str, Callable[[dict, list], None]] = {}  # tag -> its taker

    def follow(self, tag: str, take: Callable[[dict, list], None]) -> None:
        """Hand the ``taskout``s tagged ``tag`` (a followed process's) to ``take(head,
        lines)`` instead of showing them (``api.actors.logs``)."""
        self._followers[tag] = take

    def unfollow(self, tag: str) -> None:
        self._followers.pop(tag, None)

    def take(self, node: str, head: dict, payload) -> None:
        """One ``taskout``: its lines, shown in order; what the node dropped, counted."""
        dropped = head.get("dropped")
        try:
            lines = json.loads(bytes(payload).decode("utf-8", "replace"))
        except ValueError:
            lines = []
        if not isinstance(lines, list):
            lines = []
        tag = head.get("tag")
        if tag is not None:
            follower = self._followers.get(tag)
            if follower is not None:
                follower(head, lines)
            return
        with self._lock:
            if type(dropped) is int and dropped > 0:
                self.dropped_on_nodes += dropped
            if self.quiet:
                return
            for entry in lines:
                if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str)):
                    continue
                item, stream, text = entry
                if not self._admit():
                    self.dropped += 1
                    continue
                where = f"{node}[{item}]" if type(item) is int else node
                self.write(where, _CONTROL.sub("?", text))
                self.shown += 1

    def _admit(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(BURST), self._tokens + (now - self._refilled) * RATE)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def summary(self) -> str | None:
        """What was dropped, in one line (None: nothing was)."""
        parts = []
        if self.dropped_on_nodes:
            parts.append(f"{self.dropped_on_nodes:,} lines on the nodes (over 200 a second "
                         "from one slot)")
        if self.dropped:
            parts.append(f"{self.dropped:,} lines here (over {RATE:.0f} a second from all)")
        if not parts:
            return None
        return "task output dropped: " + " and ".join(parts)


    def close(self) -> None:
        """Say what was dropped, if anything was, once."""
        note = self.summary()
        if note is not None:
            self.dropped = self.dropped_on_nodes = 0
            self.write("clusterctl", note)


def _to_stderr(where: str, line: str) -> None:
    try:
        sys.stderr.write(f"{where}: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
