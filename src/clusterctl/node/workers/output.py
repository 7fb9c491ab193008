"""What a task prints: ``sys.stdout`` and ``sys.stderr`` of a worker, sent line by line
to the controller whose task runs (``taskout``), which shows them on its command's
stderr. (A spawned process's go to its node, which keeps them: processes/printed.py;
they are sent by the process's own thread, when it prints or waits for a message.) Without this, a user function's ``print`` went to the node's log, where a person
debugging with print never looks.

Each line carries the item it was printed for (the chunk's first item, ``at``, plus the
items of the chunk done before it: known from the map's list of outcomes, so the hot
loop pays nothing per item; none for a call) and its stream. Lines are sent in batches: when
FLUSH_SECONDS passed since the first one waiting (a thread of the worker's own sends
them while the task runs on), when BATCH_BYTES wait, and always before the task's
reply, so a result never overtakes what its task printed.

A chatty function cannot stall the run: a slot sends at most RATE lines a second (after
a burst of BURST), a line is cut at LINE_MAX characters, and what is over is dropped
and counted; the count travels with the next batch, and the controller says so. A
process the task forks (``multiprocessing``'s fork) inherits these streams but not the
channel: what it prints goes to the node's log, as everything written straight to the
file descriptors (by C code, by a subprocess) does.

Ships to hosts: the standard library only.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time

from .. import wire

FLUSH_SECONDS = 0.1
BATCH_BYTES = 1 << 15
RATE = 200.0  # lines a second a slot may send, on average ...
BURST = 2000  # ... after a first burst of this many
LINE_MAX = 4096  # characters of a line; the rest is cut


class TaskOutput:
    """The lines a worker's tasks print, waiting to be sent with ``send(frame)`` (which
    the worker serialises with its own sends)."""

    def __init__(self, send, fallback, threaded: bool = True) -> None:
        self.send = send
        self.threaded = threaded  # False: sent only by the thread that prints (a process's)
        self.fallback = fallback  # where a forked child's prints go: the original stream
        self.pid = os.getpid()
        # where a map is: (its first item, the list of its items' outcomes so far), so the
        # item a line is printed for is known without a word per item (None: a call)
        self.place: tuple[int, list] | None = None
        self.lines: list[list] = []  # [item, stream, text], not sent yet
        self.size = 0
        self.partial = {"out": "", "err": ""}
        self.dropped = 0
        self.first = 0.0  # when the oldest waiting line came
        self.tokens = float(BURST)
        self.refilled = time.monotonic()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def write(self, stream: str, text: str) -> None:
        if os.getpid() != self.pid:  # a child the task forked: not our channel to write
            self.fallback(stream, text)
            return
        with self.lock:
            parts = (self.partial[stream] + text).split("\n")
            rest = parts.pop()
            while len(rest) > LINE_MAX:  # a line that never ends is sent in pieces
                parts.append(rest[:LINE_MAX])
                rest = rest[LINE_MAX:]
            self.partial[stream] = rest
            for line in parts:
                self._add(stream, line)
            if self.size >= BATCH_BYTES or not self.threaded and self.lines \
                    and time.monotonic() - self.first >= FLUSH_SECONDS:
                self._flush()
        if self.lines and self.threaded:
            if self.thread is None:
                self._start_thread()
            self.wake.set()

    def task_ended(self) -> None:
        """Send what the task printed (its last line too, if it did not end), before its
        reply goes."""
        if not (self.lines or self.dropped or self.partial["out"] or self.partial["err"]):
            return
        with self.lock:
            for stream in ("out", "err"):
                if self.partial[stream]:
                    self._add(stream, self.partial[stream])
                    self.partial[stream] = ""
            self._flush()

    def _add(self, stream: str, line: str) -> None:
        now = time.monotonic()
        self.tokens = min(float(BURST), self.tokens + (now - self.refilled) * RATE)
        self.refilled = now
        if self.tokens < 1:
            self.dropped += 1
            return
        self.tokens -= 1
        if len(line) > LINE_MAX:
            line = line[:LINE_MAX] + "…"
        if not self.lines:
            self.first = now
        place = self.place
        self.lines.append([None if place is None else place[0] + len(place[1]), stream, line])
        self.size += len(line) + 16

    def _flush(self) -> None:
        """Send the waiting lines (called holding ``lock``)."""
        if not self.lines and not self.dropped:
            return
        head = {"op": "taskout"}
        if self.dropped:
            head["dropped"] = self.dropped
        payload = json.dumps(self.lines, ensure_ascii=False).encode("utf-8", "replace")
        self.lines, self.size, self.dropped = [], 0, 0
        frame = wire.encode(head, payload)
        try:
            self.send(frame)
        except OSError:
            pass  # (the node is gone: the worker's next read finds it out)

    def _start_thread(self) -> None:
        with self.lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(target=self._send_late, name="taskout", daemon=True)
        self.thread.start()

    def _send_late(self) -> None:
        """Send lines that waited FLUSH_SECONDS while the task runs on. Woken by a line
        written (``wake``), so a worker that prints nothing more wakes no more."""
        while True:
            self.wake.wait()
            self.wake.clear()
            time.sleep(FLUSH_SECONDS)
            if self.lines:
                with self.lock:
                    self._flush()


class TaskStream(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` of a worker: text goes to ``TaskOutput``."""

    def __init__(self, output: TaskOutput, stream: str, original) -> None:
        self.output = output
        self.stream = stream
        self.original = original

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if text:
            self.output.write(self.stream, text)
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # (what C code and subprocesses write to: the node's log)
        return self.original.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"


def install(send, threaded: bool = True) -> TaskOutput:
    """Point this process's ``sys.stdout`` and ``sys.stderr`` at ``send``: a worker's
    at the controller; a spawned process's (``threaded`` False: its channel is written
    by its own thread alone) at its node, which keeps them for ``logs``."""
    originals = {"out": sys.stdout, "err": sys.stderr}

    def fallback(stream: str, text: str) -> None:
        try:
            originals[stream].write(text)
        except (OSError, ValueError):
            pass

    output = TaskOutput(send, fallback, threaded)
    sys.stdout = TaskStream(output, "out", originals["out"])
    sys.stderr = TaskStream(output, "err", originals["err"])
    return output
