"""A throw-away multi-host SSH test bed built from real OpenSSH servers.

``SSHTestBed(n, workdir)`` starts ``n`` independent ``sshd`` processes, each
playing one remote host ``h1`` .. ``hN``, plus everything an SSH client needs
to reach them: a client key, an ``ssh_config`` with one ``Host`` alias per
host and a ``known_hosts`` file holding every host key.  Nothing outside
``workdir`` is read or written on the client side; the system ``sshd_config``
and ``~/.ssh`` are never used.

Two modes:

``"netns"`` (root, working ``ip netns``)
    The bed takes a lane of ``198.18.0.0/24``: one of four /26 (``bed.plan``),
    so that four beds in four processes (test workers side by side) run at
    once; a bed of more than 52 hosts takes the whole /24.  A bridge
    ``<id>br`` in the root network namespace carries the lane's first address
    (``198.18.0.1/26`` in lane 0).  Host ``hI`` lives in its own network
    namespace ``<id>hI``, connected to the bridge by a veth pair (``<id>vI``
    on the bridge, ``<id>pI`` inside the namespace), with the address
    ``HOST_OFFSET + I`` into the lane (``198.18.0.11`` for h1 in lane 0);
    its sshd listens on port 22 there.  Every process
    a session starts (including daemons the code under test leaves behind)
    stays inside that namespace, so a host can be partitioned (``cut``),
    frozen (``stop_host``) or crashed (``kill_host``) as a whole.  No default
    route is installed in the namespaces and IPv6 address generation is
    switched off on the bed's interfaces, so hosts can only talk to their
    lane.  No sysctl is changed.  ``<id>`` is ``cct`` plus six random hex
    digits.  A bed waits (``lock_timeout``) for a free lane, held by a file
    lock; a second netns bed in the same process is refused.
    A root sshd needs ``/run/sshd``; it is created if missing.

``"loopback"`` (fallback)
    sshd on ``127.0.0.1`` with one free port per host, run as the current
    user.  Network faults (``cut``, ``slow``) raise :class:`NotSupported`.

``"auto"`` picks ``"netns"`` when :func:`netns_available` says so.

All hosts share this machine's filesystem and user account.  To keep them
apart, every host's sshd sets ``XDG_CACHE_HOME``, ``XDG_RUNTIME_DIR``,
``XDG_CONFIG_HOME`` and ``HOME`` (``SetEnv``, OpenSSH >= 8.7) to private 0700
directories under ``workdir/hI/``.  The hosts are as bare as fresh ones: their
``PATH`` starts with ``workdir/python/bin``, a virtualenv of the controller's
interpreter made without pip and without its site-packages, so ``python3`` there
has the standard library and nothing else (and the home of their own means no rc
file of this machine's account puts another interpreter first).  Keep ``workdir`` short if the code under test
creates UNIX sockets in ``XDG_RUNTIME_DIR`` (108-byte path limit).

Layout of ``workdir``::

    client/id_ed25519{,.pub}  client/ssh_config  client/known_hosts
    python/bin/python3                           (the hosts' bare interpreter)
    hI/{cache,run,config,home}/                  (the host's environment)
    sshd/hI/sshd_config  ssh_host_ed25519_key{,.pub}  authorized_keys
            sshd.pid  sshd.log  ssh_host_{ecdsa,rsa}_key{,.pub} (add_host_key)

Usage::

    with SSHTestBed(3, tmp_path) as bed:
        bed.ssh("h1", "true").check_returncode()
        client.connect(**bed.paramiko_connect_kwargs("h2"))
        bed.cut("h3")          # h3 unreachable, processes keep running
        bed.restore("h3")

Things to know:

* Sessions run the account's login shell; bash sources ``~/.bashrc`` for
  commands run by sshd, from the host's own (empty) home, so nothing of this
  machine's account (pyenv init, a virtualenv on PATH) reaches a host.
* With ``UsePAM no`` sshd itself decides whether the account is usable and
  refuses accounts it considers locked; logins then fail with
  "Permission denied (publickey)" and the host log (``log_path``) says
  "account is locked".  Root works; some system/CI accounts may not.
* sshd_config takes the first value of an option, so ``extra_sshd_config``
  can add options but not override the generated ones (use ``Match`` blocks
  or ``set_forwarding`` for that).

Cleanup: leaving the ``with`` block (or :meth:`SSHTestBed.stop`) sends
SIGTERM, then SIGKILL, to every process of every host, waits for them,
and deletes the namespaces, veths and the bridge.  It is also registered with
:mod:`atexit`.  If the owning process dies without cleaning up (SIGKILL), the
next bed removes what it left behind: each bed records its owner pid and its
resources in ``/run/cct-beds/<id>.json`` (non-root: a per-user directory in
the temp dir), and only resources listed in a record whose owner is gone are
ever removed.

This module puts the bed together from parts with one job each, and re-exports
what tests use: ``bed_common`` (address plan, errors, host records, tools),
``bed_network`` (can netns run here, the bridge and namespaces, ``cut``/``slow``),
``bed_sshd`` (config files, keys, the sshd processes), ``bed_processes`` (a host's
processes, freezing and killing them, the leak check) and ``bed_records`` (owner
records, and cleaning up after a dead owner).
"""

