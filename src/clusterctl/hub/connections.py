"""The hub's SSH connections: one pool per way of resolving hosts (ssh config file,
known_hosts file, accept-new), so commands with different files share the hub and never
each other's view of a host. A pool holds one SSH connection per host and jump host and
makes it again when it is needed after a loss."""

from __future__ import annotations

import threading
import time

from clusterctl import errors
from clusterctl.config.hosts import HostSpec
from clusterctl.transport.base import NodeSettings
from clusterctl.transport.ssh import SSHPool, SSHTransport

POOL_KEYS = ("config_file", "known_hosts", "accept_new_host_keys")
SPARE_SECONDS = 30.0  # launching a spare channel gives up after this


def _ended(channel) -> bool:
    """A launched channel whose boot stub is gone (its host went away, sshd closed it)."""
    return channel.closed or channel.exit_status_ready() or not channel.get_transport().is_active()


class Connections:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings  # the hub's cookie and code; limits come with each request
        self._pools: dict[tuple, SSHPool] = {}
        self._spares: dict[tuple, object] = {}  # channels launched ahead, one per host
        self._closed = False
        self._lock = threading.Lock()

    def pool(self, ssh_options: dict) -> SSHPool:
        key = tuple(ssh_options.get(k) for k in POOL_KEYS)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                options = {k: v for k, v in ssh_options.items() if k in POOL_KEYS}
                pool = self._pools[key] = SSHPool(self.settings, **options)
            return pool

    def open(self, spec: HostSpec, ssh_options: dict, limits: dict, start: bool,
             timeout: float):
        """A channel to the node of ``spec`` (started if ``start``), or None if none runs.

        A new exec channel costs sshd most of a command's time (its session set-up,
        ~180 ms on the test bed against ~2 ms for the boot exchange), so the hub keeps
        one launched ahead per host it has reached (``SSHTransport.launch``: the boot
        stub runs, waiting for the node's parameters) and hands it to the next ``open``.
        """
        settings = NodeSettings(cookie=self.settings.cookie, bundle=self.settings.bundle,
                                version=self.settings.version, idle=limits["idle"],
                                max_payload=limits["max_payload"])
        transport = SSHTransport(spec, self.pool(ssh_options), settings=settings)
        deadline = time.monotonic() + timeout
        key = (tuple(ssh_options.get(k) for k in POOL_KEYS), spec.host, spec.user, spec.port,
               spec.python)
        spare = self._take_spare(key)
        try:
            stream = transport.open(start=start, deadline=deadline, launched=spare)
        except errors.ClusterError:
            if spare is None or not _ended(spare):
                raise
            stream = transport.open(start=start, deadline=deadline)  # the spare had died
        threading.Thread(target=self._launch_spare, args=(key, transport), daemon=True,
                         name=f"clusterctl-hub-spare-{spec.name}").start()
        return stream

    def _take_spare(self, key: tuple):
        with self._lock:
            spare = self._spares.pop(key, None)
        if spare is not None and _ended(spare):
            spare.close()
            return None
        return spare

    def _launch_spare(self, key: tuple, transport: SSHTransport) -> None:
        try:
            channel = transport.launch(time.monotonic() + SPARE_SECONDS)
        except Exception:  # noqa: BLE001 - no spare: the next open launches its own
            return
        with self._lock:
            if self._closed or key in self._spares:
                extra = channel
            else:
                self._spares[key], extra = channel, None
        if extra is not None:
            extra.close()

    def unknown_host_key(self, spec: HostSpec, ssh_options: dict, timeout: float):
        return self.pool(ssh_options).unknown_host_key(spec, time.monotonic() + timeout)

    def trust(self, ssh_options: dict, unknown) -> None:
        self.pool(ssh_options).trust(unknown)

    def wait_stopped(self, spec: HostSpec, ssh_options: dict, pid, timeout: float) -> None:
        SSHTransport(spec, self.pool(ssh_options)).wait_stopped(pid, timeout)

    def describe(self) -> list[dict]:
        """Each pool's files and its hosts' connections, for ``clusterctl hub``."""
        with self._lock:
            pools = list(self._pools.items())
        return [{"config_file": key[0], "known_hosts": key[1], "hosts": pool.describe(),
                 "shipped": pool.shipped} for key, pool in pools]

    def spares(self) -> int:
        with self._lock:
            return len(self._spares)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
            spares, self._spares = list(self._spares.values()), {}
        for channel in spares:
            channel.close()
        for pool in pools:
            pool.close()
