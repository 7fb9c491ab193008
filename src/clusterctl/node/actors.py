"""The node's spawned processes: who they are, their names, their mailboxes' room, the
messages and calls between them, and what their end sets off (failed calls, monitors,
links, a restart).

Each process is an OS process forked by the node, with a channel (a socketpair) over
which it sends and receives frames; its own side is ``actor.py``. The node never
unpickles a message: it reads the head (``to``, ``ref``), checks the receiver's room
and forwards the frame as it came. Ships to hosts: the standard library only. See
docs/how-it-works.md, section "Spawned processes".
"""

from __future__ import annotations

import itertools
import os
import time

from . import ops, wire
from .actor import process_main
from .addresses import NAME, is_id
from .log import log
from .loop import Endpoint, Loop
from .processes import WorkerProcesses
from .supervision import Restarts

DEFAULT_MAILBOX = 1 << 26  # bytes of messages a process may have waiting (64 MiB)
GIVEN_UP_KEPT = 64  # processes that stay down after too many restarts, kept for ps
RECV_SIZE = 1 << 16
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Proc(Endpoint):
    """One spawned process, as its node sees it."""

    __slots__ = ("num", "ident", "name", "label", "frame", "restarts", "pid", "index",
                 "decoder", "queued", "limit", "calls", "links", "monitors", "trap", "exit",
                 "killed", "answer", "running", "started", "ended", "reaper", "crashed",
                 "finished")

    def __init__(self, sock, pid: int, num: int, ident: str, on_readable, on_broken) -> None:
        super().__init__(sock, on_readable, on_broken)
        self.num, self.ident, self.pid, self.index = num, ident, pid, num
        self.decoder = wire.FrameDecoder()
        self.name = None
        self.label = "?"
        self.frame = b""  # the spawn frame: what a restart runs again
        self.restarts: Restarts | None = None
        self.queued = 0  # message bytes sent to it and not yet reported taken
        self.limit = DEFAULT_MAILBOX
        self.calls: set = set()  # refs of calls it was sent and has not answered
        self.links: set = set()  # ids of linked processes
        self.monitors: dict = {}  # ref -> who watches (a Caller)
        self.trap = False
        self.exit: dict | None = None  # how it said it ends ({"kind", "reason", "tb"})
        self.killed: dict | None = None  # why the node ended it
        self.answer = None  # who waits to hear it started: (ok, info) -> None
        self.running = False
        self.started = time.time()
        self.ended = 0.0
        self.reaper = None
        self.crashed = True  # (for WorkerProcesses: an unreaped end is still reported)
        self.finished = False


class Caller:
    """Who sent a call or watches a process: a process (by id) or a controller's request
    on a connection; ``tell`` gives it a frame, ``fail`` an error."""

    __slots__ = ("ident", "conn", "request")

    def __init__(self, ident: str | None = None, conn=None, request=None) -> None:
        self.ident, self.conn, self.request = ident, conn, request


def reason_of(exit: dict) -> tuple[str, bool]:
    """An end's reason as text, and whether it is abnormal."""
    return exit.get("reason", "?"), exit.get("kind") != "normal"


