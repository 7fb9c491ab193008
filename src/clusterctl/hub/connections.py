"""The hub's SSH connections: one pool per way of resolving hosts (ssh config file,
known_hosts file, accept-new), so commands with different files share the hub and never
each other's view of a host. A pool holds one SSH connection per host and jump host and
makes it again when it is needed after a loss."""

from __future__ import annotations

import threading
import time

from typing import TYPE_CHECKING

from clusterctl.config.hosts import HostSpec
from clusterctl.transport.base import NodeSettings

if TYPE_CHECKING:  # (paramiko is imported when a host is reached over SSH: a hub of local
    # nodes starts without it, 0.2 s sooner)
    from clusterctl.transport.ssh import SSHPool

POOL_KEYS = ("config_file", "known_hosts", "accept_new_host_keys")


class Connections:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings  # the hub's cookie and code; limits come with each request
        self._pools: dict[tuple, SSHPool] = {}
        self._lock = threading.Lock()

    def pool(self, ssh_options: dict) -> SSHPool:
        key = self.pool_key(ssh_options)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                from clusterctl.transport.ssh import SSHPool

                options = {k: v for k, v in ssh_options.items() if k in POOL_KEYS}
                pool = self._pools[key] = SSHPool(self.settings, **options)
            return pool

    def open(self, spec: HostSpec, ssh_options: dict, limits: dict, start: bool,
             timeout: float):
        """A channel to the node of ``spec`` (started if ``start``), or None if none runs."""
        transport = self.transport(spec, ssh_options, limits)
        return transport.open(start=start, deadline=time.monotonic() + timeout)

    def transport(self, spec: HostSpec, ssh_options: dict, limits: dict):
        """How the node of ``spec`` is reached, and started with the command's ``limits``
        (a local node through its socket: the hub watches those too, for routing)."""
        if spec.is_local:
            from clusterctl.transport.local import LocalTransport

            return LocalTransport(spec, self.limited(limits))
        from clusterctl.transport.ssh import SSHTransport

        return SSHTransport(spec, self.pool(ssh_options), settings=self.limited(limits))

    def limited(self, limits: dict) -> NodeSettings:
        """The hub's cookie and code, with a command's limits (idle, max_payload)."""
        return NodeSettings(cookie=self.settings.cookie, bundle=self.settings.bundle,
                            version=self.settings.version, idle=limits["idle"],
                            max_payload=limits["max_payload"])

    @staticmethod
    def pool_key(ssh_options: dict) -> tuple:
        return tuple(ssh_options.get(k) for k in POOL_KEYS)

    def unknown_host_key(self, spec: HostSpec, ssh_options: dict, timeout: float):
        return self.pool(ssh_options).unknown_host_key(spec, time.monotonic() + timeout)

    def trust(self, ssh_options: dict, unknown) -> None:
        self.pool(ssh_options).trust(unknown)

    def wait_stopped(self, spec: HostSpec, ssh_options: dict, pid, timeout: float) -> None:
        from clusterctl.transport.ssh import SSHTransport

        SSHTransport(spec, self.pool(ssh_options)).wait_stopped(pid, timeout)

    def describe(self) -> list[dict]:
        """Each pool's files and its hosts' connections, for ``clusterctl hub``."""
        with self._lock:
            pools = list(self._pools.items())
        return [{"config_file": key[0], "known_hosts": key[1], "hosts": pool.describe(),
                 "shipped": pool.shipped, "forwarded": pool.forwarded} for key, pool in pools]

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
