"""The other nodes' processes, as this node sees them through the hub: where the
world's names are, the calls, monitors and links that cross to another node, names
claimed from the hub (so a name is unique in the world), and what a lost node sets off.

The frames themselves travel by ``relay.Relay``; the hub's side is ``hub/router.py``.
Ships to hosts: the standard library only. See docs/how-it-works.md, section
"Spawned processes".
"""

from __future__ import annotations

from .. import ops, wire
from ..addresses import node_of
from ..log import log
from .post import Caller
from .relay import Relay


class Peers:
    """What crosses to other nodes, for ``Actors`` (``actors``): ``send`` an inner frame to
    a process elsewhere, ``from_node`` takes one from there, ``from_hub`` the hub's own
    messages (names, claims answered, a node lost, a process to adopt)."""

    def __init__(self, actors) -> None:
        self.actors = actors
        self.name = actors.name
        self.relay = Relay(actors.loop, actors.name, self.from_node)
        self.names: dict[str, str] = {}  # the world's names held on other nodes -> id
        self.calls: dict[str, tuple] = {}  # ref -> (local caller, callee's node)
        self.monitors: dict[str, tuple[str, str]] = {}  # ref -> (local watcher, watched id)
        self.claims: dict[str, tuple[str, object]] = {}  # name -> (id, then(ok, holder))
        self.lost: dict[str, str] = {}  # nodes the hub said were lost (until back) -> why
        self.watches: list = []  # every hub's watch connection, newest last: the uplink
        # is the newest, and when it goes, the newest left takes over at once
        self.dispatchers()

    # -- out -----------------------------------------------------------------------------------

    def send(self, ident: str, frame: bytes) -> str | None:
        """An inner frame for the process ``ident`` on another node; why not, or None."""
        if node_of(ident) in self.lost:
            return self.lost[node_of(ident)]
        if not self.relay.up() and not self.relay.out.get(node_of(ident)):
            return "%s is on another node, and no hub connects this node to the others" % ident
        return self.relay.send(node_of(ident), frame)

    def tell(self, ident: str, head: dict, payload: bytes = b"") -> None:
        """A notice for a process on another node (dropped if it cannot go)."""
        self.send(ident, wire.encode(dict(head, to=ident), payload))

    def where(self, name: str) -> str | None:
        """The id of the process holding ``name`` on another node, as the hub last said."""
        return self.names.get(name)

    # -- in, from other nodes ---------------------------------------------------------------

    def from_node(self, src: str, head: dict, payload, raw: bytes) -> None:
        """A frame from a process's node elsewhere (``ops.NODE_NODE``)."""
        self.from_nodes(head["op"], head, payload, raw)

    def peer_send(self, head: dict, payload, raw: bytes) -> None:
        self.actors.post.route(head["to"], len(payload), raw, head.get("ref"), Caller(head.get("from")))

    def peer_reply(self, head: dict, payload, raw: bytes) -> None:
        entry = self.calls.pop(head["ref"], None)
        if entry is not None:
            self.actors.post.answer(entry[0], payload, raw)

    def peer_failed(self, head: dict, payload, raw: bytes) -> None:
        entry = self.calls.pop(head["ref"], None)
        if entry is not None and entry[0].conn is not None:
            self.actors.post.fail_call(entry[0], head["ref"], head.get("kind", "exited"), head["reason"])
        else:
            self.actors.post.deliver(head["to"], raw)

    def peer_down(self, head: dict, payload, raw: bytes) -> None:
        self.monitors.pop(head["ref"], None)
        self.actors.post.deliver(head["to"], raw)

    def peer_refused(self, head: dict, payload, raw: bytes) -> None:
        self.actors.post.deliver(head["to"], raw)

    def peer_exit(self, head: dict, payload, raw: bytes) -> None:
        self.actors.linked_ended(head["to"], head["who"], head["reason"], head.get("tb", ""),
                                 head.get("abnormal", True))

    def peer_request(self, head: dict, payload, raw: bytes) -> None:
        self.remote_request(head["op"], head)

    def from_newer_node(self, op: str, head: dict, payload, raw: bytes) -> None:
        """A kind this node does not know (a node of a newer version): dropped, logged."""
        log("a frame of unknown kind %r from another node: dropped" % op[:64])

    # -- in, from the hub ------------------------------------------------------------------------

    def from_hub(self, conn, head: dict, raw: bytes) -> None:
        """What the hub sends on its watch connection (``ops.HUB_NODE``)."""
        self.from_the_hub(head["op"], head, raw)

    def hub_names(self, head: dict, raw: bytes) -> None:
        """The table of the nodes it lists replaces theirs; a node not synced with a new
        hub yet keeps its names here; a lost node's go with it, and so do those of nodes
        outside the world the hub watches: left from an earlier hub."""
        nodes = set(head.get("nodes") or ())
        world = head.get("world")
        world = {w for w in world if type(w) is str} | {self.name} if isinstance(world, list) else None
        for name in [n for n, ident in self.names.items() if node_of(ident) in nodes
                     or (world is not None and node_of(ident) not in world)]:
            del self.names[name]
        for name, ident in (head.get("set") or {}).items():
            if node_of(ident) != self.name:
                self.names[name] = ident
        for name in head.get("del") or ():
            self.names.pop(name, None)

    def hub_nodeup(self, head: dict, raw: bytes) -> None:
        self.lost.pop(head["node"], None)
        self.relay.resend_to(head["node"])

    def hub_nodedown(self, head: dict, raw: bytes) -> None:
        self.node_down(head["node"], head.get("reason", "lost"))

    def hub_adopt(self, head: dict, raw: bytes) -> None:
        self.actors.requests.adopt(head, bytes(wire.frame_payload(raw)))

    def hub_evict(self, head: dict, raw: bytes) -> None:
        self.actors.evict(head["pid"], head.get("reason", "evicted"))

    def dispatchers(self) -> None:
        """The two dispatches of what comes in: from other nodes, and from the hub."""
        relay = self.relay
        self.from_nodes = ops.Dispatch(ops.NODE_NODE.takes("receiver"), {
            "send": self.peer_send, "reply": self.peer_reply, "failed": self.peer_failed,
            "down": self.peer_down, "refused": self.peer_refused, "exit": self.peer_exit,
            **{kind: self.peer_request for kind in ("monitor", "demonitor", "link", "unlink")},
        }, self.from_newer_node)
        self.from_the_hub = ops.Dispatch(ops.HUB_NODE.takes("node"), {
            "relay": lambda head, raw: relay.received(head, wire.frame_payload(raw)),
            "ack": lambda head, raw: relay.acked(head),
            "reset": lambda head, raw: relay.reset(head),
            "claimed": lambda head, raw: self.claimed(head),
            "names": self.hub_names, "nodeup": self.hub_nodeup, "nodedown": self.hub_nodedown,
            "adopt": self.hub_adopt, "evict": self.hub_evict,
        }, lambda op, head, raw: None)  # (the node's sessions answer an unknown kind first)

    def attached(self, conn) -> None:
        """A hub connects this node to the others: tell it our names and the processes it
        should restart elsewhere if we are lost; then what waits for other nodes goes."""
        if conn not in self.watches:
            self.watches.append(conn)
        self.relay.attach(conn)
        actors = self.actors
        names = {name: proc.ident for name, proc in actors.names.items()}
        actors.loop.send(conn, wire.encode({"op": "sync", "names": names,
                                            "processes": len(actors.by_num)}))
        for proc in actors.by_num.values():
            self.keep(proc)
        for name, (ident, _) in self.claims.items():
            actors.loop.send(conn, wire.encode({"op": "claim", "name": name, "pid": ident}))

    def count(self, processes: int) -> None:
        """The node's processes went from none to some, or back: the hub stays up while
        any node has some."""
        if self.relay.up():
            self.actors.loop.send(self.relay.uplink, wire.encode({"op": "busy", "processes": processes}))

    def leaving(self) -> None:
        """The node stops (down): its processes end with it and are not to move."""
        if self.relay.up():
            self.actors.loop.send(self.relay.uplink, wire.encode({"op": "bye"}))

    def detached(self, conn) -> None:
        """A watch connection closed. If it was the way out, the newest other one still
        open (another hub of the user's, or the one this replaced) takes over now, told
        everything again as a new hub is, rather than leaving the node cut off."""
        if conn in self.watches:
            self.watches.remove(conn)
        was = self.relay.uplink is conn
        self.relay.detach(conn)
        if not was:
            return
        live = [c for c in self.watches if not c.closed]
        if live:
            self.attached(live[-1])
        else:
            log("the hub's connection closed: other nodes are out of reach until a hub connects")

    # -- names: claimed from the hub -------------------------------------------------------------

    def claim(self, name: str, ident: str, then) -> None:
        """Register ``name`` for ``ident`` in the world: ``then(ok, holder)`` once the hub
        agrees (at once, on this node alone, when no hub connects it)."""
        holder = self.names.get(name)
        if holder is not None:
            then(False, holder)
        elif not self.relay.up():
            then(True, None)
        else:
            self.claims[name] = (ident, then)
            self.actors.loop.send(self.relay.uplink, wire.encode(
                {"op": "claim", "name": name, "pid": ident}))

    def claimed(self, head: dict) -> None:
        entry = self.claims.pop(head["name"], None)
        if entry is not None and entry[0] == head.get("pid"):
            entry[1](bool(head.get("ok")), head.get("holder"))

    def release(self, name: str, ident: str) -> None:
        if self.relay.up():
            self.actors.loop.send(self.relay.uplink, wire.encode(
                {"op": "release", "name": name, "pid": ident}))

    def keep(self, proc) -> None:
        """Tell the hub how to start a permanent or transient process again elsewhere."""
        restarts = proc.restarts
        if not self.relay.up() or not proc.running or restarts is None or restarts.kind == "temporary":
            return
        head = {"op": "keep", "pid": proc.ident, "name": proc.name, "label": proc.label,
                "mailbox": proc.limit, "restarts": restarts.count, **restarts.describe()}
        self.actors.loop.send(self.relay.uplink, wire.encode(head, proc.frame))

    def drop(self, proc) -> None:
        if self.relay.up() and proc.restarts is not None and proc.restarts.kind != "temporary":
            self.actors.loop.send(self.relay.uplink, wire.encode({"op": "drop", "pid": proc.ident}))

    # -- a node lost ----------------------------------------------------------------------------

    def node_down(self, node: str, reason: str) -> None:
        """``node`` was lost: calls to it fail, monitors of its processes fire, links to
        them break, and what waited for it is dropped."""
        why = "its node %s was lost: %s" % (node, reason)
        log("node %s lost (the hub says: %s)" % (node, reason))
        self.lost[node] = why
        self.relay.forget(node)
        actors = self.actors
        for ref, (caller, dest) in list(self.calls.items()):
            if dest == node:
                del self.calls[ref]
                actors.post.fail_call(caller, ref, "exited", why)
        for ref, (watcher, watched) in list(self.monitors.items()):
            if node_of(watched) == node:
                del self.monitors[ref]
                actors.post.notify(Caller(watcher), {"op": "down", "ref": ref, "who": watched,
                                                     "reason": why})
        for name in [n for n, ident in self.names.items() if node_of(ident) == node]:
            del self.names[name]
        self.lost_links(node, why)

    def remote_request(self, op: str, head: dict) -> None:
        """A process on another node monitors or links to one here (or stops to)."""
        actors = self.actors
        target = actors.resolve(head["to"])
        if op == "monitor":
            if target is None:
                actors.post.notify(Caller(head["watcher"]), {"op": "down", "ref": head["ref"],
                                                             "who": head["to"], "reason": "noproc"})
            else:
                target.monitors[head["ref"]] = Caller(head["watcher"])
                actors.watched[head["ref"]] = target
        elif op == "demonitor":
            watched = actors.watched.pop(head["ref"], None)
            if watched is not None:
                watched.monitors.pop(head["ref"], None)
        elif op == "link":
            if target is None:
                self.tell(head["from"], {"op": "exit", "who": head["to"], "reason": "noproc",
                                         "abnormal": True})
            else:
                target.links.add(head["from"])
        elif target is not None:  # unlink
            target.links.discard(head["from"])

    def lost_links(self, node: str, why: str) -> None:
        """A node was lost: links to its processes break (as an abnormal end), its
        processes' monitors and calls here are dropped."""
        actors = self.actors
        actors.post.forget_node(node)
        for proc in list(actors.by_num.values()):
            for ident in [i for i in proc.links if node_of(i) == node]:
                actors.linked_ended(proc.ident, ident, why, "", True)
            for ref in [r for r, w in proc.monitors.items() if node_of(w.ident or "") == node]:
                del proc.monitors[ref]
                actors.watched.pop(ref, None)
