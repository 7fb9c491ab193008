"""The hub as the world's post office for spawned processes: it forwards frames between
nodes (each on the hub's watch connection to it), keeps the world's names (each
registration is claimed here, so a name has one holder however many commands race for
it), tells every node when one is lost, and starts a lost node's permanent and
transient processes again on the least-loaded other node, under their names.

The nodes hold the truth: their processes and names. A new hub learns them again from
each node's ``sync`` when its watch connects. See docs/how-it-works.md, section
"Spawned processes".
"""

from __future__ import annotations

import threading
from typing import Callable

from clusterctl.node.addresses import node_of

RESTART_GRACE = 0.5  # seconds between a node's loss and its processes' restart elsewhere


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
        self._lock = threading.RLock()

    # -- the nodes --------------------------------------------------------------------------------

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

    def load(self, node: str, pong: dict) -> None:
        """A node's pong: how loaded it is, for placing adopted processes."""
        slots = max(1, int(pong.get("slots") or 1))
        with self._lock:
            self.loads[node] = ((pong.get("processes") or 0) + (pong.get("running") or 0)) / slots

    # -- what nodes send --------------------------------------------------------------------------

    def fromnode_of(self, node: str, conn, head: dict, payload, raw: bytes) -> None:
        op = head.get("op")
        if op in ("relay", "ack", "reset"):
            with self._lock:
                dest = self.links.get(head.get("node"))
                unknown = dest is None and head.get("node") not in self.known
            if dest is not None:
                self.forwarded += 1
                dest.send_raw(raw)  # (if the node is not there, the sender sends it again later)
            elif unknown and op == "relay":
                _send(conn, {"op": "nodedown", "node": str(head.get("node"))[:4000],
                             "reason": "no node of that name is in the world the hub watches"})
        elif op == "claim":
            self.claim(conn, head.get("name"), head.get("pid"))
        elif op == "release":
            with self._lock:
                if self.names.get(head.get("name")) == head.get("pid"):
                    del self.names[head["name"]]
                    others = [c for n, c in self.links.items() if n != node]
                else:
                    others = []
            for other in others:
                _send(other, {"op": "names", "del": [head["name"]]})
        elif op == "sync":
            self.count(node, head.get("processes"))
            self.sync(node, conn, head.get("names") or {})
        elif op == "busy":
            self.count(node, head.get("processes"))
        elif op == "keep":
            with self._lock:
                self.kept.setdefault(node, {})[head["pid"]] = (dict(head), bytes(payload))
        elif op == "bye":
            with self._lock:
                self.stopped.add(node)
                self.kept.pop(node, None)
        elif op == "drop":
            with self._lock:
                self.kept.get(node, {}).pop(head.get("pid"), None)

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

    def claim(self, conn, name, pid) -> None:
        """One holder per name: the first claim wins; the same holder may claim again."""
        if type(name) is not str or type(pid) is not str:
            return
        with self._lock:
            holder = self.names.get(name)
            ok = holder is None or holder == pid
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
        over meanwhile (then its process there is evicted); it learns everyone's."""
        evict = []
        with self._lock:
            for name, pid in names.items():
                holder = self.names.get(name)
                if holder is None or holder == pid or node_of(holder) == node:
                    self.names[name] = pid
                else:
                    evict.append((name, pid, holder))
            table = dict(self.names)
            others = [c for n, c in self.links.items() if n != node]
        for name, pid, holder in evict:
            self.log(f"{pid} on {node} holds {name}, which {holder} took over: evicting it")
            _send(conn, {"op": "evict", "pid": pid, "reason": f"its name {name} was taken over by "
                         f"{holder} while its node was out of reach"})
        nodes = sorted({node_of(ident) for ident in table.values()} | {node})
        _send(conn, {"op": "names", "set": table, "nodes": nodes})
        mine = {n: p for n, p in names.items() if table.get(n) == p}
        if mine:
            for other in others:
                _send(other, {"op": "names", "set": mine})

    def describe(self) -> dict:
        with self._lock:
            return {"nodes": sorted(self.links), "names": dict(self.names),
                    "kept": {n: len(k) for n, k in self.kept.items()}, "forwarded": self.forwarded}


def _send(conn, head: dict, payload: bytes = b"") -> None:
    try:
        conn.send(head, payload)
    except Exception:  # noqa: BLE001 - a broken connection is that watch's loss, seen there
        pass

