"""The requests about spawned processes, from controllers (spawn, send, call, whereis,
kill, ps, monitor) and from the processes themselves (register, spawn, link, monitor,
...), each checked and answered; the table and the routing are ``Actors``'.

Ships to hosts: the standard library only. See docs/how-it-works.md, section "Spawned
processes".
"""

from __future__ import annotations

import json

from .. import ops, supervision, wire
from ..failures import type_name
from .table import DEFAULT_MAILBOX, Actors, Proc
from ..addresses import name_problem, node_of
from ..log import log
from .post import Caller
from .printed import Printed



def error_frame(kind: str, request, message: str, node: str) -> bytes:
    return wire.encode(ops.error_head(kind, request, type_name(kind), message, node))


class ProcessRequests:
    """Answers the requests about processes; ``handlers`` are the controllers' (for the
    node's sessions), ``from_process`` takes a process's."""

    def __init__(self, actors: Actors) -> None:
        self.actors = actors
        self.loop = actors.loop
        self.name = actors.name
        self.handlers = {"spawn": self.conn_spawn, "send": self.conn_send,
                         "whereis": self.conn_whereis, "kill": self.conn_kill,
                         "ps": self.conn_ps, "monitor": self.conn_monitor, "logs": self.conn_logs}
        self.printed = Printed(self.loop)  # what the processes print, kept for ``logs``
        self.handlers.update({op: self.from_hub for op in ops.HUB_NODE.takes("node")})

    # -- shared -----------------------------------------------------------------------------------

    def spawn(self, head: dict, payload, answer, frame: bytes | None = None) -> None:
        """Start a process from a spawn request (or, adopted from a lost node, from its
        spawn ``frame``); ``answer(ok, info)`` once it runs or cannot."""
        kind = head.get("restart", "temporary")
        intensity = head.get("intensity", supervision.DEFAULT_INTENSITY)
        period = head.get("period", supervision.DEFAULT_PERIOD)
        name = head.get("name")
        problem = supervision.problem(kind, intensity, period)
        if problem is None and name is not None:
            problem = name_problem(name)
        if problem is not None:
            answer(False, {"kind": "usage", "message": problem})
            return
        if name is not None and (name in self.actors.names or name in self.actors.peers.claims):
            answer(False, self.taken(name))
            return
        if self.actors.stopping:
            answer(False, {"kind": "noproc", "message": "the node is stopping"})
            return
        if frame is None:
            fn = {"mod": head["mod"], "fun": head["fun"]} if head.get("mod") and head.get("fun") else {}
            if head.get("env"):
                fn["env"] = head["env"]
            frame = wire.encode(dict(op="spawn", **fn), bytes(payload))
        label = str(head.get("label") or "a function")[:200]
        restarts = supervision.Restarts(kind, intensity, period)
        restarts.count = head.get("restarts") or 0
        ident = self.actors.new_ident()

        def start(ok: bool = True, holder: str | None = None) -> None:
            if not ok:
                answer(False, {"kind": "taken", "message": "the name %s is taken by %s" % (name, holder)})
            elif name is not None and name in self.actors.names:
                answer(False, self.taken(name))
            else:
                self.actors.start(frame, label=label, name=name, restarts=restarts, ident=ident,
                                  limit=head.get("mailbox") or DEFAULT_MAILBOX, answer=answer)

        if name is None:
            start()
        else:
            self.actors.peers.claim(name, ident[1], start)

    def adopt(self, head: dict, frame: bytes) -> None:
        """The hub restarts here a permanent or transient process of a lost node."""
        def answer(ok: bool, info: dict) -> None:
            log("adopted %s from a lost node: %s" % (head.get("label"), info.get("pid") if ok
                                                     else info.get("message")))

        self.spawn(head, b"", answer, frame=frame)

    def taken(self, name: str) -> dict:
        holder = self.actors.names.get(name)
        held = holder.ident if holder is not None else self.actors.peers.claims.get(name, ("?",))[0]
        return {"kind": "taken", "message": "the name %s is taken by %s" % (name, held)}

    # -- from controllers ----------------------------------------------------------------------------

    def conn_spawn(self, conn, head: dict, raw: bytes) -> None:
        request = head["id"]

        def answer(ok: bool, info: dict) -> None:
            if ok:
                self.loop.send(conn, wire.encode({"op": "spawned", "id": request, "pid": info["pid"]}))
            else:
                self.loop.send(conn, error_frame(info["kind"], request, info["message"], self.name))

        self.spawn(head, wire.frame_payload(raw), answer)

    def conn_send(self, conn, head: dict, raw: bytes) -> None:
        """A controller's message, or call (``call``: the reply is the request's result)."""
        request, to = head["id"], head["to"]
        payload = wire.frame_payload(raw)
        caller = Caller(conn=conn, request=request)
        ref = conn_ref(conn, request) if head.get("call") else None
        frame = wire.encode({"op": "send", "to": to, **({"ref": ref} if ref else {})}, bytes(payload))
        refused = self.actors.post.route(to, len(payload), frame, ref, caller)
        if ref is None:
            if refused is None:
                self.loop.send(conn, wire.encode({"op": "sent", "id": request}))
            else:
                self.loop.send(conn, error_frame(refused[0], request, refused[1], self.name))

    def conn_forget(self, conn, request) -> None:
        """A controller gave up on its call (a timeout): a late reply is not wanted."""
        self.actors.post.forget_call(conn_ref(conn, request))

    def conn_whereis(self, conn, head: dict, raw: bytes) -> None:
        self.loop.send(conn, wire.encode({"op": "where", "id": head["id"],
                                          "pid": self.where(head.get("name"))}))

    def where(self, name) -> str | None:
        proc = self.actors.names.get(name)
        return proc.ident if proc is not None else self.actors.peers.where(name)

    def conn_kill(self, conn, head: dict, raw: bytes) -> None:
        """End a process for good (no restart), or forget one that stays down."""
        request, to = head["id"], head["to"]
        proc = self.actors.resolve(to)
        if proc is not None:
            log("process %s killed on request of %s" % (self.actors.describe(proc), conn.label))
            self.actors.end(proc, {"kind": "killed", "reason": "killed"})
            self.loop.send(conn, wire.encode({"op": "killed", "id": request, "pid": proc.ident}))
            return
        kept = [row for row in self.actors.given_up if to not in (row["id"], row["name"])]
        if len(kept) < len(self.actors.given_up):
            self.actors.given_up = kept
            self.loop.send(conn, wire.encode({"op": "killed", "id": request, "pid": to}))
            return
        self.loop.send(conn, error_frame("noproc", request, "no process %s on %s" % (to, self.name),
                                         self.name))

    def conn_ps(self, conn, head: dict, raw: bytes) -> None:
        self.loop.send(conn, wire.encode({"op": "procs", "id": head["id"]},
                                         json.dumps(self.actors.rows()).encode()))

    def conn_logs(self, conn, head: dict, raw: bytes) -> None:
        """The last lines a process printed (a running one's, or one that ended lately),
        and with ``follow`` each new one as it comes, until it ends."""
        request, to = head["id"], head["to"]
        proc = self.actors.resolve(to)
        ident = proc.ident if proc is not None else self.ended_ident(to)
        if ident is None:
            self.loop.send(conn, error_frame("noproc", request, "no process %s on %s"
                                             % (to, self.name), self.name))
            return
        tag = head.get("tag") if head.get("follow") else None
        self.loop.send(conn, self.printed.logs(conn, request, ident, head.get("lines"),
                                               proc is not None, tag))

    def ended_ident(self, to: str) -> str | None:
        """The id of the latest process that ended here with id or name ``to``."""
        for row in reversed(list(self.actors.recently_ended) + list(self.actors.given_up)):
            if to in (row["id"], row["name"]):
                return row["id"]
        return None

    def ended(self, ident: str, reason: str) -> None:
        """A process ended: what it printed last stays, for a while."""
        self.printed.ended(ident, reason)

    def conn_monitor(self, conn, head: dict, raw: bytes) -> None:
        """A controller watches a process: answered with ``down`` when it ends."""
        request, to = head["id"], head["to"]
        target = self.actors.resolve(to)
        if target is None:
            self.loop.send(conn, wire.encode({"op": "down", "id": request, "who": to,
                                              "reason": "noproc"}))
            return
        ref = conn_ref(conn, request)
        target.monitors[ref] = Caller(conn=conn, request=request)
        self.actors.watched[ref] = target

    def from_hub(self, conn, head: dict, raw: bytes) -> None:
        """What the hub sends on its watch connection (nobody else may)."""
        if not conn.watching:
            log("%s: %r is the hub's to send, on its watch connection: ignored"
                % (conn.label, head["op"]))
            return
        self.actors.peers.from_hub(conn, head, raw)

    # -- from processes --------------------------------------------------------------------------------

    def from_process(self, proc: Proc, head: dict, payload) -> None:
        op, number = head["op"], head.get("id")

        def answer(ok: bool, info: dict) -> None:
            self.loop.send(proc, wire.encode({"op": "answer", "id": number, "ok": ok, **info}))

        handler = self.PROCESS_HANDLERS.get(op)
        if handler is None:
            answer(False, {"kind": "usage", "message": "unknown request %r" % str(op)[:64]})
            return
        handler(self, proc, head, payload, answer)

    def p_spawn(self, proc: Proc, head: dict, payload, answer) -> None:
        self.spawn(head, payload, answer)

    def p_register(self, proc: Proc, head: dict, payload, answer) -> None:
        name = head.get("name")
        problem = name_problem(name)
        names = self.actors.names
        if problem is not None:
            answer(False, {"kind": "usage", "message": problem})
        elif names.get(name) is proc:
            answer(True, {})
        elif name in names or name in self.actors.peers.claims:
            answer(False, self.taken(name))
        elif proc.name is not None:
            answer(False, {"kind": "usage", "message": "%s is registered as %s already"
                           % (proc.ident, proc.name)})
        else:
            def claimed(ok: bool, holder: str | None = None) -> None:
                if not ok or name in names:
                    answer(False, {"kind": "taken", "message": "the name %s is taken by %s"
                                   % (name, holder or names[name].ident)})
                elif not proc.finished:
                    names[name] = proc
                    proc.name = name
                    answer(True, {})

            self.actors.peers.claim(name, proc.ident, claimed)

    def p_whereis(self, proc: Proc, head: dict, payload, answer) -> None:
        answer(True, {"pid": self.where(head.get("name"))})

    def p_link(self, proc: Proc, head: dict, payload, answer) -> None:
        other = self.actors.resolve(head["to"])
        remote = self.actors.post.elsewhere(head["to"]) if other is None else None
        lost = self.actors.peers.lost.get(node_of(remote)) if remote else None
        if lost is not None and head["op"] == "link":
            answer(True, {})
            self.actors.linked_ended(proc.ident, remote, lost, "", True)
            return
        if remote is not None:
            self.actors.peers.tell(remote, {"op": head["op"], "from": proc.ident})
            (proc.links.add if head["op"] == "link" else proc.links.discard)(remote)
            answer(True, {})
            return
        if other is None:
            answer(False, {"kind": "noproc", "message": "no process %s to link to" % head["to"]})
            return
        if head["op"] == "link":
            other.links.add(proc.ident)
            proc.links.add(other.ident)
        else:
            other.links.discard(proc.ident)
            proc.links.discard(other.ident)
        answer(True, {})

    def p_monitor(self, proc: Proc, head: dict, payload, answer) -> None:
        ref = head["ref"]
        target = self.actors.resolve(head["to"])
        answer(True, {})
        remote = self.actors.post.elsewhere(head["to"]) if target is None else None
        lost = self.actors.peers.lost.get(node_of(remote)) if remote else None
        if lost is not None:
            self.actors.post.notify(Caller(proc.ident), {"op": "down", "ref": ref, "who": remote,
                                                         "reason": lost})
            return
        if remote is not None:
            self.actors.peers.monitors[ref] = (proc.ident, remote)
            self.actors.peers.tell(remote, {"op": "monitor", "ref": ref, "watcher": proc.ident})
            return
        if target is None:
            self.actors.post.notify(Caller(proc.ident), {"op": "down", "ref": ref, "who": head["to"],
                                                         "reason": "noproc"})
            return
        target.monitors[ref] = Caller(proc.ident)
        self.actors.watched[ref] = target

    def p_demonitor(self, proc: Proc, head: dict, payload, answer) -> None:
        target = self.actors.watched.pop(head["ref"], None)
        if target is not None:
            target.monitors.pop(head["ref"], None)
        remote = self.actors.peers.monitors.pop(head["ref"], None)
        if remote is not None:
            self.actors.peers.tell(remote[1], {"op": "demonitor", "ref": head["ref"]})
        answer(True, {})

    def p_trap(self, proc: Proc, head: dict, payload, answer) -> None:
        proc.trap = bool(head.get("on"))
        answer(True, {})

    def p_kill(self, proc: Proc, head: dict, payload, answer) -> None:
        target = self.actors.resolve(head["to"])
        if target is None:
            answer(False, {"kind": "noproc", "message": "no process %s on this node" % head["to"]})
            return
        self.actors.end(target, {"kind": "killed", "reason": "killed"})
        answer(True, {})

    def p_taskout(self, proc: Proc, head: dict, payload, answer) -> None:  # noqa: ARG002
        self.printed.add(proc.ident, payload, head.get("dropped"))  # (no answer: a notice)

    PROCESS_HANDLERS = {"spawn": p_spawn, "register": p_register,
                        "whereis": p_whereis, "link": p_link, "unlink": p_link,
                        "monitor": p_monitor, "demonitor": p_demonitor, "trap": p_trap,
                        "kill": p_kill, "taskout": p_taskout}


def conn_ref(conn, request) -> str:
    """The reference of a controller's call or monitor (its connection and request)."""
    return "c%d#%d" % (conn.number, request)
