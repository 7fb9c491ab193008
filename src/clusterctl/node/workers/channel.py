"""A worker's end of its socketpair with the node: frames in, each under a sequence
number (drops applied as they come, the answer to an ask taken apart), and replies out
(held back a moment while tasks are quick, the word of a dropped task ahead of them).

See docs/how-it-works.md, section "The node-worker channel" (message layout, operations,
``HOLD_FLAG`` and ``DROP_FLAG``). Ships to hosts: the standard library only.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import deque

CHANNEL = struct.Struct("!QI")  # seq, frame length
HOLD_FLAG = 1 << 63  # set in a task's seq by the node: its reply may wait for the next ones
DROP_FLAG = 1 << 62  # a task dropped before it started (from the node: drop it; back: dropped)
SEQ_MASK = DROP_FLAG - 1
# a worker's own message about its running task (envwant: a module it lacks; taskout: what
# it printed), and the node's answer to an envwant
WANT_SEQ = 1 << 61
HOLD_COUNT = 32  # at most this many replies,
HOLD_BYTES = 1 << 16  # of at most this many bytes, are held back at once
RECV_SIZE = 1 << 16
RECV_SIZE_MAX = 1 << 22


class NodeChannel:
    """Frames to and from the node. Writes are whole under a lock: the thread that sends
    what tasks print (workers/output.py) writes beside the worker's own."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.ready: deque = deque()  # messages read but not handled yet
        self.held: list[bytes] = []  # replies not sent yet (see HOLD_FLAG)
        self.held_bytes = 0
        self.dropped: list[bytes] = []  # answers for dropped tasks, not sent yet (DROP_FLAG)
        self.answer: bytes | None = None  # the node's answer to an envwant (see ``exchange``)
        self.lock = threading.Lock()

    def read(self) -> tuple[int, bytes] | None:
        """The next (seq, frame) from the node, or None when the node is gone."""
        ready = self.ready
        while not ready:
            if self.held or self.dropped:
                self.flush()
            try:
                chunk = self.sock.recv(self.wanted())
            except InterruptedError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self.take(chunk)
        return ready.popleft()

    def poll(self) -> None:
        """Take in, without waiting, what the node sent while a task ran (drops, mostly),
        up to about RECV_SIZE_MAX bytes (a large task streaming in waits for its turn)."""
        taken = 0
        while taken < RECV_SIZE_MAX:
            try:
                chunk = self.sock.recv(self.wanted(), socket.MSG_DONTWAIT)
            except InterruptedError:
                continue
            except OSError:  # nothing there (BlockingIOError), or the node is gone
                return
            if not chunk:
                return  # (the node is gone: the next read finds it out)
            taken += len(chunk)
            self.take(chunk)

    def wanted(self) -> int:
        inbox = self.inbox
        if len(inbox) >= CHANNEL.size:  # in the middle of a large task: take more at once
            return max(RECV_SIZE, min(CHANNEL.size + CHANNEL.unpack_from(inbox)[1] - len(inbox),
                                      RECV_SIZE_MAX))
        return RECV_SIZE

    def take(self, chunk: bytes) -> None:
        """Split what was read into messages; apply drops at once."""
        inbox = self.inbox
        ready = self.ready
        if inbox:
            inbox += chunk
            data = inbox
        else:
            data = chunk
        size = len(data)
        pos = 0
        header = CHANNEL.size
        with memoryview(data) as view:
            while size - pos >= header:
                seq, length = CHANNEL.unpack_from(data, pos)
                end = pos + header + length
                if size < end:
                    break
                if seq & DROP_FLAG:
                    self.drop(seq & SEQ_MASK)
                elif seq == WANT_SEQ:
                    self.answer = bytes(view[pos + header:end])
                else:
                    ready.append((seq, bytes(view[pos + header:end])))
                pos = end
            if data is chunk and pos < size:
                inbox += view[pos:]
        if data is inbox:
            del inbox[:pos]

    def drop(self, seq: int) -> None:
        """The node cancelled task ``seq``: if it is still waiting here, it never runs."""
        ready = self.ready
        for i, (queued, _) in enumerate(ready):
            if queued & SEQ_MASK == seq:
                del ready[i]
                self.dropped.append(CHANNEL.pack(seq | DROP_FLAG, 0))
                return

    def send(self, seq: int, frame: bytes, hold: bool = False) -> None:
        """Send a reply, or hold it back (``hold``) while there is room."""
        header = CHANNEL.pack(seq, len(frame))
        if hold and self.ready and len(self.held) < HOLD_COUNT \
                and self.held_bytes + len(frame) < HOLD_BYTES:
            self.held.append(header + frame)
            self.held_bytes += len(frame)
            if self.dropped:  # (they never wait: the node decides on them)
                dropped, self.dropped = self.dropped, []
                self.sendall(b"".join(dropped))
            return
        if self.held or self.dropped:
            self.flush()
        if len(frame) < 65536:
            self.sendall(header + frame)
        else:  # a large result: two writes beat copying it
            with self.lock:
                self.sock.sendall(header)
                self.sock.sendall(frame)

    def flush(self) -> None:
        """Send the answers for dropped tasks, then the replies held back, in one write."""
        parts = self.dropped + self.held
        self.dropped, self.held, self.held_bytes = [], [], 0
        self.sendall(b"".join(parts))

    def sendall(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def tell(self, frame: bytes) -> None:
        """A message of the worker's own (WANT_SEQ), from any thread: replies held back
        are of tasks that ended, whose lines were told before them."""
        self.sendall(CHANNEL.pack(WANT_SEQ, len(frame)) + frame)

    def exchange(self, frame: bytes) -> bytes | None:
        """Tell the node ``frame`` (an envwant) and wait for its answer; None when the
        node is gone. Earlier replies do not wait for it; whatever else the node sends
        meanwhile waits its turn (drops are taken at once)."""
        if self.held or self.dropped:
            self.flush()
        self.answer = None
        try:
            self.tell(frame)
            while self.answer is None:
                chunk = self.sock.recv(self.wanted())
                if not chunk:
                    return None  # (the node is gone: the next read finds it out)
                self.take(chunk)
        except OSError:
            return None
        answer, self.answer = self.answer, None
        return answer
