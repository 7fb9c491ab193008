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

import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from clusterctl import errors
from clusterctl.transport.bundle import agent_bundle
from clusterctl.session.connection import NodeConnection
from clusterctl.session.outcomes import decode_result
from clusterctl.config.cookie import load_or_create_cookie
from clusterctl.config.hosts import HostSpec, load_hosts, resolve_world
from clusterctl.node import wire
from clusterctl.api.pickling import dumps
from clusterctl.api.results import MulticallResult, NodeInfo
from clusterctl.transport.local import LocalTransport, NodeSettings, wait_pid_gone

_SSH_POOL_LOCK = threading.Lock()

DEFAULT_CONNECT_TIMEOUT = 30.0
MAX_PARALLEL = 32  # nodes connected or called at once


@dataclass
class _NodeSlot:
    spec: HostSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: NodeConnection | None = None


def function_message(fn: str | Callable) -> tuple[dict, Callable | None]:
    """The head naming a function, and the function itself if it travels by value.

    ``"mod.fun"`` (split at the last dot) or ``"mod:attr.path"`` name a function that the
    node imports; a callable travels pickled by value.
    """
    if isinstance(fn, str):
        if ":" in fn:
            mod, _, fun = fn.partition(":")
        else:
            mod, _, fun = fn.rpartition(".")
        if not mod or not fun:
            raise errors.UsageError(f"{fn!r} does not name a function",
                                    hint="write module.function, e.g. math.pow or os.getloadavg")
        return {"op": "call", "mod": mod, "fun": fun}, None
    if not callable(fn):
        raise errors.UsageError(f"{fn!r} is neither a function nor a 'module.function' name")
    return {"op": "call"}, fn


