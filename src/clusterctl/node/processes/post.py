"""Delivering frames to spawned processes, on this node or on another: messages (the
receiver's room checked), calls and their replies, and notices (down, exit, refused,
failed) to whoever waits, a process here, a process elsewhere or a controller.

Ships to hosts: the standard library only. See docs/how-it-works.md, section
"Spawned processes".
"""

from __future__ import annotations

import time

from .. import ops, wire
from ..failures import type_name
from ..addresses import NAME, is_id, node_of



class Caller:
    """Who sent a call or watches a process: a process (by id, here or elsewhere) or a
    controller's request on a connection."""

    __slots__ = ("ident", "conn", "request")

    def __init__(self, ident: str | None = None, conn=None, request=None) -> None:
        self.ident, self.conn, self.request = ident, conn, request


class Post:
    """The routing of ``Actors``' processes (``actors``); frames for other nodes go to
    ``peers`` (set once both exist)."""

    def __init__(self, actors) -> None:
        self.actors = actors
        self.loop = actors.loop
        self.name = actors.name
        self.stats = actors.stats
        self.peers = None
        self.calls: dict[str, tuple[Caller, object]] = {}  # ref -> (caller, callee here)
        self.recorders: list = []  # traces that take the messages (see workers/tracing.py)

    def elsewhere(self, to: str) -> str | None:
        """The id of the process ``to`` names on another node (as far as this node
        knows: an id names its node; a name, the hub's table), or None."""
        if is_id(to):
            return to if node_of(to) != self.name else None
        return self.peers.where(to) if self.peers is not None else None

    # -- messages and calls ---------------------------------------------------------------------

    def route(self, to: str, size: int, frame: bytes, ref: str | None,
              caller: Caller) -> tuple[str, str] | None:
        """Deliver a message frame to ``to``'s mailbox (a call's too, noting who waits for
        the reply); if it cannot be, the refusal (kind, text), told to the sender too."""
        target = self.actors.resolve(to)
        if target is None:
            remote = self.elsewhere(to)
            if remote is not None:
                if ref is None and node_of(remote) in self.peers.lost:
                    return None  # a lost node's processes are gone: the message is dropped
                problem = self.peers.send(remote, frame)
                if problem is not None:
                    lost = node_of(remote) in self.peers.lost
                    return self.refuse(caller, ref, "exited" if lost else "remote", problem)
                if self.recorders:
                    self.record(caller, remote, size, "out")
                if ref is not None:
                    self.peers.calls[ref] = (caller, node_of(remote))
                return None
            if ref is None and caller.ident is not None and is_id(to):
                return None  # a message to an ended process is dropped (as Erlang's)
            return self.refuse(caller, ref, "noproc", "no process %s %s" % (
                "named" if NAME(to) else "with the id", to))
        if target.queued + size > target.limit:
            return self.refuse(caller, ref, "full", "the mailbox of %s is full: %d bytes wait "
                               "there, and the limit is %d" % (self.actors.describe(target),
                                                              target.queued, target.limit))
        target.queued += size
        if ref is not None:
            self.calls[ref] = (caller, target)
            target.calls.add(ref)
        self.loop.send(target, frame)
        self.stats["messages"] = self.stats.get("messages", 0) + 1
        if self.recorders:
            where = "program" if caller.conn is not None else (
                "local" if self.actors.live(caller.ident) is not None else "in")
            self.record(caller, target.ident, size, where)
        return None

    def record(self, caller: Caller, to: str, size: int, where: str) -> None:
        event = ["msg", time.monotonic(), caller.ident, to, size, where]
        for recorder in self.recorders:
            recorder.add(event)

    def refuse(self, caller: Caller, ref: str | None, kind: str, reason: str) -> tuple[str, str]:
        if ref is not None:
            self.fail_call(caller, ref, kind, reason)
        elif caller.ident is not None:
            self.notify(caller, {"op": "refused", "kind": kind, "reason": reason})
        return kind, reason

    def replied(self, ref: str, payload, raw: bytes) -> None:
        """A process here replied to the call ``ref``."""
        entry = self.calls.pop(ref, None)
        if entry is None:
            return  # the caller gave up (a timeout) or is gone
        caller, callee = entry
        callee.calls.discard(ref)
        self.answer(caller, payload, raw)

    def answer(self, caller: Caller, payload, raw: bytes) -> None:
        """A reply frame to its caller, wherever it is."""
        if caller.conn is not None:
            self.loop.send(caller.conn, wire.encode_ok_result(caller.request, bytes(payload)))
            return
        proc = self.actors.live(caller.ident)
        if proc is not None:
            self.loop.send(proc, raw)
        elif caller.ident is not None and self.peers is not None:
            self.peers.send(caller.ident, raw)

    def fail_call(self, caller: Caller, ref: str, kind: str, reason: str) -> None:
        if caller.conn is not None:
            self.loop.send(caller.conn, wire.encode(ops.error_head(
                kind, caller.request, type_name(kind, "CallFailed"), reason, self.name)))
        else:
            self.notify(caller, {"op": "failed", "ref": ref, "kind": kind, "reason": reason})

    def notify(self, watcher: Caller, head: dict) -> None:
        """A notice to a process (here or elsewhere) or a controller's request."""
        if watcher.conn is not None:
            self.loop.send(watcher.conn, wire.encode(dict(head, id=watcher.request)))
            return
        proc = self.actors.live(watcher.ident)
        if proc is not None:
            self.loop.send(proc, wire.encode(head))
        elif watcher.ident is not None and self.peers is not None and self.elsewhere(watcher.ident):
            self.peers.tell(watcher.ident, head)

    def deliver(self, ident: str | None, raw: bytes) -> None:
        """A frame, as it came from another node, to a process here."""
        proc = self.actors.live(ident)
        if proc is not None:
            self.loop.send(proc, raw)

    def forget_call(self, ref: str) -> None:
        """The caller gave up on the call ``ref`` (a timeout): a late reply is not wanted."""
        entry = self.calls.pop(ref, None)
        if entry is not None:
            entry[1].calls.discard(ref)
        if self.peers is not None:
            self.peers.calls.pop(ref, None)

    def forget_conn(self, conn) -> None:
        """A controller went: drop the calls it waits for."""
        for ref, (caller, callee) in list(self.calls.items()):
            if caller.conn is conn:
                del self.calls[ref]
                callee.calls.discard(ref)

    def forget_node(self, node: str) -> None:
        """A node was lost: drop the calls its processes wait for here."""
        for ref, (caller, callee) in list(self.calls.items()):
            if caller.ident is not None and node_of(caller.ident) == node:
                del self.calls[ref]
                callee.calls.discard(ref)
