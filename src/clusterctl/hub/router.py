"""The hub as the world's post office for spawned processes: it forwards frames between
nodes (each on the hub's watch connection to it), keeps the world's names (each
registration is claimed here, so a name has one holder however many commands race for
it), tells every node when one is lost, and starts a lost node's permanent and
transient processes again on the least-loaded other node, under their names.

The nodes hold the truth: their processes and names. A new hub learns them again from
each node's ``sync`` when its watch connects. See docs/how-it-works.md, section
"Spawned processes".

What a node sends is taken for that node only: it relays its own frames (``src`` is
itself), keeps, claims and releases its own processes' ids, and syncs its own names,
within bounds; anything else is dropped and logged. A restricted host's node is never
attached here (``watch.Watch``): its owner is not trusted.
"""

from __future__ import annotations

import json
import threading
from typing import Callable

from clusterctl.node import ops
from clusterctl.node.addresses import name_problem, node_of

RESTART_GRACE = 0.5  # seconds between a node's loss and its processes' restart elsewhere
MAX_NAMES_PER_NODE = 10_000  # names one node's processes may hold in the world
MAX_KEPT_PER_NODE = 10_000  # processes of one node the hub keeps to restart elsewhere
MAX_KEPT_BYTES = 1 << 28  # their spawn frames, per node (256 MiB)
NAMES_CHUNK = 1 << 18  # bytes of names in one ``names`` frame: far below a node's head limit
OWN_ONLY = ("relay", "ack", "reset", "claim", "release", "keep", "drop")  # (see ``_own``)