class Actors:
    """The table of a node's live processes and their names, and the routing between
    them. Requests (spawn, register, link, ...) are ``ProcessRequests``'s; this class
    starts processes, delivers messages and calls, and ends processes."""

    def __init__(self, loop: Loop, *, name: str, stats: dict, close_in_child) -> None:
        self.loop = loop
        self.name = name
        self.stats = stats
        self.close_node_in_child = close_in_child
        self.procs = WorkerProcesses(loop, name=name, close_in_child=self.close_in_child,
                                     on_exit=self.reaped, on_refork=None)
        self.by_num: dict[int, Proc] = {}
        self.names: dict[str, Proc] = {}
        self.calls: dict[str, tuple[Caller, Proc]] = {}  # ref -> (caller, callee)
        self.watched: dict[str, Proc] = {}  # monitor ref -> the process it watches
        self.given_up: list[dict] = []  # ps rows of processes that stay down
        self.numbers = itertools.count(1)
        self.stopping = False
        self.on_request = None  # (proc, head, payload) -> None: ProcessRequests.from_process

    # -- the table ------------------------------------------------------------------------------

    def busy(self) -> bool:
        """Live processes keep their node from exiting idle."""
        return bool(self.by_num)

    def resolve(self, to: str) -> Proc | None:
        """The live process with id or name ``to`` on this node."""
        proc = self.names.get(to)
        if proc is not None:
            return proc
        node, _, num = to.rpartition(".")
        if node == self.name and num.isdigit():
            return self.by_num.get(int(num))
        return None

    def elsewhere(self, to: str) -> bool:
        """``to`` is an id of a process on another node."""
        return is_id(to) and to.rpartition(".")[0] != self.name

    def live(self, ident: str | None) -> Proc | None:
        return None if ident is None else self.resolve(ident)

    def close_in_child(self) -> None:
        self.close_node_in_child()
        for proc in self.by_num.values():
            proc.sock.close()

    # -- starting -------------------------------------------------------------------------------

    def start(self, frame: bytes, *, label: str, name: str | None, restarts: Restarts,
              limit: int, answer=None) -> Proc:
        """Fork a process that runs the spawn ``frame``; ``answer(ok, info)`` is told once it
        runs (or could not load its function)."""
        num = next(self.numbers)
        ident = "%s.%d" % (self.name, num)
        sock, pid = self.procs.fork(main=process_main)
        proc = Proc(sock, pid, num, ident, self.read_proc, self.broken)
        proc.frame, proc.label, proc.name, proc.restarts = frame, label, name, restarts
        proc.limit, proc.answer = limit, answer
        self.by_num[num] = proc
        if name is not None:
            self.names[name] = proc
        self.loop.watch(proc)
        self.loop.send(proc, wire.encode({"op": "start", "pid": ident, "limit": limit}), frame)
        self.stats["spawned"] = self.stats.get("spawned", 0) + 1
        return proc

    # -- reading a process ------------------------------------------------------------------------

    def read_proc(self, proc: Proc) -> None:
        try:
            chunk = proc.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.end(proc)
            return
        try:
            frames = proc.decoder.feed(chunk)
        except wire.FrameError as exc:
            self.end(proc, {"kind": "error", "reason": "garbage on its channel: %s" % exc})
            return
        for head, payload, raw in frames:
            if proc.finished:
                return
            try:
                self.from_process(proc, head, payload, raw)
            except Exception as exc:  # noqa: BLE001 - one process's bad frame ends it only
                log("%s: %r frame not understood (%s: %s)" % (proc.ident, head.get("op"),
                                                             type(exc).__name__, exc))
                self.end(proc, {"kind": "error", "reason": "bad %r frame on its channel"
                                % str(head.get("op"))[:64]})

    def broken(self, proc: Proc, reason: str) -> None:  # noqa: ARG002
        self.end(proc)

    def from_process(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        op = head["op"]
        if op == "send":
            self.route(head["to"], len(payload), raw, head.get("ref"), Caller(proc.ident))
        elif op == "reply":
            self.answer_call(head["ref"], payload, raw)
        elif op == "took":
            proc.queued = max(0, proc.queued - head["bytes"])
        elif op == "forget":
            entry = self.calls.pop(head["ref"], None)
            if entry is not None:
                entry[1].calls.discard(head["ref"])
        elif op == "started":
            proc.running = True
            answer, proc.answer = proc.answer, None
            if answer is not None:
                answer(True, {"pid": proc.ident})
        elif op == "exiting":
            proc.exit = {"kind": head["kind"], "reason": str(head.get("reason", "?")),
                         "tb": str(head.get("tb", ""))}
        else:
            self.on_request(proc, head, payload)

    # -- messages and calls -------------------------------------------------------------------------

    def route(self, to: str, size: int, frame: bytes, ref: str | None,
              caller: Caller) -> tuple[str, str] | None:
        """Deliver a message frame to ``to``'s mailbox (a call's too, noting who waits for
        the reply); if it cannot be, the refusal (kind, text), told to the sender too."""
        target = self.resolve(to)
        if target is None:
            if self.elsewhere(to):
                return self.refuse(caller, ref, "remote", "%s is on another node; messages "
                                   "between nodes go through the hub, which this node has not "
                                   "reached" % to)
            if ref is None and caller.ident is not None and is_id(to):
                return None  # a message to an ended process is dropped (as Erlang's)
            return self.refuse(caller, ref, "noproc", "no process %s %s" % (
                "named" if NAME(to) else "with the id", to))
        if target.queued + size > target.limit:
            return self.refuse(caller, ref, "full", "the mailbox of %s is full: %d bytes wait "
                               "there, and the limit is %d" % (self.describe(target), target.queued,
                                                              target.limit))
        target.queued += size
        if ref is not None:
            self.calls[ref] = (caller, target)
            target.calls.add(ref)
        self.loop.send(target, frame)
        self.stats["messages"] = self.stats.get("messages", 0) + 1
        return None

    def refuse(self, caller: Caller, ref: str | None, kind: str, reason: str) -> tuple[str, str]:
        if ref is not None:
            self.fail_call(caller, ref, kind, reason)
        elif caller.ident is not None:
            sender = self.live(caller.ident)
            if sender is not None:
                self.loop.send(sender, wire.encode({"op": "refused", "kind": kind, "reason": reason}))
        return kind, reason

    def answer_call(self, ref: str, payload, raw: bytes) -> None:
        entry = self.calls.pop(ref, None)
        if entry is None:
            return  # the caller gave up (a timeout) or is gone
        caller, callee = entry
        callee.calls.discard(ref)
        if caller.conn is not None:
            self.loop.send(caller.conn, wire.encode_ok_result(caller.request, bytes(payload)))
        else:
            proc = self.live(caller.ident)
            if proc is not None:
                self.loop.send(proc, raw)

    def fail_call(self, caller: Caller, ref: str, kind: str, reason: str) -> None:
        if caller.conn is not None:
            error = {"noproc": "NoProcess", "full": "MailboxFull", "remote": "NoRoute"}.get(kind, "CallFailed")
            self.loop.send(caller.conn, wire.encode(ops.error_head(kind, caller.request, error,
                                                                   reason, self.name)))
        else:
            proc = self.live(caller.ident)
            if proc is not None:
                self.loop.send(proc, wire.encode({"op": "failed", "ref": ref, "kind": kind,
                                                  "reason": reason}))

    def describe(self, proc: Proc) -> str:
        return "%s (%s)" % (proc.ident, proc.name) if proc.name else proc.ident

    # -- ending ------------------------------------------------------------------------------------

    def end(self, proc: Proc, why: dict | None = None) -> None:
        """End a process (its channel closed, or the node ends it for ``why``); what its end
        sets off happens once it is reaped."""
        if why is not None and proc.killed is None:
            proc.killed = why
        if proc.finished or proc.ended:
            return
        how = self.procs.end(proc)
        if how is not None:
            self.finish(proc, how)

    def reaped(self, proc: Proc, how: str) -> None:
        self.finish(proc, how)

    def finish(self, proc: Proc, how: str) -> None:
        """The process has exited: free its id and name, fail the calls it did not answer,
        tell its monitors and links, answer its spawner, and restart it if its policy says so."""
        if proc.finished:
            return
        proc.finished = True
        exit = proc.killed or proc.exit or {"kind": "crashed", "reason": "the process " + how}
        reason, abnormal = reason_of(exit)
        self.by_num.pop(proc.num, None)
        if proc.name is not None and self.names.get(proc.name) is proc:
            del self.names[proc.name]
        who = self.describe(proc)
        for ref in list(proc.calls):
            caller, _ = self.calls.pop(ref, (None, None))
            if caller is not None:
                self.fail_call(caller, ref, "exited", "%s ended before it replied: %s" % (who, reason))
        for ref, watcher in proc.monitors.items():
            self.watched.pop(ref, None)
            self.notify(watcher, {"op": "down", "ref": ref, "who": proc.ident, "reason": reason,
                                  "tb": exit.get("tb", "")})
        for ident in proc.links:
            other = self.live(ident)
            if other is None:
                continue
            other.links.discard(proc.ident)
            if other.trap:
                self.notify(Caller(ident), {"op": "exit", "who": proc.ident, "reason": reason,
                                            "tb": exit.get("tb", "")})
            elif abnormal:
                self.end(other, {"kind": "linked", "reason": "linked process %s ended: %s" % (who, reason)})
        answer, proc.answer = proc.answer, None
        if answer is not None:
            kind = exit.get("kind") if exit.get("kind") in ("import", "unpickle") else "noproc"
            answer(False, {"kind": kind, "message": "%s did not start: %s" % (who, reason)})
        log("process %s (pid %d, %s) ended: %s" % (who, proc.pid, proc.label, reason))
        self.supervise(proc, exit, reason, abnormal)

    def notify(self, watcher: Caller, head: dict) -> None:
        if watcher.conn is not None:
            head = dict(head, id=watcher.request)
            self.loop.send(watcher.conn, wire.encode(head))
        else:
            proc = self.live(watcher.ident)
            if proc is not None:
                self.loop.send(proc, wire.encode(head))

    def supervise(self, proc: Proc, exit: dict, reason: str, abnormal: bool) -> None:
        """Restart an ended process as its policy says, under its name, with a new id."""
        restarts = proc.restarts
        if self.stopping or not proc.running or exit.get("kind") == "killed" \
                or restarts is None or not restarts.wanted(abnormal):
            return
        if proc.name is not None and proc.name in self.names:
            return  # the name went to another process meanwhile
        if restarts.allow(time.monotonic()):
            new = self.start(proc.frame, label=proc.label, name=proc.name, restarts=restarts,
                             limit=proc.limit)
            log("process %s restarted as %s (%s restart %d)" % (self.describe(proc), new.ident,
                                                                 restarts.kind, restarts.count))
            return
        row = self.row(proc, time.time())
        row.update(state="failed", reason=restarts.given_up(reason), memory=None, mailbox=0)
        self.given_up = (self.given_up + [row])[-GIVEN_UP_KEPT:]
        log("process %s: %s" % (self.describe(proc), row["reason"]))

    def shutdown(self) -> None:
        """The node stops: its processes end with it (no restarts)."""
        self.stopping = True
        for proc in list(self.by_num.values()):
            proc.killed = {"kind": "killed", "reason": "its node stopped"}
            self.procs.end(proc)
        self.procs.reap_all()

    def connection_gone(self, conn) -> None:
        """A controller went: drop its calls and its monitors."""
        for ref, (caller, callee) in list(self.calls.items()):
            if caller.conn is conn:
                del self.calls[ref]
                callee.calls.discard(ref)
        for ref, proc in list(self.watched.items()):
            if proc.monitors.get(ref) is not None and proc.monitors[ref].conn is conn:
                del proc.monitors[ref], self.watched[ref]

    # -- ps ---------------------------------------------------------------------------------------

    def row(self, proc: Proc, now: float) -> dict:
        return {"id": proc.ident, "name": proc.name, "node": self.name, "function": proc.label,
                "state": "running" if proc.running else "starting", "started": proc.started,
                "uptime": now - proc.started, "mailbox": proc.queued,
                "restarts": proc.restarts.count if proc.restarts else 0,
                **(proc.restarts.describe() if proc.restarts else {}),
                "memory": memory(proc.pid), "pid": proc.pid, "reason": None}

    def rows(self) -> list[dict]:
        now = time.time()
        return [self.row(proc, now) for proc in self.by_num.values()] + list(self.given_up)


def memory(pid: int) -> int | None:
    """A process's resident memory in bytes (None where /proc does not tell)."""
    try:
        with open("/proc/%d/statm" % pid) as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None
