"""The cluster's one connection to each node: opened on demand (starting the node if
none runs), checked at the handshake, replaced after loss, closed together."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from clusterctl import errors
from clusterctl.config.hosts import HostSpec
from clusterctl.session.connection import NodeConnection
from clusterctl.session.opening import Heartbeat, open_node, stop_connected
from clusterctl.transport.base import NodeSettings, Transport

_SSH_POOL_LOCK = threading.Lock()


@dataclass
class _Link:
    """One node's entry: its hosts-file line and its live connection, if any."""

    spec: HostSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: NodeConnection | None = None
    hub_pid: int | None = None  # the hub that carried ``conn``, if one did


class NodeLinks:
    """Connections to the nodes of one world, one per node, each behind its own lock so
    that nodes connect in parallel but a node is never started twice."""

    def __init__(self, specs: list[HostSpec], settings: NodeSettings, *, connect_timeout: float,
                 heartbeat_interval: float, heartbeat_timeout: float,
                 ssh_options: Mapping[str, Any], hub=None) -> None:
        self._links = {s.name: _Link(s) for s in specs}
        self.hub = hub  # a HubClient: SSH nodes are reached through the hub; None: directly
        self._hub_ssh = hub_ssh_options(ssh_options)
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.heartbeat = Heartbeat(heartbeat_interval, heartbeat_timeout)
        self.ssh_options = dict(ssh_options)
        self.ssh = None  # the SSH client pool, once a host needed it
        self._closed = False

    @property
    def names(self) -> list[str]:
        return list(self._links)

    def spec(self, node: str) -> HostSpec:
        """The hosts-file line of ``node``; KeyError if there is none."""
        return self._links[node].spec

    def connect(self, node: str, start: bool = True) -> NodeConnection | None:
        """The connection to ``node``, starting the node if it is not running (without
        ``start``: None if it is not)."""
        link = self._links[node]
        with link.lock:
            if link.conn is not None and link.conn.lost is None:
                return link.conn
            if self._closed:
                raise errors.ClusterError("the cluster was closed")
            link.hub_pid = self._hub_pid(link.spec)  # (if it dies while we connect)
            link.conn = self._open(link.spec, start=start)
            link.hub_pid = self._hub_pid(link.spec)
            return link.conn

    def lost_with_hub(self, node: str) -> bool:
        """Whether ``node``'s connection went through a hub that is gone since: the node
        itself may be fine, and a new hub reaches it."""
        from clusterctl.hub.place import process_alive

        pid = self._links[node].hub_pid
        return pid is not None and not process_alive(pid)

    def _hub_pid(self, spec: HostSpec) -> int | None:
        if self.hub is None or spec.is_local:
            return None
        from clusterctl.hub.place import read_pid

        return read_pid(self.hub.directory)

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
            from clusterctl.transport.local import LocalTransport  # (subprocess: not for SSH)

            return LocalTransport(spec, self.settings)
        if self.hub is not None:
            from clusterctl.hub.client import HubTransport

            return HubTransport(spec, self.hub, self._hub_ssh)
        return self.ssh_pool().transport(spec)

    # -- host keys, through the hub when there is one ------------------------------------

    def unknown_host_key(self, spec: HostSpec, deadline: float):
        """The UnknownHostKey to ask the user about for ``spec``'s host, or None."""
        if self.hub is None:
            return self.ssh_pool().unknown_host_key(spec, deadline)
        return self.hub.call("unknown_host_key", {"spec": spec, "ssh": self._hub_ssh,
                                                  "timeout": max(1.0, deadline - time.monotonic())},
                             max(1.0, deadline - time.monotonic()) + 5.0)

    def trust(self, unknown) -> None:
        """Accept a host key the user was shown (appended to known_hosts when next connected)."""
        if self.hub is None:
            self.ssh_pool().trust(unknown)
        else:
            self.hub.call("trust", {"ssh": self._hub_ssh, "unknown": unknown},
                          self.connect_timeout)

    def through_hub(self, names: list[str]) -> list[str]:
        """Which of ``names`` are reached through the hub (SSH nodes, when there is one)."""
        if self.hub is None:
            return []
        return [n for n in names if not self._links[n].spec.is_local]

    def hub_world(self, names: list[str]) -> list[tuple[str, object]]:
        """Ping ``names`` (all through the hub) in one request to it: per node ("pong",
        hello pong and rtt) or ("pang", ClusterError). The hub keeps a connection to each
        node, so this is one round trip for the command however many nodes there are."""
        specs = [self._links[n].spec for n in names]
        try:
            return self.hub.world(specs, self._hub_ssh, timeout=self.connect_timeout,
                                  heartbeat=(self.heartbeat.interval, self.heartbeat.timeout))
        except errors.ClusterError as exc:  # no hub to ask: every node fails with that
            return [("pang", exc)] * len(names)

    def watch_all(self, start: bool = True) -> dict[str, dict]:
        """Have the hub watch every node of the world (started, unless not ``start``),
        local ones too (it routes the messages between nodes' processes and keeps the
        world's names): node -> its pong, for those that answered. Nothing to do for one
        node, or without a hub."""
        if self.hub is None or len(self._links) < 2:
            return {}
        specs = [link.spec for link in self._links.values()]
        try:
            found = self.hub.world(specs, self._hub_ssh, timeout=self.connect_timeout,
                                   heartbeat=(self.heartbeat.interval, self.heartbeat.timeout),
                                   start=start)
        except errors.ClusterError:
            return {}
        return {spec.name: dict(value["pong"], restricted=value["hello"].get("restricted"))
                for spec, (kind, value) in zip(specs, found) if kind == "pong"}

    def ensure_hub(self) -> None:
        """Start a hub if the last one was killed (it left its list of watched nodes): it
        watches the running nodes again, and the messages between their processes flow
        again. Cheap otherwise; starts no node."""
        if self.hub is None or len(self._links) < 2:
            return
        from clusterctl.hub.place import process_alive, read_pid, watched_path

        if not os.path.exists(watched_path(self.hub.directory)):
            return
        pid = read_pid(self.hub.directory)
        if pid is None or not process_alive(pid):
            self.watch_all(start=False)

    def stop_hub(self) -> bool:
        """Stop the hub, if one runs: True if one was asked to."""
        if self.hub is None:
            return False
        return self.hub.stop(self.connect_timeout)

    # -- opening -----------------------------------------------------------------------

    def _open(self, spec: HostSpec, start: bool) -> NodeConnection | None:
        """A started connection to the node of ``spec`` (see ``session.opening``)."""
        return open_node(spec, self.transport(spec), self.settings, start=start,
                         deadline=time.monotonic() + self.connect_timeout,
                         heartbeat=self.heartbeat, stop_timeout=self.connect_timeout)

    def _stop_connected(self, conn: NodeConnection) -> None:
        stop_connected(conn, self.transport(self.spec(conn.node)), self.connect_timeout)


def hub_ssh_options(ssh_options: Mapping[str, Any]) -> dict:
    """The SSH options as the hub needs them: files as absolute paths (the hub's working
    directory is not the command's)."""
    options = dict(ssh_options)
    for key in ("config_file", "known_hosts"):
        if options.get(key):
            options[key] = os.path.abspath(os.path.expanduser(str(options[key])))
    return options