class Router:
    """Nodes by name, each with its watch connection; the names; the processes to
    restart elsewhere if their node is lost. Frames arrive in the watch connections'
    reading threads: everything here is under one lock."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.links: dict[str, object] = {}  # node -> its watch NodeConnection
        self.loads: dict[str, float] = {}  # node -> its load, for placing adopted processes
        self.names: dict[str, str] = {}  # name -> the id of its holder
        self.kept: dict[str, dict[str, tuple[dict, bytes]]] = {}  # node -> id -> (keep head, frame)
        self.running: dict[str, int] = {}  # node -> its spawned processes (while it has any)
        self.stopped: set[str] = set()  # nodes that said they stop: nothing of theirs moves,
        # and they are not called back
        self.known: set[str] = set()  # every node a command asked the hub to watch
        self.forwarded = 0
        self._refused: set[tuple[str, str]] = set()  # (node, op) sent that was not its own
        self._lock = threading.RLock()
        self.takes = self.dispatch()

    # -- the nodes --------------------------------------------------------------------------------

    def said_stop(self) -> set[str]:
        """The nodes that said they stop (a ``bye``) and have not been attached since."""
        with self._lock:
            return set(self.stopped)

    def attach(self, node: str, conn) -> None:
        """A watch connection is up: route its frames from now on."""
        with self._lock:
            self.links[node] = conn
            self.stopped.discard(node)
            others = [c for n, c in self.links.items() if n != node]
        conn.listen(lambda head, payload, raw: self.fromnode_of(node, conn, head, payload, raw))
        for other in others:  # what they kept for it goes now (the hub dropped it meanwhile)
            _send(other, {"op": "nodeup", "node": node})

    def lost(self, node: str, conn, reason: str) -> None:
        """The watch of ``node`` ended (lost, or the node stopped): the others are told,
        its names freed, and its processes that must live on are started elsewhere."""
        with self._lock:
            if self.links.get(node) is not conn:
                return
            del self.links[node]
            self.running.pop(node, None)
            freed = [name for name, ident in self.names.items() if node_of(ident) == node]
            for name in freed:
                del self.names[name]
            kept = self.kept.pop(node, {})
            if node in self.stopped:
                kept, reason = {}, "it stopped"
            others = list(self.links.items())
        self.log(f"node {node} lost ({reason}): telling {len(others)} nodes; "
                 f"{len(kept)} processes to restart elsewhere")
        for _, other in others:
            _send(other, {"op": "nodedown", "node": node, "reason": reason[:4000]})
            if freed:
                _send(other, {"op": "names", "del": freed})
        if kept:
            threading.Timer(RESTART_GRACE, self._adopt_all, (node, list(kept.values()))).start()

    def _adopt_all(self, node: str, kept: list[tuple[dict, bytes]]) -> None:
        for head, frame in kept:
            with self._lock:
                candidates = {n: self.loads.get(n, 0.0) for n in self.links if n != node}
            if not candidates:
                self.log(f"nowhere to restart {head.get('name') or head.get('pid')} of {node}: "
                         "no other node is connected")
                continue
            target = min(candidates, key=lambda n: (candidates[n], n))
            adopt = {"op": "adopt", "restart": head.get("restart", "permanent"),
                     "intensity": head.get("intensity", 3), "period": head.get("period", 5.0),
                     "mailbox": head.get("mailbox", 1 << 26), "label": head.get("label", "?"),
                     "restarts": (head.get("restarts") or 0) + 1}
            if head.get("name"):
                adopt["name"] = head["name"]
            self.log(f"restarting {head.get('name') or head.get('pid')} of lost node {node} on {target}")
            with self._lock:
                self.loads[target] = self.loads.get(target, 0.0) + 1.0
                conn = self.links.get(target)
            if conn is not None:
                conn.send(adopt, frame)

    def know(self, nodes) -> None:
        """Nodes of a command's world: a frame for one of them that is not connected yet
        waits at its sender; a frame for a node nobody named is refused (``nodedown``)."""
        with self._lock:
            self.known.update(nodes)

    def forget(self, nodes) -> None:
        """Nodes the hub no longer watches (lost too long): out of the world it routes
        for, so a frame for one is refused as for a node not in the world."""
        with self._lock:
            for node in nodes:
                if node not in self.links:
                    self.known.discard(node)
                    self.loads.pop(node, None)

    def load(self, node: str, pong: dict) -> None:
        """A node's pong: how loaded it is, for placing adopted processes."""
        slots = max(1, int(pong.get("slots") or 1))
        with self._lock:
            self.loads[node] = ((pong.get("processes") or 0) + (pong.get("running") or 0)) / slots

    # -- what nodes send --------------------------------------------------------------------------

    def fromnode_of(self, node: str, conn, head: dict, payload, raw: bytes) -> None:
        """A frame from ``node`` on its watch (``ops.HUB_NODE``): taken only if it is the
        node's own to send; a kind the hub does not know is dropped."""
        op = head.get("op")
        if op in OWN_ONLY and not self._own(node, op, head):
            return
        self.takes(op, node, conn, head, payload, raw)

    def forward(self, node: str, conn, head: dict, payload, raw: bytes) -> None:
        """A relayed frame, an ack or a reset: to the node it names."""
        with self._lock:
            dest = self.links.get(head.get("node"))
            unknown = dest is None and head.get("node") not in self.known
        if dest is not None:
            self.forwarded += 1
            dest.send_raw(raw)  # (if the node is not there, the sender sends it again later)
        elif unknown and head["op"] == "relay":
            _send(conn, {"op": "nodedown", "node": str(head.get("node"))[:4000],
                         "reason": "no node of that name is in the world the hub watches"})

    def release(self, node: str, conn, head: dict, payload, raw: bytes) -> None:
        with self._lock:
            if self.names.get(head["name"]) == head["pid"]:
                del self.names[head["name"]]
                others = [c for n, c in self.links.items() if n != node]
            else:
                others = []
        for other in others:
            _send(other, {"op": "names", "del": [head["name"]]})

    def synced(self, node: str, conn, head: dict, payload, raw: bytes) -> None:
        self.count(node, head.get("processes"))
        names = head.get("names")
        self.sync(node, conn, names if isinstance(names, dict) else {})

    def bye(self, node: str, conn, head: dict, payload, raw: bytes) -> None:
        with self._lock:
            self.stopped.add(node)
            self.kept.pop(node, None)

    def dropped(self, node: str, conn, head: dict, payload, raw: bytes) -> None:
        with self._lock:
            self.kept.get(node, {}).pop(head.get("pid"), None)

    def dispatch(self) -> ops.Dispatch:
        return ops.Dispatch(ops.HUB_NODE.takes("hub"), {
            "relay": self.forward, "ack": self.forward, "reset": self.forward,
            "claim": lambda node, conn, head, payload, raw: self.claim(node, conn, head["name"], head["pid"]),
            "release": self.release, "sync": self.synced,
            "busy": lambda node, conn, head, payload, raw: self.count(node, head.get("processes")),
            "keep": lambda node, conn, head, payload, raw: self.keep(node, head, bytes(payload)),
            "bye": self.bye, "drop": self.dropped,
        }, lambda op, *args: None)

    def _own(self, node: str, op: str, head: dict) -> bool:
        """Whether ``node`` may send this: a frame relayed (or acknowledged) as its own, or
        a process id of its own, with a name that could be registered. Else logged once
        per node and kind, and dropped."""
        if op in ("relay", "ack", "reset"):
            ok = head.get("src") == node
        else:
            pid = head.get("pid")
            ok = type(pid) is str and node_of(pid) == node
            if ok and op in ("claim", "release"):
                ok = name_problem(head.get("name")) is None
        if not ok and (node, op) not in self._refused:
            self._refused.add((node, op))
            self.log(f"node {node} sent a {op!r} that is not its own to send: dropped "
                     "(and every other like it)")
        return ok

    def keep(self, node: str, head: dict, frame: bytes) -> None:
        """How to start a permanent or transient process of ``node`` elsewhere, within
        the bounds (a node over them keeps what it had)."""
        with self._lock:
            kept = self.kept.setdefault(node, {})
            size = sum(len(f) for _, f in kept.values()) + len(frame)
            if head["pid"] not in kept and (len(kept) >= MAX_KEPT_PER_NODE or size > MAX_KEPT_BYTES):
                full = True
            else:
                kept[head["pid"]], full = (dict(head), frame), False
        if full:
            self.log(f"node {node} keeps more processes than the hub holds for a node "
                     f"({MAX_KEPT_PER_NODE}, {MAX_KEPT_BYTES >> 20} MiB): {head['pid']} would not "
                     "move if the node were lost")

    def count(self, node: str, processes) -> None:
        with self._lock:
            if type(processes) is int and processes > 0:
                self.running[node] = processes
            else:
                self.running.pop(node, None)

    def busy(self) -> bool:
        """Processes run on some node: they may message each other, so the hub stays."""
        with self._lock:
            return bool(self.running)

    def claim(self, node: str, conn, name: str, pid: str) -> None:
        """One holder per name: the first claim wins; the same holder may claim again. A
        node holds at most ``MAX_NAMES_PER_NODE``."""
        with self._lock:
            holder = self.names.get(name)
            ok = holder is None or holder == pid
            if ok and holder is None and self._held_by(node) >= MAX_NAMES_PER_NODE:
                ok, holder = False, f"the hub's limit ({MAX_NAMES_PER_NODE} names a node)"
            if ok:
                self.names[name] = pid
                others = [c for c in self.links.values() if c is not conn]
        answer = {"op": "claimed", "name": name, "pid": pid, "ok": ok}
        if not ok:
            answer["holder"] = holder
        _send(conn, answer)
        if ok:
            for other in others:
                _send(other, {"op": "names", "set": {name: pid}})

    def sync(self, node: str, conn, names: dict) -> None:
        """A node (re)connected: its names join the world's, unless another node took one
        over meanwhile (then its process there is evicted); it learns everyone's. Only
        names of its own processes count, at most ``MAX_NAMES_PER_NODE``."""
        evict = []
        with self._lock:
            held = self._held_by(node)
            for name, pid in names.items():
                if type(pid) is not str or node_of(pid) != node or name_problem(name) is not None:
                    continue
                holder = self.names.get(name)
                if holder is None or holder == pid or node_of(holder) == node:
                    if holder is None and held >= MAX_NAMES_PER_NODE:
                        continue
                    held += holder is None
                    self.names[name] = pid
                else:
                    evict.append((name, pid, holder))
            table = dict(self.names)
            world = sorted(self.known | set(self.links) | {node})
            others = [c for n, c in self.links.items() if n != node]
        for name, pid, holder in evict:
            self.log(f"{pid} on {node} holds {name}, which {holder} took over: evicting it")
            _send(conn, {"op": "evict", "pid": pid, "reason": f"its name {name} was taken over by "
                         f"{holder} while its node was out of reach"})
        nodes = sorted({node_of(ident) for ident in table.values()} | {node})
        send_names(conn, table, nodes=nodes, world=world)
        mine = {n: p for n, p in names.items() if table.get(n) == p}
        if mine:
            for other in others:
                send_names(other, mine)

    def _held_by(self, node: str) -> int:
        return sum(1 for ident in self.names.values() if node_of(ident) == node)

    def describe(self) -> dict:
        with self._lock:
            return {"nodes": sorted(self.links), "names": dict(self.names),
                    "kept": {n: len(k) for n, k in self.kept.items()}, "forwarded": self.forwarded}


def _send(conn, head: dict, payload: bytes = b"") -> None:
    try:
        conn.send(head, payload)
    except Exception:  # noqa: BLE001 - a broken connection is that watch's loss, seen there
        pass



def send_names(conn, table: dict, **first) -> None:
    """``table`` (name -> id) to a node in ``names`` frames of at most ``NAMES_CHUNK``
    bytes each, ``first``'s fields on the first: a world of many names never makes a head
    that a node takes for garbage."""
    chunk: dict = {}
    size = 0
    for name, ident in table.items():
        cost = len(json.dumps(name)) + len(json.dumps(ident)) + 2
        if chunk and size + cost > NAMES_CHUNK:
            _send(conn, {"op": "names", "set": chunk, **first})
            chunk, size, first = {}, 0, {}
        chunk[name] = ident
        size += cost
    _send(conn, {"op": "names", "set": chunk, **first})
