"""The cluster's one connection to each node: opened on demand (starting the node if
none runs), checked at the handshake, replaced after loss, closed together."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from clusterctl import errors
from clusterctl.config.hosts import HostSpec
from clusterctl.node import wire
from clusterctl.session.connection import NodeConnection
from clusterctl.transport.base import NodeSettings, Transport
from clusterctl.transport.local import LocalTransport
from clusterctl.version import require_same_python

_SSH_POOL_LOCK = threading.Lock()


@dataclass
class _Link:
    """One node's entry: its hosts-file line and its live connection, if any."""

    spec: HostSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: NodeConnection | None = None


class NodeLinks:
    """Connections to the nodes of one world, one per node, each behind its own lock so
    that nodes connect in parallel but a node is never started twice."""

    def __init__(self, specs: list[HostSpec], settings: NodeSettings, *, connect_timeout: float,
                 heartbeat_interval: float, heartbeat_timeout: float,
                 ssh_options: Mapping[str, Any]) -> None:
        self._links = {s.name: _Link(s) for s in specs}
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.ssh_options = dict(ssh_options)
        self.ssh = None  # the SSH client pool, once a host needed it
        self._closed = False

    @property
    def names(self) -> list[str]:
        return list(self._links)

    def spec(self, node: str) -> HostSpec:
        """The hosts-file line of ``node``; KeyError if there is none."""
        return self._links[node].spec

    def connect(self, node: str) -> NodeConnection:
        """The connection to ``node``, starting the node if it is not running."""
        link = self._links[node]
        with link.lock:
            if link.conn is not None and link.conn.lost is None:
                return link.conn
            if self._closed:
                raise errors.ClusterError("the cluster was closed")
            link.conn = self._open(link.spec, start=True)
            return link.conn

    def stop(self, node: str) -> str:
        """Stop ``node``: "stopped", or "not running" if no node ran there."""
        link = self._links[node]
        with link.lock:
            conn = link.conn if link.conn is not None and link.conn.lost is None else None
            link.conn = None
            if conn is None:
                conn = self._open(link.spec, start=False)
            if conn is None:
                return "not running"
            self._stop_connected(conn)
        return "stopped"

    def close(self) -> None:
        """Close every connection (the nodes keep running; their work for us is cancelled)."""
        if self._closed:
            return
        self._closed = True
        for link in self._links.values():
            if link.conn is not None:
                link.conn.close()
                link.conn = None
        if self.ssh is not None:
            self.ssh.close()

    def ssh_pool(self):
        """The SSH client pool, made on first need: paramiko is imported only then."""
        with _SSH_POOL_LOCK:  # hosts connect in parallel: one pool, or some are never closed
            if self.ssh is None:
                from clusterctl.transport.ssh import SSHPool

                self.ssh = SSHPool(self.settings, **self.ssh_options)
            return self.ssh

    def transport(self, spec: HostSpec) -> Transport:
        if spec.is_local:
            return LocalTransport(spec, self.settings)
        return self.ssh_pool().transport(spec)

    # -- opening -----------------------------------------------------------------------

    def _open(self, spec: HostSpec, start: bool) -> NodeConnection | None:
        """A started connection to the node of ``spec``, or None if none runs and
        ``start`` is false. A node running other code (an older or newer clusterctl)
        is stopped and, if ``start``, replaced once."""
        deadline = time.monotonic() + self.connect_timeout
        transport = self.transport(spec)
        for attempt in (1, 2):
            stream = transport.open(start=start, deadline=deadline)
            if stream is None:
                return None
            conn = self._handshake(spec, stream, deadline)
            if hello_runs_our_code(conn.hello, self.settings):
                if start:  # calls will travel pickled (a connection only to stop needs no check)
                    try:
                        require_same_python(spec.name, str(conn.hello.get("python", "")),
                                            where="the node", source=spec.source)
                    except errors.ClusterError:
                        conn.close_unstarted()
                        raise
                conn.start()
                return conn
            if attempt == 2:
                conn.close_unstarted()
                raise errors.HandshakeError(spec.name, "the node still runs other code after a restart")
            conn.start()
            self._stop_connected(conn)
            if not start:
                return None
        return None

    def _handshake(self, spec: HostSpec, stream, deadline: float) -> NodeConnection:
        """A NodeConnection on ``stream`` that has read the hello and authenticated (not
        started); any failure closes it and is this host's error only."""
        conn = NodeConnection(spec.name, stream, cookie=self.settings.cookie,
                              heartbeat_interval=self.heartbeat_interval,
                              heartbeat_timeout=self.heartbeat_timeout,
                              max_payload=self.settings.max_payload)
        try:
            remaining = max(0.5, deadline - time.monotonic())
            conn.read_hello(remaining)
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
        return conn

    def _stop_connected(self, conn: NodeConnection) -> None:
        """Tell a node to stop and wait until its process is gone."""
        pid = conn.hello.get("pid")
        pending = conn.request({"op": "stop"})
        pending.wait(self.connect_timeout)
        conn.close()
        self.transport(self.spec(conn.node)).wait_stopped(pid, self.connect_timeout)


def hello_runs_our_code(hello: dict, settings: NodeSettings) -> bool:
    """Whether a node's hello says it runs this controller's code and protocol."""
    return hello.get("code") == settings.bundle.code_id and hello.get("proto") == wire.PROTOCOL_VERSION