class Cluster:
    """The nodes of a hosts file, and the operations on them.

    ``hosts``: None to use the same lookup as the CLI (``$CLUSTERCTL_HOSTS``, ``./hosts``,
    the user config dir, else one local node), a path to a hosts file, or a list of
    ``HostSpec``. ``timeout`` is the default for calls (None: wait as long as it takes,
    with node loss still detected by heartbeat within ``heartbeat_timeout`` seconds).
    """

    def __init__(self, hosts: str | os.PathLike | Iterable[HostSpec] | None = None, *,
                 timeout: float | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 heartbeat_interval: float = 1.0, heartbeat_timeout: float = 10.0,
                 cookie: bytes | None = None, ssh_options: Mapping[str, Any] | None = None) -> None:
        if hosts is None:
            specs, self.source = resolve_world(None)
        elif isinstance(hosts, (str, os.PathLike)):
            specs, self.source = load_hosts(hosts), f"hosts file {hosts}"
        else:
            specs, self.source = list(hosts), "given hosts"
        if not specs:
            raise errors.HostsFileError("the world has no hosts")
        self._slots: dict[str, _NodeSlot] = {s.name: _NodeSlot(s) for s in specs}
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.ssh_options = dict(ssh_options or {})
        self.settings = NodeSettings(cookie=cookie or load_or_create_cookie(), bundle=agent_bundle())
        self._ssh = None
        self._closed = False

    # -- the world ---------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """Node names, in hosts-file order."""
        return list(self._slots)

    def spec(self, node: str) -> HostSpec:
        try:
            return self._slots[node].spec
        except KeyError:
            known = ", ".join(self._slots) or "none"
            raise errors.UnknownNodeError(f"no node named {node!r} in the world",
                                          hint=f"known nodes: {known} ({self.source})") from None

    def world(self, nodes: Iterable[str] | None = None, *,
              on_node: Callable[[NodeInfo], None] | None = None) -> list[NodeInfo]:
        """Start the nodes that are not running, ping every node, report each one.

        ``on_node`` is called (from a worker thread) as each node's answer arrives.
        """
        names = self.node_names(nodes)

        def one(name: str) -> NodeInfo:
            info = self._ping(name)
            if on_node is not None:
                on_node(info)
            return info

        return list(self._parallel(names, one))

    def unknown_host_keys(self, nodes: Iterable[str] | None = None) -> list:
        """SSH hosts whose key is not in known_hosts and whose config says to ask.

        For a front end that asks the user once, listing them all, before any live
        display; pass the accepted ones to ``trust_host_keys``.
        """
        specs = [self.spec(n) for n in self.node_names(nodes)]
        remote = [s for s in specs if not s.is_local]
        if not remote:
            return []
        pool = self._ssh_pool()
        deadline = time.monotonic() + self.connect_timeout
        found = self._parallel([s.name for s in remote],
                               lambda name: pool.unknown_host_key(self.spec(name), deadline))
        unique = {}
        for unknown in found:
            if unknown is not None:
                unique.setdefault((unknown.hostname, unknown.port), unknown)
        return list(unique.values())

    def trust_host_keys(self, unknowns: Iterable) -> None:
        """Accept these host keys; each is appended to known_hosts when next connected."""
        pool = self._ssh_pool()
        for unknown in unknowns:
            pool.trust(unknown)

    def _ping(self, name: str) -> NodeInfo:
        spec = self.spec(name)
        try:
            conn = self.connect(name)
            pong = conn.ping(self.connect_timeout)
        except errors.ClusterError as exc:
            reason = getattr(exc, "reason", exc.message)
            if exc.hint:
                reason = f"{reason} ({exc.hint})"
            return NodeInfo(name, self._host_label(spec), "pang", reason=reason)
        hello = conn.hello
        load = pong.get("load")
        return NodeInfo(name, self._host_label(spec), "pong", python=hello.get("python"),
                        slots=hello.get("slots"), load=tuple(load) if load else None, rtt=conn.rtt,
                        pid=hello.get("pid"), version=hello.get("version"), cpus=pong.get("cpus"))

    # -- calls -------------------------------------------------------------------------

    def rpc(self, node: str, fn: str | Callable, *args: Any, timeout: float | None = None,
            **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` on ``node`` and return its result.

        Raises ``RemoteError`` (with the remote traceback) if it raised there,
        ``WorkerCrashed`` if the worker died, ``CallTimeout`` after ``timeout`` seconds
        (the remote work is cancelled), ``NodeLost`` if the node was lost mid-call (the
        outcome is then unknown).
        """
        head, by_value = function_message(fn)
        payload = dumps((by_value, args, kwargs), "function and its arguments")
        conn = self.connect(node)
        pending = conn.request(head, payload)
        return self._result(conn, head, pending, self._timeout(timeout))

    def multicall(self, fn: str | Callable, *args: Any, nodes: Iterable[str] | None = None,
                  timeout: float | None = None, **kwargs: Any) -> MulticallResult:
        """Call ``fn`` on every node (or ``nodes``) at once; node -> result or error."""
        head, by_value = function_message(fn)
        payload = dumps((by_value, args, kwargs), "function and its arguments")
        names = self.node_names(nodes)
        timeout = self._timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout

        sent: list[tuple[NodeConnection, int]] = []

        def one(name: str):
            try:
                conn = self.connect(name)
                call_head = dict(head)
                pending = conn.request(call_head, payload)
                if "id" in call_head:
                    sent.append((conn, call_head["id"]))
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                return self._result(conn, call_head, pending, remaining)
            except errors.ClusterError as exc:
                return exc

        def cancel_sent() -> None:
            for conn, request_id in list(sent):
                conn.cancel(request_id)

        return MulticallResult(dict(zip(names, self._parallel(names, one, cancel_sent))))

    def _result(self, conn: NodeConnection, head: dict, pending, timeout: float | None) -> Any:
        try:
            finished = pending.wait(timeout)
        except KeyboardInterrupt:
            conn.cancel(head["id"])
            raise
        if not finished:
            conn.cancel(head["id"])
            conn.forget(head["id"])
            raise errors.CallTimeout(conn.node, f"no result within {timeout:g} s; the call was cancelled",
                                     hint="raise --timeout if the call needs longer")
        if isinstance(pending.error, errors.NodeLost):
            raise errors.NodeLost(conn.node, f"{pending.error.reason}; the outcome of the call is "
                                  "unknown (the function may or may not have run)")
        return decode_result(conn.node, pending.head, pending.payload, pending.error)

    # -- parallel map ------------------------------------------------------------------

    def pmap(self, fn: Callable, iterable: Iterable[Any], **options: Any) -> Iterator[Any]:
        """Apply ``fn`` to every item over all nodes' slots; yield the results.

        In input order unless ``ordered=False``; see ``clusterctl.pmap.pmap`` for the
        options (chunksize, retries, on_error, item_timeout, ...).
        """
        from clusterctl.api.pmap import pmap

        return pmap(self, fn, iterable, **options)

    def pmap_results(self, fn: Callable, iterable: Iterable[Any], **options: Any) -> Iterator[Any]:
        """Like ``pmap``, but yields one outcome per item, with errors as values."""
        from clusterctl.api.pmap import pmap_results

        return pmap_results(self, fn, iterable, **options)

    # -- stopping ----------------------------------------------------------------------

    def down(self, nodes: Iterable[str] | None = None) -> dict[str, str | errors.ClusterError]:
        """Stop nodes (all by default): node -> "stopped", "not running" or the error."""
        names = self.node_names(nodes)

        def one(name: str):
            try:
                return self._stop(name)
            except errors.ClusterError as exc:
                return exc

        return dict(zip(names, self._parallel(names, one)))

    def _stop(self, name: str) -> str:
        slot = self._slots[name]
        with slot.lock:
            conn = slot.conn if slot.conn is not None and slot.conn.lost is None else None
            slot.conn = None
            if conn is None:
                conn = self._open(slot.spec, start=False)
            if conn is None:
                return "not running"
            self._stop_connected(conn)
        return "stopped"

    def _stop_connected(self, conn: NodeConnection) -> None:
        """Tell a node to stop and wait until its process is gone."""
        pid = conn.hello.get("pid")
        pending = conn.request({"op": "stop"})
        pending.wait(self.connect_timeout)
        conn.close()
        transport = self._transport(self.spec(conn.node))
        if isinstance(transport, LocalTransport) and isinstance(pid, int):
            if not wait_pid_gone(pid, 10.0) and not transport.stop_by_pid(pid, 5.0):
                raise errors.NodeError(conn.node, f"node process {pid} did not exit")
        elif hasattr(transport, "wait_stopped"):
            transport.wait_stopped(pid, self.connect_timeout)

    def close(self) -> None:
        """Close every connection (the nodes keep running; their work for us is cancelled)."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots.values():
            if slot.conn is not None:
                slot.conn.close()
                slot.conn = None
        if self._ssh is not None:
            self._ssh.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- connections -------------------------------------------------------------------

    def connect(self, node: str) -> NodeConnection:
        """The connection to ``node``, starting the node if it is not running."""
        spec = self.spec(node)
        slot = self._slots[node]
        with slot.lock:
            if slot.conn is not None and slot.conn.lost is None:
                return slot.conn
            if self._closed:
                raise errors.ClusterError("the cluster was closed")
            slot.conn = self._open(spec, start=True)
            return slot.conn

    def _open(self, spec: HostSpec, start: bool) -> NodeConnection | None:
        deadline = time.monotonic() + self.connect_timeout
        transport = self._transport(spec)
        for attempt in (1, 2):
            stream = transport.open(start=start, deadline=deadline)
            if stream is None:
                return None
            conn = NodeConnection(spec.name, stream, cookie=self.settings.cookie,
                                  heartbeat_interval=self.heartbeat_interval,
                                  heartbeat_timeout=self.heartbeat_timeout,
                                  max_payload=self.settings.max_payload)
            try:
                remaining = max(0.5, deadline - time.monotonic())
                hello = conn.read_hello(remaining)
                conn.authenticate(remaining)
            except errors.ClusterError:
                conn.close_unstarted()
                raise
            except Exception as exc:  # a bug, or a peer we did not foresee: this host only
                conn.close_unstarted()
                raise errors.ProtocolError(spec.name, f"the handshake failed: {type(exc).__name__}: "
                                                      f"{exc}") from exc
            except BaseException:
                conn.close_unstarted()
                raise
            if hello.get("code") != self.settings.bundle.code_id or hello.get("proto") != wire.PROTOCOL_VERSION:
                if attempt == 2:
                    conn.close_unstarted()
                    raise errors.HandshakeError(spec.name, "the node still runs other code after a restart")
                conn.start()
                self._stop_connected(conn)  # an older (or newer) clusterctl's node: replace it
                if not start:
                    return None
                continue
            python = str(hello.get("python", ""))
            ours = "%d.%d" % sys.version_info[:2]
            if python.rsplit(".", 1)[0] != ours:
                conn.close_unstarted()
                raise errors.HandshakeError(
                    spec.name, f"the node runs Python {python}, the controller Python "
                    f"{sys.version.split()[0]}; functions only travel between equal major.minor versions",
                    hint=f"set python= for this host to a Python {ours} ({spec.source})")
            conn.start()
            return conn
        return None

    def _transport(self, spec: HostSpec):
        if spec.is_local:
            return LocalTransport(spec, self.settings)
        return self._ssh_pool().transport(spec)

    def _ssh_pool(self):
        with _SSH_POOL_LOCK:  # hosts connect in parallel: one pool, or some are never closed
            if self._ssh is None:
                from clusterctl.transport.ssh import SSHPool  # paramiko is imported only when a host needs it

                self._ssh = SSHPool(self.settings, **self.ssh_options)
            return self._ssh

    def _host_label(self, spec: HostSpec) -> str:
        return "localhost" if spec.is_local else spec.target

    # -- helpers -----------------------------------------------------------------------

    def node_names(self, nodes: Iterable[str] | None = None) -> list[str]:
        """``nodes`` as a list, each checked to be in the world (``UnknownNodeError`` if
        not); every node, in hosts-file order, if None."""
        if nodes is None:
            return list(self._slots)
        names = list(nodes)
        for name in names:
            self.spec(name)
        return names

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _parallel(self, names: list[str], fn: Callable[[str], Any],
                  on_interrupt: Callable[[], None] | None = None) -> list[Any]:
        """``fn`` of every name, run concurrently (at most ``MAX_PARALLEL`` at a time).

        The threads are daemons and the caller waits in short, interruptible steps, so
        Ctrl-C is never held up by a call still in flight: ``on_interrupt`` (cancel what
        was sent) runs, and ``KeyboardInterrupt`` goes on up; closing the cluster then
        ends the threads' waits.
        """
        if len(names) <= 1:
            return [fn(n) for n in names]
        results: list[Any] = [None] * len(names)
        todo: queue.SimpleQueue = queue.SimpleQueue()
        done: queue.SimpleQueue = queue.SimpleQueue()
        for job in enumerate(names):
            todo.put(job)

        def work() -> None:
            while not todo.empty():
                try:
                    i, name = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((i, True, fn(name)))
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    done.put((i, False, exc))

        for k in range(min(MAX_PARALLEL, len(names))):
            threading.Thread(target=work, name=f"clusterctl-call-{k}", daemon=True).start()
        try:
            for _ in names:
                answer = None
                while answer is None:  # short waits: Ctrl-C gets through between them
                    try:
                        answer = done.get(timeout=0.2)
                    except queue.Empty:
                        pass
                i, ok, value = answer
                if not ok:
                    raise value
                results[i] = value
        except KeyboardInterrupt:
            if on_interrupt is not None:
                on_interrupt()
            raise
        return results
