"""What a program (or a command) does with spawned processes: ``Processes``, the part of
``Cluster`` behind its spawn, spawn_group, send, call, whereis, kill, processes and
monitor. It is given what it uses: the cluster's connections (``NodeLinks``) and the
cluster itself as a ``World`` (public members only).

A program has no mailbox of its own: its ``send`` waits for the node to take the
message (so a full mailbox is an error here and now), and its ``call`` is a request
whose answer is the process's ``reply``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any, Callable, Protocol

from clusterctl import errors
from clusterctl.api.actors.logs import ProcessLogs
from clusterctl.api.actors.placement import least_loaded
from clusterctl.api.calls import answer_of, await_result, function_message
from clusterctl.api.fanout import in_parallel
from clusterctl.api.links import NodeLinks
from clusterctl.api.pickling import dumps
from clusterctl.node import supervision
from clusterctl.node.addresses import address_problem, name_problem, node_of
from clusterctl.node.notices import Down
from clusterctl.session.connection import NodeConnection

RESTRICTED = ("a restricted host runs no spawned processes (they run code that travels "
              "pickled); spawn it on another node")


class ProcessList(list):
    """``processes()``: one dict per process that runs (or stays down, "failed", after too
    many restarts); ``ended``, the rows of the last processes that ended on each node
    (state "ended" or "crashed", with ``ended``, ``reason``, ``error``, ``traceback`` and
    ``restarted_as``), oldest first; and ``errors``, the nodes that could not be asked
    (node -> error)."""

    errors: dict
    ended: list

    ENDED = ("ended", "crashed")  # the states of an ended process's row


class Monitor:
    """``monitor()``'s watch on a process: ``wait(timeout)`` gives its ``Down`` (or None
    if it still runs after ``timeout`` seconds)."""

    def __init__(self, to: str, conn: NodeConnection, pending) -> None:
        self.to, self.conn, self.pending = to, conn, pending

    def wait(self, timeout: float | None = None) -> Down | None:
        if not self.pending.wait(timeout):
            return None
        if self.pending.error is not None:
            return Down(self.to, self.to, "its node was lost: %s" % getattr(
                self.pending.error, "reason", self.pending.error))
        head = self.pending.head
        return Down(self.to, head.get("who", self.to), head.get("reason", "?"), head.get("tb", ""))


class World(Protocol):
    """What ``Processes`` uses of its cluster (``Cluster`` is one): the world's nodes, where
    they were read from, the timeouts, and connecting to a node (starting it if need be,
    and recorded when the cluster traces)."""

    source: str
    timeout: float | None
    connect_timeout: float
    task_output: Any  # what tasks print, and the followed processes' lines (a TaskOutput)

    @property
    def nodes(self) -> list[str]: ...

    def node_names(self, nodes: Iterable[str] | None = None) -> list[str]: ...

    def connect(self, node: str) -> NodeConnection: ...

    def with_environment(self, conn: NodeConnection, fn, head: dict, arguments: Any = ()) -> dict: ...


class Processes:
    """Spawned processes, the part of a ``Cluster`` its process methods delegate to (their
    docstrings are there). ``world`` is that cluster; ``links`` its connections, used here
    to reach the hub and the nodes that run, without starting any."""

    def __init__(self, world: World, links: NodeLinks) -> None:
        self.world = world
        self.links = links

    def spawn(self, fn: str | Callable, *args: Any, node: str | None = None,
              name: str | None = None, restart: str = "temporary",
              intensity: int = supervision.DEFAULT_INTENSITY,
              period: float = supervision.DEFAULT_PERIOD, mailbox: int | None = None,
              **kwargs: Any) -> str:
        """``Cluster.spawn``: the options checked, the node chosen, the process started."""
        problem = supervision.problem(restart, intensity, period)
        if problem is None and name is not None:
            problem = name_problem(name)
        if problem is None and mailbox is not None and (type(mailbox) is not int or mailbox < 1):
            problem = f"the mailbox size is a number of bytes above 0, not {mailbox!r}"
        if problem is not None:
            raise errors.UsageError(problem)
        pongs = self.links.watch_all()  # (the hub connects the nodes' processes)
        if name is not None and not pongs and len(self.world.nodes) > 1:
            holder = self.whereis(name)  # (no hub to claim the name from: as far as can be told)
            if holder is not None:
                raise errors.NameTaken(f"the name {name} is taken by {holder}")
        where = self._place(pongs) if node is None else node
        conn = self.world.connect(where)
        if conn.restricted:
            raise errors.Refused(where, RESTRICTED)
        called, by_value = function_message(fn)
        head = {"op": "spawn", "restart": restart, "intensity": intensity, "period": period,
                "label": _label(fn)}
        head.update({k: called[k] for k in ("mod", "fun") if k in called})
        if name is not None:
            head["name"] = name
        if mailbox is not None:
            head["mailbox"] = mailbox
        payload = dumps((by_value, args, kwargs), "function and its arguments")
        head = self.world.with_environment(conn, fn, head, (args, kwargs))
        return self._ask(conn, head, payload)["pid"]

    def spawn_group(self, children: list, strategy: str = "one_for_one",
                    intensity: int = supervision.DEFAULT_INTENSITY,
                    period: float = supervision.DEFAULT_PERIOD, **options: Any) -> str:
        """``Cluster.spawn_group``: the children checked, the group spawned."""
        if strategy not in supervision.STRATEGIES:
            raise errors.UsageError(f"strategy must be one of {', '.join(supervision.STRATEGIES)}, "
                                    f"not {strategy!r}")
        specs = [_child(c) for c in children]
        if not specs:
            raise errors.UsageError("a group needs at least one child")
        return self.spawn("clusterctl_node.processes.groups:supervise", specs, strategy, intensity, period,
                          **options)

    def send(self, to: str, msg: Any) -> None:
        """``Cluster.send``: the node of ``to`` takes the message, or says why not."""
        conn = self._conn_for(to)
        self._ask(conn, {"op": "send", "to": to}, dumps(msg, "message"))

    def call(self, to: str, msg: Any, timeout: float | None = None) -> Any:
        """``Cluster.call``: a request to the node of ``to``, answered by the reply."""
        conn = self._conn_for(to)
        head = {"op": "send", "to": to, "call": True}
        pending = conn.request(head, dumps(msg, "message"))
        return await_result(conn, head, pending, self.world.timeout if timeout is None else timeout)

    def whereis(self, name: str) -> str | None:
        """``Cluster.whereis``: every running node asked at once (``holder_found``)."""
        problem = name_problem(name)
        if problem is not None:
            raise errors.UsageError(problem)

        def one(node: str):
            conn = self.running(node)
            return None if conn is None else self._ask(conn, {"op": "whereis", "name": name}).get("pid")

        return holder_found(self.world.nodes, one)

    def kill(self, to: str) -> str:
        """``Cluster.kill``: the node of ``to`` asked, or, for a name no process holds,
        every running node."""
        try:
            return self._ask(self._conn_for(to), {"op": "kill", "to": to})["pid"]
        except errors.NoProcess:
            if node_of(to) is not None:
                raise
        for node in self.world.nodes:  # a name no process holds: one that stays down?
            conn = self.running(node)
            if conn is not None:
                try:
                    return self._ask(conn, {"op": "kill", "to": to})["pid"]
                except errors.NoProcess:
                    continue
        raise errors.NoProcess(f"no process is registered as {to}")

    def processes(self, nodes: Iterable[str] | None = None) -> ProcessList:
        """``Cluster.processes``: every running node asked at once; the ones that could
        not be asked in ``errors``."""
        names = self.world.node_names(nodes) if nodes is not None else self.world.nodes
        self.links.ensure_hub()
        found = ProcessList()
        found.errors, found.ended = {}, []

        def one(node: str):
            conn = self.running(node)
            if conn is None:
                return []
            pending = conn.request({"op": "ps"})
            head = self._answer(conn, pending)
            return json.loads(bytes(pending.payload) or b"[]") if head.get("op") == "procs" else []

        for node, rows in zip(names, in_parallel(names, _or_error(one))):
            if isinstance(rows, errors.ClusterError):
                found.errors[node] = rows
            else:
                found.extend(row for row in rows if row.get("state") not in ProcessList.ENDED)
                found.ended.extend(row for row in rows if row.get("state") in ProcessList.ENDED)
        found.ended.sort(key=lambda row: row.get("ended") or 0)
        return found

    def logs(self, to: str, lines: int | None = None, follow: bool = False) -> ProcessLogs:
        """``Cluster.logs``: what ``to`` printed, kept by its node (and, following, as
        it comes): see ``api.actors.logs``."""
        try:
            nodes = [self._conn_for(to).node]
        except errors.NoProcess:
            if node_of(to) is not None:
                raise
            nodes = [n for n in self.world.nodes if self.running(n) is not None]  # (a name
        for node in nodes:  # no process holds now: one that ended lately, on some node?)
            conn = self.world.connect(node)  # (the world's: its notices are heard)
            try:
                return ProcessLogs(conn, to, self.world.task_output, lines=lines, follow=follow,
                                   timeout=self.world.timeout)
            except errors.NoProcess:
                continue
        raise errors.NoProcess(f"no process is registered as {to}, and none that ended lately "
                               "had that name", hint="clusterctl ps lists them")

    def monitor(self, to: str) -> Monitor:
        """``Cluster.monitor``: a request the node of ``to`` answers when it ends."""
        conn = self._conn_for(to)
        return Monitor(to, conn, conn.request({"op": "monitor", "to": to}))

    # -- helpers ----------------------------------------------------------------------

    def running(self, node: str) -> NodeConnection | None:
        """The connection to ``node`` if it runs (a restricted node runs no processes)."""
        conn = self.links.connect(node, start=False)
        return None if conn is None or conn.restricted else conn

    def _conn_for(self, to: str) -> NodeConnection:
        """The connection to the node of ``to``: its id's, or the holder of its name."""
        problem = address_problem(to)
        if problem is not None:
            raise errors.UsageError(problem)
        self.links.ensure_hub()
        node = node_of(to)
        if node is None:  # (a one-node world asks too: the name may be held on another)
            holder = self.whereis(to)
            if holder is None:
                raise errors.NoProcess(f"no process is registered as {to}")
            node = node_of(holder)
            if node not in self.world.nodes:
                raise errors.NoProcess(
                    f"{to} is held by {holder}, on node {node}, which is not in this world "
                    f"({self.world.source})", hint=f"add {node}'s host to the hosts file, or "
                    "use the hosts file that started it")
        elif node not in self.world.nodes:
            raise errors.NoProcess(f"no process {to}: this world has no node {node}")
        conn = self.links.connect(node, start=False)
        if conn is None:
            raise errors.NoProcess(f"no process {to}: its node {node} is not running")
        if conn.restricted:
            raise errors.Refused(node, RESTRICTED)
        return conn

    def _place(self, pongs: dict[str, dict]) -> str:
        """The least-loaded node that can take a process (by the hub's fresh pongs, when
        it gave some)."""
        usable = {n: p for n, p in pongs.items() if p.get("restricted") is None}
        if usable:
            return least_loaded(usable)

        def one(node: str):
            conn = self.world.connect(node)
            if conn.restricted:
                raise errors.Refused(node, RESTRICTED)
            return conn.ping(self.world.connect_timeout)

        nodes = self.world.nodes
        pongs = dict(zip(nodes, in_parallel(nodes, _or_error(one))))
        usable = {n: p for n, p in pongs.items() if not isinstance(p, errors.ClusterError)}
        if not usable:
            reasons = "; ".join(str(e) for e in pongs.values()) or "every host is restricted"
            raise errors.NodeUnreachable("world", f"no node can take a process: {reasons}")
        return least_loaded(usable)

    def _ask(self, conn: NodeConnection, head: dict, payload: bytes = b"") -> dict:
        return self._answer(conn, conn.request(head, payload))

    def _answer(self, conn: NodeConnection, pending) -> dict:
        """The node's answer to a request, or its error raised."""
        return answer_of(conn, pending, self.world.timeout)


