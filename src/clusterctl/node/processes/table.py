"""The node's spawned processes: who they are, their names, their mailboxes' room, the
messages and calls between them, and what their end sets off (failed calls, monitors,
links, a restart).

Each process is an OS process forked by the node, with a channel (a socketpair) over
which it sends and receives frames; its own side is ``runtime.py``. The node never
unpickles a message: it reads the head (``to``, ``ref``), checks the receiver's room
and forwards the frame as it came. Ships to hosts: the standard library only. See
docs/how-it-works.md, section "Spawned processes".
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque

from .. import ops, wire
from .runtime import process_main
from .peers import Peers
from .post import Caller, Post
from ..log import log
from ..loop import Endpoint, Loop
from ..workers.forks import WorkerProcesses
from ..supervision import Restarts

DEFAULT_MAILBOX = 1 << 26  # bytes of messages a process may have waiting (64 MiB)
GIVEN_UP_KEPT = 64  # processes that stay down after too many restarts, kept for ps
ENDED_KEPT = 100  # the last processes that ended otherwise, kept for ps (with how and when)
TRACEBACK_KEPT = 2000  # characters of an ended process's traceback kept: its end, nearest the error
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

    def row(self, node: str, now: float, ended: bool = False) -> dict:
        """Its ps row (it runs on ``node``), or the start of the one it has once ``ended``."""
        return {"id": self.ident, "name": self.name, "node": node, "function": self.label,
                "state": "running" if self.running else "starting", "started": self.started,
                "uptime": now - self.started, "mailbox": 0 if ended else self.queued,
                "restarts": self.restarts.count if self.restarts else 0,
                **(self.restarts.describe() if self.restarts else {}),
                "memory": None if ended else memory(self.pid), "pid": self.pid, "reason": None}

    def ended_row(self, node: str, exit: dict, reason: str,
                  restarted_as: str | None = None) -> dict:
        """Its ps row once it ended: "ended" (it returned, exited normally, or was killed)
        or "crashed" (anything else), when (``ended``, by its host's clock) and why: the
        reason, and, if it raised, the exception's type and the end of its traceback."""
        now = time.time()
        return {**self.row(node, now, ended=True), "reason": reason,
                "state": "ended" if exit.get("kind") in ("normal", "killed") else "crashed",
                "ended": now, "error": exit.get("type") or None,
                "traceback": (exit.get("tb") or "")[-TRACEBACK_KEPT:] or None,
                "restarted_as": restarted_as}


def reason_of(exit: dict) -> tuple[str, bool]:
    """An end's reason as text, and whether it is abnormal."""
    return exit.get("reason", "?"), exit.get("kind") != "normal"


class Actors:
    """The table of a node's live processes and their names: it starts them, reads what
    they send, and ends them (with what an end sets off: failed calls, monitors, links,
    a restart). Delivering frames is ``Post``'s; the other nodes are ``Peers``'; the
    requests (spawn, register, link, ...) are ``ProcessRequests``'."""

    def __init__(self, loop: Loop, *, name: str, stats: dict, close_in_child,
                 ids_path: str | None = None, requests=None) -> None:
        self.loop = loop
        self.name = name
        self.stats = stats
        self.close_node_in_child = close_in_child
        self.procs = WorkerProcesses(loop, name=name, close_in_child=self.close_in_child,
                                     on_exit=self.reaped, on_refork=None, child_main=process_main)
        self.by_num: dict[int, Proc] = {}
        self.names: dict[str, Proc] = {}
        self.watched: dict[str, Proc] = {}  # monitor ref -> the process it watches
        self.given_up: list[dict] = []  # ps rows of processes that stay down
        # ps rows of the last processes that ended (a command that spawned one, and whoever
        # runs ps later, can see why; the node log is not where a user looks)
        self.recently_ended: deque = deque(maxlen=ENDED_KEPT)
        self.ids_path = ids_path  # where the last id given is kept: a restarted node goes on
        self.numbers = itertools.count(last_id(ids_path) + 1)
        self.stopping = False
        self.recorders: dict = {}  # connection -> the trace recorder of its processes' events
        self.post = Post(self)
        self.peers = self.post.peers = Peers(self)
        self.requests = requests(self) if requests is not None else None  # a ProcessRequests
        self.dispatch()

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

    def live(self, ident: str | None) -> Proc | None:
        return None if ident is None else self.resolve(ident)

    def new_ident(self) -> tuple[int, str]:
        """A new process id; never one a node of this name gave before on this host (an
        id held somewhere must not reach a stranger after a node restart)."""
        num = next(self.numbers)
        if self.ids_path is not None:
            try:
                with open(self.ids_path, "w") as fh:
                    fh.write("%d\n" % num)
            except OSError:
                pass
        return num, "%s.%d" % (self.name, num)

    def close_in_child(self) -> None:
        self.close_node_in_child()
        for proc in self.by_num.values():
            proc.sock.close()

    def record_to(self, conn, recorder) -> None:
        """A connection's trace takes this node's process events (or stops: None)."""
        if recorder is None:
            self.recorders.pop(conn, None)
        else:
            self.recorders[conn] = recorder
            now = time.monotonic()  # (the processes already running, named)
            for proc in self.by_num.values():
                recorder.add(["proc", now, proc.ident, "running", proc.label, proc.name])
        self.post.recorders = list(self.recorders.values())

    def record(self, event: list) -> None:
        for recorder in self.post.recorders:
            recorder.add(event)

    # -- starting -------------------------------------------------------------------------------

    def start(self, frame: bytes, *, label: str, name: str | None, restarts: Restarts,
              limit: int, answer=None, ident: tuple[int, str] | None = None) -> Proc:
        """Fork a process that runs the spawn ``frame``; ``answer(ok, info)`` is told once it
        runs (or could not load its function)."""
        num, ident = ident or self.new_ident()
        sock, pid = self.procs.fork(main=process_main)
        proc = Proc(sock, pid, num, ident, self.read_proc, self.broken)
        proc.frame, proc.label, proc.name, proc.restarts = frame, label, name, restarts
        proc.limit, proc.answer = limit, answer
        self.by_num[num] = proc
        if len(self.by_num) == 1:
            self.peers.count(1)
        if name is not None:
            self.names[name] = proc
        self.loop.watch(proc)
        self.loop.send(proc, wire.encode({"op": "start", "pid": ident, "limit": limit}), frame)
        self.stats["spawned"] = self.stats.get("spawned", 0) + 1
        if self.post.recorders:
            self.record(["proc", time.monotonic(), ident, "spawn", label, name])
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
        """A frame from one of the processes (``ops.NODE_PROCESS``): a message or reply
        to route, its mailbox's progress, its start and end; its requests (spawn,
        register, link...) are the ``ProcessRequests``' to answer."""
        self.from_processes(head["op"], proc, head, payload, raw)

    def p_send(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        self.post.route(head["to"], len(payload), raw, head.get("ref"), Caller(proc.ident))

    def p_reply(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        self.post.replied(head["ref"], payload, raw)

    def p_took(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        proc.queued = max(0, proc.queued - head["bytes"])

    def p_forget(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        self.post.forget_call(head["ref"])

    def p_started(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        proc.running = True
        self.peers.keep(proc)
        answer, proc.answer = proc.answer, None
        if answer is not None:
            answer(True, {"pid": proc.ident})

    def p_exiting(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        proc.exit = {"kind": head["kind"], "reason": str(head.get("reason", "?")),
                     "tb": str(head.get("tb", "")), "type": str(head.get("type") or "")}

    def p_request(self, proc: Proc, head: dict, payload, raw: bytes) -> None:
        self.requests.from_process(proc, head, payload)

    def dispatch(self) -> None:
        """The one dispatch of what processes send; a kind it does not know is answered
        as an unknown request (by ``ProcessRequests``)."""
        own = {"send": self.p_send, "reply": self.p_reply, "took": self.p_took,
               "forget": self.p_forget, "started": self.p_started, "exiting": self.p_exiting}
        requests = self.requests.PROCESS_HANDLERS if self.requests is not None else {}
        self.from_processes = ops.Dispatch(
            ops.NODE_PROCESS.takes("node"), {**own, **{kind: self.p_request for kind in requests}},
            lambda op, proc, head, payload, raw: self.p_request(proc, head, payload, raw))

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
        if not self.by_num:
            self.peers.count(0)
        if proc.name is not None and self.names.get(proc.name) is proc:
            del self.names[proc.name]
            self.peers.release(proc.name, proc.ident)
        self.peers.drop(proc)
        who = self.describe(proc)
        for ref in list(proc.calls):
            caller, _ = self.post.calls.pop(ref, (None, None))
            if caller is not None:
                self.post.fail_call(caller, ref, "exited", "%s ended before it replied: %s" % (who, reason))
        for ref, watcher in proc.monitors.items():
            self.watched.pop(ref, None)
            self.post.notify(watcher, {"op": "down", "ref": ref, "who": proc.ident, "reason": reason,
                                       "tb": exit.get("tb", "")})
        for ident in proc.links:
            if self.live(ident) is None:
                self.peers.tell(ident, {"op": "exit", "who": proc.ident, "reason": reason,
                                        "tb": exit.get("tb", ""), "abnormal": abnormal})
            else:
                self.linked_ended(ident, proc.ident, reason, exit.get("tb", ""), abnormal)
        answer, proc.answer = proc.answer, None
        if answer is not None:
            kind = exit.get("kind") if exit.get("kind") in ("import", "unpickle") else "noproc"
            answer(False, {"kind": kind, "message": "%s did not start: %s" % (who, reason)})
        log("process %s (pid %d, %s) ended: %s" % (who, proc.pid, proc.label, reason))
        if self.requests is not None:  # (what it printed last stays for a while)
            self.requests.ended(proc.ident, reason)
        if self.post.recorders:
            self.record(["proc", time.monotonic(), proc.ident, "exit", reason, proc.name])
        self.supervise(proc, exit, reason, abnormal)

    def linked_ended(self, ident: str, who: str, reason: str, tb: str, abnormal: bool) -> None:
        """The process ``who``, linked to ``ident`` here, ended: an ``Exit`` message if
        ``ident`` traps exits, else (an abnormal end) ``ident`` ends too."""
        proc = self.live(ident)
        if proc is None:
            return
        proc.links.discard(who)
        if proc.trap:
            self.loop.send(proc, wire.encode({"op": "exit", "who": who, "reason": reason, "tb": tb}))
        elif abnormal:
            self.end(proc, {"kind": "linked", "reason": "linked process %s ended: %s" % (who, reason)})

    def evict(self, ident: str, reason: str) -> None:
        """The hub says another node holds this process's name now (it took it over while
        this node was out of reach): the process ends, for good."""
        proc = self.resolve(ident)
        if proc is not None and proc.ident == ident:
            log("process %s: %s" % (self.describe(proc), reason))
            self.end(proc, {"kind": "killed", "reason": reason})

    def supervise(self, proc: Proc, exit: dict, reason: str, abnormal: bool) -> None:
        """Restart an ended process as its policy says, under its name, with a new id. It
        is kept for ps: as "failed" if it stays down after too many restarts, else among
        the processes that ended (a restarted one with the id it was restarted as). Not
        kept: one that never ran (its spawner was told why), and the ends of a node that
        stops."""
        if self.stopping or not proc.running:
            return
        restarts = proc.restarts
        name_gone = proc.name is not None and proc.name in self.names  # (to another, meanwhile)
        if exit.get("kind") == "killed" or restarts is None or not restarts.wanted(abnormal) \
                or name_gone:
            self.recently_ended.append(proc.ended_row(self.name, exit, reason))
            return
        if restarts.allow(time.monotonic()):
            new = self.start(proc.frame, label=proc.label, name=proc.name, restarts=restarts,
                             limit=proc.limit)
            log("process %s restarted as %s (%s restart %d)" % (self.describe(proc), new.ident,
                                                                 restarts.kind, restarts.count))
            if self.post.recorders:
                self.record(["proc", time.monotonic(), new.ident, "restart", proc.ident, proc.name])
            self.recently_ended.append(proc.ended_row(self.name, exit, reason, new.ident))
            return
        row = proc.ended_row(self.name, exit, restarts.given_up(reason))
        row["state"] = "failed"
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
        """A controller went (or the hub's connection): drop its calls and its monitors."""
        self.post.forget_conn(conn)
        self.peers.detached(conn)
        if conn in self.recorders:
            self.record_to(conn, None)
        for ref, proc in list(self.watched.items()):
            if proc.monitors.get(ref) is not None and proc.monitors[ref].conn is conn:
                del proc.monitors[ref], self.watched[ref]

    # -- ps ---------------------------------------------------------------------------------------

    def rows(self) -> list[dict]:
        """ps: the processes that run, those that stay down, and the last that ended."""
        now = time.time()
        return [proc.row(self.name, now) for proc in self.by_num.values()] \
            + list(self.given_up) + list(self.recently_ended)


def last_id(path: str | None) -> int:
    try:
        with open(path) as fh:
            return max(0, int(fh.read().strip()))
    except (OSError, ValueError, TypeError):
        return 0


def memory(pid: int) -> int | None:
    """A process's resident memory in bytes (None where /proc does not tell)."""
    try:
        with open("/proc/%d/statm" % pid) as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None
