"""Joining a command's socket to a node's SSH channel, byte for byte, both ways, until
either end closes. The node's protocol runs end to end through it (handshake, heartbeats,
cancels): the hub reads none of it."""

from __future__ import annotations

import socket
import threading
from typing import Callable

CHUNK = 256 * 1024


class Splice:
    """One command's stream to one node. ``up`` and ``down`` count the bytes sent to the
    node and back; ``done`` is called once, when both directions have ended."""

    def __init__(self, sock: socket.socket, channel, label: str,
                 done: Callable[["Splice"], None]) -> None:
        self.sock = sock
        self.channel = channel
        self.label = label
        self.up = 0
        self.down = 0
        self._done = done
        self._ended = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self.sock.settimeout(None)
        self.channel.settimeout(None)
        for target, name in ((self._to_node, "up"), (self._to_command, "down")):
            threading.Thread(target=target, daemon=True,
                             name=f"clusterctl-hub-{name}-{self.label}").start()

    def close(self) -> None:
        """End it now: both ends see the stream close (either end leaving ends both: a
        command never half-closes, and a node that left has nothing more to say)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked reading it
        except OSError:
            pass
        try:
            self.channel.close()
        except Exception:  # noqa: BLE001 - closing what may be closed already
            pass

    def _to_node(self) -> None:
        self._pump(self.sock.recv, self.channel.sendall, "up")

    def _to_command(self) -> None:
        self._pump(self.channel.recv, self.sock.sendall, "down")

    def _pump(self, read, write, counter: str) -> None:
        """Copy until the reading end closes or either end fails; count in ``counter``."""
        try:
            while True:
                data = read(CHUNK)
                if not data:
                    break
                write(data)
                setattr(self, counter, getattr(self, counter) + len(data))
        except Exception:  # noqa: BLE001 - either end went away: the stream ends
            pass
        self._end()

    def _end(self) -> None:
        self.close()
        with self._lock:
            self._ended += 1
            last = self._ended == 2
        if last:
            self.sock.close()
            self._done(self)