def holder_found(nodes: list[str], ask) -> str | None:
    """The holder of a name, from ``ask(node)`` (an id, or None) asked of every node at
    once. A node's word for its own processes is the truth and is taken as it comes, so a
    node out of reach (its ask waits for the connect timeout) holds up nothing then. What a
    node says of another node's process is the hub's table as that node last heard it,
    which lags a moment behind an end or a restart: it counts only if the holder's own node
    could not be asked."""
    import queue  # (only a whereis pays for it)

    answers: queue.SimpleQueue = queue.SimpleQueue()

    def one(node: str) -> None:
        try:
            answers.put((node, True, ask(node)))
        except errors.ClusterError:
            answers.put((node, False, None))

    if len(nodes) == 1:
        one(nodes[0])
    else:
        for node in nodes:
            threading.Thread(target=one, args=(node,), daemon=True, name="clusterctl-whereis").start()
    answered: set[str] = set()
    heard: dict[str, str] = {}  # holder's node -> the id another node named
    for _ in nodes:
        node, ok, found = answers.get()
        if not ok:
            continue
        answered.add(node)
        if found is not None and node_of(found) == node:
            return found
        if found is not None:
            heard.setdefault(node_of(found), found)
    return next((ident for holder, ident in heard.items() if holder not in answered), None)


def _child(child) -> tuple:
    """A group's child as (function, args, kwargs, options), checked."""
    if callable(child):
        child = (child,)
    if not isinstance(child, (tuple, list)) or not child or not callable(child[0]) or len(child) > 3:
        raise errors.UsageError(f"a group's child is a function, (function, args) or (function, "
                                f"args, options), not {child!r}")
    fn = child[0]
    args = tuple(child[1]) if len(child) > 1 else ()
    options = dict(child[2]) if len(child) > 2 else {}
    problem = supervision.problem(options.get("restart", "permanent"), 0, 1.0)
    if problem is None and options.get("name") is not None:
        problem = name_problem(options["name"])
    if problem is not None:
        raise errors.UsageError(problem)
    return fn, args, dict(options.pop("kwargs", {})), options


def _label(fn) -> str:
    if isinstance(fn, str):
        return fn
    module = getattr(fn, "__module__", "") or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return name if module.startswith("__") or not module else f"{module}.{name}"


def _or_error(fn):
    def safe(node: str):
        try:
            return fn(node)
        except errors.ClusterError as exc:
            return exc
    return safe