from __future__ import annotations

import atexit
import os
import pwd
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable, Mapping

from bed_common import (BRIDGE_ADDRESS, HOST_OFFSET, LANE_HOSTS, LANES, MAX_HOSTS, PREFIX,  # noqa: F401
                        SUBNET, AddressPlan, BedError, BedHost, NotSupported, _free_ports, _Host,
                        _which, available_reason, openssh_version)
from bed_network import NetworkFaults, _delete_network, netns_available, netns_unavailable_reason
from bed_processes import (HostProcesses, _protected_pids, _signal, _wait_gone,  # noqa: F401
                           assert_no_clusterctl_left, clusterctl_processes)
from bed_records import _FileLock, _StateDir
from bed_sshd import SshdHosts

__all__ = [
    "BedError",
    "BedHost",
    "NotSupported",
    "SSHTestBed",
    "assert_no_clusterctl_left",
    "available_reason",
    "clusterctl_processes",
    "netns_available",
    "netns_unavailable_reason",
    "openssh_version",
]

# in-process registry: one netns bed a process (test workers side by side have one each)
_active_netns_beds: set[str] = set()


class SSHTestBed(SshdHosts, HostProcesses, NetworkFaults):
    """``n_hosts`` sshd-backed hosts ``h1``..``hN`` plus a matching client setup.

    Parameters (keyword-only besides the first two):

    mode
        ``"auto"`` (default), ``"netns"`` or ``"loopback"``.
    forwarding
        aliases whose sshd allows TCP forwarding (jump hosts) from the start;
        all others have ``AllowTcpForwarding no``.
    extra_sshd_config
        text appended to every host's sshd_config.
    extra_env
        more ``SetEnv`` variables for every host (e.g. ``PATH``).
    start_timeout, lock_timeout, term_timeout
        seconds to wait for sshd to accept connections, for another netns bed
        to finish, and for processes to exit on SIGTERM before SIGKILL.
    """

    def __init__(self, n_hosts: int, workdir: Path | str, *, mode: str = "auto",
                 forwarding: Iterable[str] = (), extra_sshd_config: str = "",
                 extra_env: Mapping[str, str] | None = None, start_timeout: float = 20.0,
                 lock_timeout: float = 120.0, term_timeout: float = 2.0) -> None:
        if not 1 <= int(n_hosts) <= MAX_HOSTS:
            raise ValueError("n_hosts must be between 1 and %d" % MAX_HOSTS)
        if mode not in ("auto", "netns", "loopback"):
            raise ValueError("mode must be 'auto', 'netns' or 'loopback', not %r" % mode)
        self.n_hosts = int(n_hosts)
        self.workdir = Path(workdir).absolute()
        self.requested_mode = mode
        self.mode = ""
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.client_dir = self.workdir / "client"
        self.client_key = self.client_dir / "id_ed25519"
        self.ssh_config = self.client_dir / "ssh_config"
        self.known_hosts = self.client_dir / "known_hosts"
        self.bare_python = self.workdir / "python"  # every host's python3 (bin/python3)
        self.bed_id = ""
        self.bridge: str | None = None
        self._forwarding_init = set(forwarding)
        self._extra_sshd_config = extra_sshd_config
        self._extra_env = dict(extra_env or {})
        self._start_timeout = start_timeout
        self._lock_timeout = lock_timeout
        self._term_timeout = term_timeout
        self._hosts: list[_Host] = []
        self._by_alias: dict[str, _Host] = {}
        self._jumps: dict[str, tuple[str, str]] = {}
        self._lock = threading.RLock()
        self._state: _StateDir | None = None
        self._netns_locks: list[_FileLock] = []
        self.plan = AddressPlan(None)  # (netns: the lane it was given)
        self._record: dict = {}
        self._started = False
        self._stopped = False
        self._netem_reason: str | None | bool = False  # False: not probed yet
        self.seen_pids: set[int] = set()  # every host pid this bed has ever listed
        self.start_seconds = 0.0
        self.stop_seconds = 0.0

    # -- public read-only view ----------------------------------------------------

    @property
    def hosts(self) -> list[BedHost]:
        return [h.public() for h in self._hosts]

    @property
    def aliases(self) -> list[str]:
        return [h.alias for h in self._hosts]

    def host(self, alias: str) -> BedHost:
        return self._host(alias).public()

    def _host(self, alias: str) -> _Host:
        try:
            return self._by_alias[alias]
        except KeyError:
            raise KeyError("no host %r in this bed (have %s)" % (alias, ", ".join(self._by_alias))) from None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> "SSHTestBed":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "SSHTestBed":
        """Start everything; on any failure, undo what was done and re-raise."""
        with self._lock:
            if self._started:
                raise BedError("bed already started")
            self._started = True
            t0 = time.monotonic()
            atexit.register(self._atexit_stop)
            try:
                self._start()
            except BaseException:
                try:
                    self.stop()
                except Exception:
                    pass  # the original error is the interesting one
                raise
            self.start_seconds = time.monotonic() - t0
            return self

    def _start(self) -> None:
        reason = available_reason()
        if reason:
            raise BedError("cannot start an SSH test bed: " + reason)
        if self.requested_mode == "netns":
            why = netns_unavailable_reason()
            if why:
                raise BedError("netns mode unavailable: " + why)
            self.mode = "netns"
        elif self.requested_mode == "loopback":
            self.mode = "loopback"
        else:
            self.mode = "netns" if netns_available() else "loopback"

        self._state = _StateDir()
        if self.mode == "netns":
            if _active_netns_beds:
                raise BedError("another netns bed (%s) is running in this process: one a process"
                               % ", ".join(sorted(_active_netns_beds)))
            self.plan, self._netns_locks = self._take_lane()
        with self._state.locked():
            self._state.clean_stale()
            self.bed_id = self._state.new_id()
            self._plan()
            self._save_record()
        if self.mode == "netns":
            _active_netns_beds.add(self.bed_id)

        self._prepare_files()
        self._check_configs()
        if self.mode == "netns":
            self._setup_network()
        self._start_sshds(self._hosts)

    def _plan(self) -> None:
        ports = _free_ports(self.n_hosts) if self.mode == "loopback" else [22] * self.n_hosts
        for i in range(1, self.n_hosts + 1):
            alias = "h%d" % i
            netns = self.mode == "netns"
            h = _Host(index=i, alias=alias,
                      address=self.plan.host(i) if netns else "127.0.0.1",
                      port=ports[i - 1],
                      namespace="%sh%d" % (self.bed_id, i) if netns else None,
                      veth="%sv%d" % (self.bed_id, i) if netns else None,
                      peer="%sp%d" % (self.bed_id, i) if netns else None,
                      env_dir=self.workdir / alias, sshd_dir=self.workdir / "sshd" / alias,
                      forwarding=alias in self._forwarding_init)
            self._hosts.append(h)
            self._by_alias[alias] = h
        unknown = self._forwarding_init - set(self._by_alias)
        if unknown:
            raise ValueError("forwarding names unknown hosts: %s" % ", ".join(sorted(unknown)))
        if self.mode == "netns":
            self.bridge = self.bed_id + "br"
        self._record = {
            "mode": self.mode,
            "workdir": str(self.workdir),
            "namespaces": [h.namespace for h in self._hosts if h.namespace],
            "links": [h.veth for h in self._hosts if h.veth] + ([self.bridge] if self.bridge else []),
            "sshd": [],
            "markers": [h.marker.decode() for h in self._hosts],
        }

    def _take_lane(self) -> tuple[AddressPlan, list[_FileLock]]:
        """A lane of the address plan, held by a file lock until the bed stops: the first
        free one (beds in other processes hold the others), waiting up to ``lock_timeout``;
        a bed of more than ``LANE_HOSTS`` hosts takes them all, in order."""
        locks = [self._state.locked("netns-lane-%d.lock" % k, 0.0) for k in range(LANES)]
        if self.n_hosts > LANE_HOSTS:
            taken = []
            try:
                for lock in locks:
                    lock.timeout = self._lock_timeout
                    lock.acquire()
                    taken.append(lock)
            except BaseException:
                for lock in taken:
                    lock.release()
                raise
            return AddressPlan(None), taken
        deadline = time.monotonic() + self._lock_timeout
        while True:
            for k, lock in enumerate(locks):
                try:
                    lock.acquire()
                except BedError:  # (held by another bed: timed out at once)
                    continue
                return AddressPlan(k), [lock]
            if time.monotonic() >= deadline:
                raise BedError("timed out after %.0f s waiting for a free lane of %s (%d beds run)"
                               % (self._lock_timeout, SUBNET, LANES))
            time.sleep(0.1)

    def _save_record(self) -> None:
        if self._state and self.bed_id:
            self._state.write_record(self.bed_id, self._record)

    # -- client helpers ------------------------------------------------------------------

    def ssh_argv(self, alias: str, command: str | None = None, options: Iterable[str] = ()) -> list[str]:
        """argv for OpenSSH ``ssh`` to ``alias`` using the bed's ssh_config."""
        argv = [_which("ssh") or "ssh", "-F", str(self.ssh_config), *options, alias]
        if command is not None:
            argv.append(command)
        return argv

    def ssh(self, alias: str, command: str, timeout: float = 20, *, input: str | None = None,
            options: Iterable[str] = ()) -> subprocess.CompletedProcess:
        """Run ``command`` on ``alias`` with OpenSSH; output captured as text,
        exit status not checked.  ``options`` are extra ssh arguments such as
        ``["-o", "ConnectTimeout=2"]``."""
        return subprocess.run(self.ssh_argv(alias, command, options), input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def paramiko_connect_kwargs(self, alias: str) -> dict:
        """Keyword arguments for ``paramiko.SSHClient.connect`` (pair with
        ``client.load_host_keys(bed.known_hosts)`` and RejectPolicy)."""
        h = self._host(alias)
        return {"hostname": h.address, "port": h.port, "username": self.user,
                "key_filename": str(self.client_key), "look_for_keys": False, "allow_agent": False,
                "timeout": 10, "banner_timeout": 10, "auth_timeout": 10}

    # -- teardown --------------------------------------------------------------------------

    def _atexit_stop(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    def stop(self) -> None:
        """Stop every process of every host, remove the network; idempotent."""
        with self._lock:
            if self._stopped or not self._started:
                return
            self._stopped = True
            t0 = time.monotonic()
            problems: list[str] = []
            try:
                self._terminate_everything(problems)
            except Exception as exc:
                problems.append("killing processes: %r" % (exc,))
                for h in self._hosts:  # at least the sshd processes we started
                    if h.popen is not None and h.popen.poll() is None:
                        h.popen.kill()
                        h.popen.wait()
            if self.mode == "netns" and self._record:
                try:
                    left = _delete_network(self._record.get("namespaces", []), self._record.get("links", []))
                    if left:
                        problems.append("could not delete: %s" % ", ".join(left))
                except Exception as exc:
                    problems.append("deleting network: %r" % (exc,))
            if not problems and self._state and self.bed_id:
                self._state.remove_record(self.bed_id)  # otherwise the next bed retries
            _active_netns_beds.discard(self.bed_id)
            for lock in self._netns_locks:
                lock.release()
            self._netns_locks = []
            atexit.unregister(self._atexit_stop)
            self.stop_seconds = time.monotonic() - t0
            if problems:
                raise BedError("test bed %s cleanup incomplete: %s" % (self.bed_id, "; ".join(problems)))

    close = stop

    def _terminate_everything(self, problems: list[str]) -> None:
        popens = [h.popen for h in self._hosts if h.popen is not None]

        def collect() -> set[int]:
            pids = set()
            for s in self._pids_by_host(self._hosts).values():
                pids |= s
            pids |= {p.pid for p in popens if p.poll() is None}
            return pids - _protected_pids()

        pids = collect()
        if pids:
            _signal(pids, signal.SIGTERM)
            _signal(pids, signal.SIGCONT)  # stopped processes must run to see SIGTERM
            deadline = time.monotonic() + self._term_timeout
            while True:
                left = _wait_gone(pids, min(0.1, max(0.0, deadline - time.monotonic())), popens)
                new = collect() - pids  # forked meanwhile
                if new:
                    _signal(new, signal.SIGTERM)
                    _signal(new, signal.SIGCONT)
                pids = left | new
                if not pids or time.monotonic() >= deadline:
                    break
        deadline = time.monotonic() + 10.0
        while True:
            pids = collect()
            if not pids:
                break
            if time.monotonic() >= deadline:
                problems.append("processes survived SIGKILL: %s" % sorted(pids))
                break
            _signal(pids, signal.SIGKILL)
            _wait_gone(pids, 0.5, popens)
        for p in popens:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                problems.append("sshd %d not reaped" % p.pid)

    def __repr__(self) -> str:
        return "<SSHTestBed %s mode=%s hosts=%d>" % (self.bed_id or "-", self.mode or "-", self.n_hosts)


