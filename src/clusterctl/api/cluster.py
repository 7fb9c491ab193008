"""The Python API: ``Cluster`` and what it returns.

``Cluster`` reads the world from a hosts file (the same lookup as the CLI), starts the
nodes it needs on demand, and keeps one connection per node for its lifetime. It never
prints and never exits; every failure is a ``ClusterError``. Multi-node calls return a
map node -> result-or-error, so one dead node never hides the others' results.

    with Cluster() as cluster:
        cluster.world()
        cluster.rpc("n1", "math.pow", 2, 10)
        cluster.multicall(os.getloadavg)
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

from clusterctl import errors
from clusterctl.api.actors import Monitor, ProcessList, Processes
from clusterctl.api.actors.logs import ProcessLogs
from clusterctl.api.calls import await_result, call_message, message_for
from clusterctl.api.env.shipping import Shipper
from clusterctl.api.fanout import in_parallel
from clusterctl.api.links import NodeLinks
from clusterctl.api.other_worlds import OtherNode, other_nodes, stop_other_nodes
from clusterctl.api.results import MulticallResult, NodeInfo
from clusterctl.api.situation import Situation
from clusterctl.api.task_output import TaskOutput
from clusterctl.config.cookie import load_or_create_cookie
from clusterctl.config.hosts import HostSpec, load_hosts, resolve_world
from clusterctl.config.names import unknown_node
from clusterctl.hub.client import HubClient
from clusterctl.hub.place import enabled as hub_enabled
from clusterctl.node import supervision
from clusterctl.session.connection import NodeConnection
from clusterctl.transport.base import NodeSettings
from clusterctl.transport.bundle import agent_bundle

DEFAULT_CONNECT_TIMEOUT = 30.0


class Cluster:
    """The nodes of a hosts file, and the operations on them.

    ``hosts``: None to use the same lookup as the CLI (``$CLUSTERCTL_HOSTS``, ``./hosts``,
    the user config dir, else one local node), a path to a hosts file, or a list of
    ``HostSpec``. ``timeout`` is the default for calls (None: wait as long as it takes,
    with node loss still detected by heartbeat within ``heartbeat_timeout`` seconds).
    ``hub``: reach SSH hosts through the user's hub, which holds their SSH connections
    (started on demand); None: yes, unless ``CLUSTERCTL_HUB=off`` or a ``cookie`` is given.
    ``trace``: record everything this cluster does on every node into this trace file,
    written when the cluster is closed (``clusterctl trace --analyze`` reads it).
    ``env``: ship what a function needs from this Python (installed distributions, the
    user's own modules) to the hosts that lack it; None: yes, unless ``CLUSTERCTL_ENV=off``.
    ``quiet_tasks``: what tasks print is dropped, not shown on this process's stderr with
    the node and item it came from (``task_output``, a ``TaskOutput``, says where it goes).
    ``cwd``: the directory tasks run in (None: on a local node, this process's; on another
    host, the node's, its user's home); ``setenv``: variables set for them, on every node.

    Spawned processes (``spawn``, ``send``, ``call``, ...) are its processes part,
    ``clusterctl.api.actors.Processes``, given this cluster and its connections.
    """

    def __init__(self, hosts: str | os.PathLike | Iterable[HostSpec] | None = None, *,
                 timeout: float | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 heartbeat_interval: float = 1.0, heartbeat_timeout: float = 10.0,
                 cookie: bytes | None = None, ssh_options: Mapping[str, Any] | None = None,
                 hub: bool | None = None, trace: str | os.PathLike | None = None,
                 env: bool | None = None, quiet_tasks: bool = False,
                 cwd: str | os.PathLike | None = None,
                 setenv: Mapping[str, str] | None = None) -> None:
        if hosts is None:
            specs, self.source = resolve_world(None)
        elif isinstance(hosts, (str, os.PathLike)):
            specs, self.source = load_hosts(hosts), f"hosts file {hosts}"
        else:
            specs, self.source = list(hosts), "given hosts"
        if not specs:
            raise errors.HostsFileError("the world has no hosts")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.ssh_options = dict(ssh_options or {})
        settings = NodeSettings(cookie=cookie or load_or_create_cookie(), bundle=agent_bundle())
        if hub is None:  # the hub knows the user's cookie only
            hub = cookie is None and hub_enabled()
        self.recording = None  # the trace being recorded (``trace``), if any
        if trace is not None:
            from clusterctl.api.trace import Recording

            self.recording = Recording(trace)
        self._links = NodeLinks(specs, settings, connect_timeout=connect_timeout,
                                heartbeat_interval=heartbeat_interval,
                                heartbeat_timeout=heartbeat_timeout, ssh_options=self.ssh_options,
                                hub=HubClient(settings) if hub else None)
        self._processes = Processes(self, self._links)
        self.shipper = Shipper(env)
        self.task_output = TaskOutput(quiet=quiet_tasks)
        self.situation = Situation(cwd, setenv)

    @property
    def settings(self) -> NodeSettings:
        """What nodes are started with and checked against (cookie, code, limits)."""
        return self._links.settings

    @settings.setter
    def settings(self, settings: NodeSettings) -> None:
        self._links.settings = settings

    @property
    def ssh(self):
        """The SSH client pool (None until a host needed SSH): what was shipped, and
        the connections it holds."""
        return self._links.ssh

    # -- the world ---------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """Node names, in hosts-file order."""
        return self._links.names

    def spec(self, node: str) -> HostSpec:
        try:
            return self._links.spec(node)
        except KeyError:
            message, known = unknown_node(node, self._links.names)
            raise errors.UnknownNodeError(message, hint=f"{known}; {self.source}") from None

    def world(self, nodes: Iterable[str] | None = None, *,
              on_node: Callable[[NodeInfo], None] | None = None) -> list[NodeInfo]:
        """Start the nodes that are not running, ping every node, report each one.

        ``on_node`` is called (from a worker thread) as each node's answer arrives.
        """
        names = self.node_names(nodes)
        hubbed = self._links.through_hub(names)
        found: dict[str, NodeInfo] = {}

        def one(name: str | None) -> None:
            infos = self._hub_world(hubbed) if name is None else [self._ping(name)]
            for info in infos:
                found[info.name] = info
                if on_node is not None:
                    on_node(info)

        in_parallel(([None] if hubbed else []) + [n for n in names if n not in set(hubbed)], one)
        return [found[name] for name in names]

    def unknown_host_keys(self, nodes: Iterable[str] | None = None) -> list:
        """SSH hosts whose key is not in known_hosts and whose config says to ask.

        For a front end that asks the user once, listing them all, before any live
        display; pass the accepted ones to ``trust_host_keys``.
        """
        specs = [self.spec(n) for n in self.node_names(nodes)]
        remote = [s for s in specs if not s.is_local]
        if not remote:
            return []
        deadline = time.monotonic() + self.connect_timeout
        found = in_parallel([s.name for s in remote],
                            lambda name: self._links.unknown_host_key(self.spec(name), deadline))
        unique = {}
        for unknown in found:
            if unknown is not None:
                unique.setdefault((unknown.hostname, unknown.port), unknown)
        return list(unique.values())

    def trust_host_keys(self, unknowns: Iterable) -> None:
        """Accept these host keys; each is appended to known_hosts when next connected."""
        for unknown in unknowns:
            self._links.trust(unknown)

    def _ping(self, name: str) -> NodeInfo:
        try:
            conn = self.connect(name)
            pong = conn.ping(self.connect_timeout)
        except errors.ClusterError as exc:
            return self._pang(name, exc)
        return self._pong(name, conn.hello, pong, conn.rtt)

    def _hub_world(self, names: list[str]) -> list[NodeInfo]:
        """``world`` of the nodes reached through the hub, in one request to it."""
        infos = []
        for name, (kind, found) in zip(names, self._links.hub_world(names)):
            if kind == "pong":
                infos.append(self._pong(name, found["hello"], found["pong"], found["rtt"]))
            else:
                error = found if kind == "pang" else errors.NodeUnreachable(name, "not running")
                infos.append(self._pang(name, error))
        return infos

    def _pong(self, name: str, hello: dict, pong: dict, rtt: float | None) -> NodeInfo:
        load = pong.get("load")
        return NodeInfo(name, self._host_label(self.spec(name)), "pong", python=hello.get("python"),
                        slots=hello.get("slots"), load=tuple(load) if load else None, rtt=rtt,
                        pid=hello.get("pid"), version=hello.get("version"), cpus=pong.get("cpus"),
                        restricted=hello.get("restricted"))

    def _pang(self, name: str, exc: errors.ClusterError) -> NodeInfo:
        reason = getattr(exc, "reason", exc.message)
        if exc.hint:
            reason = f"{reason} ({exc.hint})"
        return NodeInfo(name, self._host_label(self.spec(name)), "pang", reason=reason, error=exc)

    # -- calls -------------------------------------------------------------------------

    def rpc(self, node: str, fn: str | Callable, *args: Any, timeout: float | None = None,
            **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` on ``node`` and return its result.

        Raises ``RemoteError`` (with the remote traceback) if it raised there,
        ``WorkerCrashed`` if the worker died, ``CallTimeout`` after ``timeout`` seconds
        (the remote work is cancelled), ``NodeLost`` if the node was lost mid-call (the
        outcome is then unknown).
        """
        pickled = call_message(fn, args, kwargs)
        conn = self.connect(node)
        head, payload = message_for(conn, fn, args, kwargs, pickled)
        head = self.with_environment(conn, fn, head, (args, kwargs))
        pending = conn.request(head, payload)
        return await_result(conn, head, pending, self._timeout(timeout))

    def with_environment(self, conn: NodeConnection, fn, head: dict, arguments: Any = ()) -> dict:
        """``head`` naming what a call of ``fn`` (a function, several, or a name) with
        ``arguments`` needs on ``conn``'s node, shipped there first if its host lacks it
        (``api.env``)."""
        if conn.restricted:
            return head
        packages = self.shipper.packages(fn, head.get("mod"), arguments)
        ids = self.shipper.ensure(conn, packages) if packages else []
        return dict(head, env=ids) if ids else head

    def multicall(self, fn: str | Callable, *args: Any, nodes: Iterable[str] | None = None,
                  timeout: float | None = None, **kwargs: Any) -> MulticallResult:
        """Call ``fn`` on every node (or ``nodes``) at once; node -> result or error."""
        head, payload = call_message(fn, args, kwargs)
        names = self.node_names(nodes)
        timeout = self._timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout

        sent: list[tuple[NodeConnection, int]] = []

        def one(name: str):
            try:
                conn = self.connect(name)
                call_head, call_payload = message_for(conn, fn, args, kwargs, (head, payload))
                call_head = dict(self.with_environment(conn, fn, call_head, (args, kwargs)))
                pending = conn.request(call_head, call_payload)
                if "id" in call_head:
                    sent.append((conn, call_head["id"]))
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                return await_result(conn, call_head, pending, remaining)
            except errors.ClusterError as exc:
                return exc

        def cancel_sent() -> None:
            for conn, request_id in list(sent):
                conn.cancel(request_id)

        return MulticallResult(dict(zip(names, in_parallel(names, one, cancel_sent))))

    # -- parallel map ------------------------------------------------------------------

    def pmap(self, fn: Callable | str, iterable: Iterable[Any], **options: Any) -> Iterator[Any]:
        """Apply ``fn`` to every item over all nodes' slots; yield the results.

        ``fn`` is a function (it travels pickled) or a ``"module.function"`` name (items
        and results then travel as plain data, and restricted hosts take part).

        In input order unless ``ordered=False``; see ``clusterctl.pmap.pmap`` for the
        options (chunksize, retries, on_error, item_timeout, ...).
        """
        from clusterctl.api.pmap import pmap

        return pmap(self, fn, iterable, **options)

    def pmap_results(self, fn: Callable | str, iterable: Iterable[Any], **options: Any) -> Iterator[Any]:
        """Like ``pmap``, but yields one outcome per item, with errors as values."""
        from clusterctl.api.pmap import pmap_results

        return pmap_results(self, fn, iterable, **options)

    # -- pipelines ---------------------------------------------------------------------

    def pipeline(self, stages, iterable: Iterable[Any], **options: Any) -> Iterator[Any]:
        """Run every item through ``stages`` (functions, or ``(function, {"replicas": n,
        "nodes": [...]})`` pairs) over the world's slots; yield the results, in input
        order unless ``ordered=False``. Items stream through bounded queues between the
        stages, every item exactly once; the options are pmap's (retries, on_error,
        limit, ...). ``clusterctl.api.pipeline.Pipeline`` gives the live statistics
        (T_S, T_A, ρ per stage) and ``fold``."""
        from clusterctl.api.pipeline import pipeline

        return pipeline(self, stages, iterable, **options)

    def pipeline_results(self, stages, iterable: Iterable[Any], **options: Any) -> Iterator[Any]:
        """Like ``pipeline``, but yields one outcome per item, with errors as values."""
        from clusterctl.api.pipeline import pipeline_results

        return pipeline_results(self, stages, iterable, **options)

    # -- spawned processes (the processes part: api/actors) ----------------------------

    def spawn(self, fn: str | Callable, *args: Any, node: str | None = None,
              name: str | None = None, restart: str = "temporary",
              intensity: int = supervision.DEFAULT_INTENSITY,
              period: float = supervision.DEFAULT_PERIOD, mailbox: int | None = None,
              **kwargs: Any) -> str:
        """Start ``fn(*args, **kwargs)`` as a spawned process; its id (like ``n2.17``).

        ``fn``: a function (it travels pickled) or ``"module.function"`` importable on the
        node. ``node``: where (default: the least-loaded node). ``name``: register it,
        unique in the world. ``restart``: "temporary" (never), "transient" (after an
        abnormal end) or "permanent" (always), at most ``intensity`` restarts within
        ``period`` seconds. ``mailbox``: the bytes of messages it may have waiting.
        """
        return self._processes.spawn(fn, *args, node=node, name=name, restart=restart,
                                     intensity=intensity, period=period, mailbox=mailbox,
                                     **kwargs)

    def spawn_group(self, children: list, strategy: str = "one_for_one",
                    intensity: int = supervision.DEFAULT_INTENSITY,
                    period: float = supervision.DEFAULT_PERIOD, **options: Any) -> str:
        """Start a supervision group: a process that starts ``children`` on its node and
        restarts them as OTP's supervisors do. A child is a function, ``(function, args)``
        or ``(function, args, {"name": ..., "restart": ..., "kwargs": {...}})``;
        ``strategy``: when one must restart, "one_for_one" restarts it alone,
        "one_for_all" all of them, "rest_for_one" it and those after it. More than
        ``intensity`` restarts in ``period`` seconds end the group and its children.
        ``options`` are ``spawn``'s for the group's process (``node``, ``name``, ...).
        Its id; the call "children" answers the children's ids."""
        return self._processes.spawn_group(children, strategy, intensity, period, **options)

    def send(self, to: str, msg: Any) -> None:
        """Put ``msg`` (any picklable value) in the mailbox of ``to`` (an id or a name);
        ``MailboxFull`` or ``NoProcess`` if it cannot be."""
        self._processes.send(to, msg)

    def call(self, to: str, msg: Any, timeout: float | None = None) -> Any:
        """Send ``msg`` to ``to`` and return its ``reply``. ``CallFailed`` if the process
        ends before it replies, ``NodeLost`` if its node is lost, ``CallTimeout``."""
        return self._processes.call(to, msg, timeout)

    def whereis(self, name: str) -> str | None:
        """The id of the process registered as ``name`` anywhere in the world, or None."""
        return self._processes.whereis(name)

    def kill(self, to: str) -> str:
        """End the process ``to`` for good (it is not restarted), or forget one that stays
        down after too many restarts; its id."""
        return self._processes.kill(to)

    def processes(self, nodes: Iterable[str] | None = None) -> ProcessList:
        """Every spawned process on the running nodes (``ps``): dicts with id, name, node,
        function, state, uptime, mailbox, restarts, memory; nodes not running have none."""
        return self._processes.processes(nodes)

    def logs(self, to: str, lines: int | None = None, follow: bool = False) -> ProcessLogs:
        """What the process ``to`` printed: the lines its node kept (the last 1,000 of a
        running one, the last 200 of one that ended lately; the last ``lines``), as
        ``LogLine(when, stream, text)``. With ``follow``, the iteration goes on with each
        new line until the process ends (``.ended`` then says why)."""
        return self._processes.logs(to, lines, follow)

    def monitor(self, to: str) -> Monitor:
        """Watch ``to``: ``.wait(timeout)`` gives its ``Down`` when it ends (also when its
        node is lost)."""
        return self._processes.monitor(to)

    # -- stopping ----------------------------------------------------------------------

    def down(self, nodes: Iterable[str] | None = None, *, other_worlds: bool = False,
             others: list[OtherNode] | None = None) -> dict[str, str | errors.ClusterError]:
        """Stop nodes: node -> "stopped", "not running" or the error. All of the world by
        default, and then the hub, unless it knows running nodes of another world (see
        ``other_nodes``: those keep running, and the hub with them). ``other_worlds``:
        those are stopped too (a name also in this world is keyed "name (where)"), and
        the hub. ``others``: what ``other_nodes`` gave, if the caller asked already."""
        if other_worlds and nodes is not None:
            raise ValueError("other_worlds stops every node: it takes no list of nodes")
        names = self.node_names(nodes)
        if nodes is not None:
            others = []
        elif others is None:
            others = self.other_nodes()

        def one(name: str):
            try:
                return self._links.stop(name)
            except errors.ClusterError as exc:
                return exc

        outcomes = dict(zip(names, in_parallel(names, one)))
        if other_worlds:
            outcomes.update(stop_other_nodes(others, self._other_world, taken=outcomes))
        if nodes is None and (other_worlds or not any(o.through_hub for o in others)):
            self.stop_hub()
        return outcomes

    def other_nodes(self) -> list[OtherNode]:
        """The nodes of this user's other worlds (other hosts files): local nodes that run
        on this machine, and SSH nodes the hub knows (none if no hub runs), each an
        ``OtherNode(spec, ssh, state)``. ``down(other_worlds=True)`` stops them."""
        specs = [self._links.spec(name) for name in self._links.names]
        return other_nodes(specs, self._links.hub, self.connect_timeout)

    def _other_world(self, specs: list[HostSpec], ssh_options: dict) -> "Cluster":
        return Cluster(specs, connect_timeout=self.connect_timeout, ssh_options=ssh_options,
                       cookie=self.settings.cookie, hub=self._links.hub is not None)

    def environments(self, nodes: Iterable[str] | None = None) -> dict[str, list[dict] | errors.ClusterError]:
        """What each node's host holds of shipped packages (``api.env``): node -> a list
        of {id, name, version, size, used (seconds since 1970, or None)}, or the error."""
        names = self.node_names(nodes)

        def one(name: str):
            try:
                conn = self.connect(name)
                return [] if conn.restricted else self.shipper.held(conn)
            except errors.ClusterError as exc:
                return exc

        return dict(zip(names, in_parallel(names, one)))

    def drop_environments(self, unused_days: float, nodes: Iterable[str] | None = None
                          ) -> dict[str, list[dict] | errors.ClusterError]:
        """Remove from each node's host the shipped packages no worker used for
        ``unused_days`` days: node -> what was removed, or the error."""
        held = self.environments(nodes)
        cutoff = time.time() - unused_days * 86400

        def one(name: str):
            packages = held[name]
            if isinstance(packages, errors.ClusterError):
                return packages
            old = [p for p in packages if (p.get("used") or 0) < cutoff]
            try:
                dropped = set(self.shipper.drop(self.connect(name), [p["id"] for p in old])) if old else set()
            except errors.ClusterError as exc:
                return exc
            return [p for p in old if p["id"] in dropped]

        return dict(zip(list(held), in_parallel(list(held), one)))

    def stop_hub(self) -> bool:
        """Stop the hub if one runs (the nodes keep running): True if one did."""
        return self._links.stop_hub()

    def close(self) -> None:
        """Close every connection (the nodes keep running; their work for us is cancelled).
        With ``trace``, the trace file is written first."""
        recording, self.recording = self.recording, None
        try:
            if recording is not None:
                from clusterctl.api.trace import write

                write(self, recording)
        finally:
            self._links.close()
            self.task_output.close()

    def trace(self, path: str | os.PathLike, capacity: int | None = None):
        """``with cluster.trace("run.json"):`` records what the cluster does inside it,
        on every node, into a trace file (``clusterctl trace --analyze`` reads it).
        ``capacity``: events each node keeps (the oldest are dropped, and counted)."""
        from clusterctl.api.trace import traced

        return traced(self, path, capacity)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- connections -------------------------------------------------------------------

    def connect(self, node: str) -> NodeConnection:
        """The connection to ``node``, starting the node if it is not running."""
        self.spec(node)
        conn = self._links.connect(node)
        if self.recording is not None:
            self.recording.watch(node, conn)
        conn.notices(functools.partial(self._notice, conn))
        self.situation.tell(conn, self.spec(node).is_local)
        return conn

    def _notice(self, conn: NodeConnection, head: dict, payload, raw) -> None:  # noqa: ARG002
        """A node's own message about a task of ours that runs there: a module it imports
        that its host lacks, or what it printed."""
        op = head.get("op")
        if op == "taskout":
            self.task_output.take(conn.node, head, payload)
        elif op == "envwant":
            self.shipper.want(conn, head)

    def lost_with_hub(self, node: str) -> bool:
        """Whether ``node``'s connection was lost with the hub that carried it (the node
        may be fine: a new connection goes through a new hub)."""
        return self._links.lost_with_hub(node)

    def _host_label(self, spec: HostSpec) -> str:
        return "localhost" if spec.is_local else spec.target

    # -- helpers -----------------------------------------------------------------------

    def node_names(self, nodes: Iterable[str] | None = None) -> list[str]:
        """``nodes`` as a list, each checked to be in the world (``UnknownNodeError`` if
        not); every node, in hosts-file order, if None."""
        if nodes is None:
            return self._links.names
        names = list(nodes)
        for name in names:
            self.spec(name)
        return names

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
