"""Processes of the SSH test bed's hosts: reading /proc, finding a host's processes
(by network namespace, or process tree and environment marker), freezing, killing
and waiting for them, and the leak check the tests run after each test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from bed_common import NETNS_DIR, BedError, _Host

if TYPE_CHECKING:
    from sshbed import SSHTestBed


# -- /proc helpers -----------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, None if it does not exist."""
    try:
        data = Path("/proc/%d/stat" % pid).read_bytes()
    except OSError:
        return None
    try:
        rest = data[data.rindex(b")") + 2:].split()
        return rest[0].decode(), int(rest[1]), int(rest[19])
    except (ValueError, IndexError):
        return None


def _start_time(pid: int) -> int | None:
    st = _proc_stat(pid)
    return None if st is None else st[2]


def _alive(pid: int, start: int | None = None) -> bool:
    """Running (not a zombie) and, if ``start`` is given, the same process."""
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X", "x"):
        return False
    return start is None or st[2] == start


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _protected_pids() -> set[int]:
    """This process and its ancestors: never signalled, whatever happens."""
    out = set()
    pid = os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        st = _proc_stat(pid)
        if st is None:
            break
        pid = st[1]
    out.add(1)
    return out


def _netns_members(namespaces: Iterable[str]) -> dict[str, set[int]]:
    """Pids whose network namespace is one of ``namespaces`` (as ``ip netns pids``)."""
    namespaces = list(namespaces)
    ids = {}
    for ns in namespaces:
        try:
            st = os.stat(NETNS_DIR / ns)
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = ns
    out: dict[str, set[int]] = {ns: set() for ns in namespaces}
    if not ids:
        return out
    for pid in _all_pids():
        try:
            st = os.stat("/proc/%d/ns/net" % pid)
        except OSError:
            continue
        ns = ids.get((st.st_dev, st.st_ino))
        if ns is not None and _alive(pid):
            out[ns].add(pid)
    return out


def _process_tree_and_markers(roots: Mapping[str, Iterable[int]],
                              markers: Mapping[str, bytes]) -> dict[str, set[int]]:
    """Per key: the live descendants of its root pids (roots included) plus every
    process whose environment contains its marker entry."""
    children: dict[int, list[int]] = {}
    live = []
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X", "x"):
            continue
        live.append(pid)
        children.setdefault(st[1], []).append(pid)
    out: dict[str, set[int]] = {}
    for key, pids in roots.items():
        found: set[int] = set()
        stack = [p for p in pids if _alive(p)]
        while stack:
            p = stack.pop()
            if p in found:
                continue
            found.add(p)
            stack.extend(children.get(p, ()))
        out[key] = found
    if markers:
        by_marker = {m: k for k, m in markers.items()}
        for pid in live:
            try:
                env = Path("/proc/%d/environ" % pid).read_bytes()
            except OSError:
                continue
            if not env:
                continue
            for entry in env.split(b"\0"):
                key = by_marker.get(entry)
                if key is not None:
                    out.setdefault(key, set()).add(pid)
                    break
    return out


def _signal(pids: Iterable[int], sig: int) -> None:
    protected = _protected_pids()
    for pid in pids:
        if pid in protected:
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: Iterable[int], timeout: float, reap: Iterable[subprocess.Popen] = ()) -> set[int]:
    """Wait until none of ``pids`` runs any more; return the survivors."""
    pending = set(pids)
    reap = list(reap)
    deadline = time.monotonic() + timeout
    while True:
        for p in reap:
            p.poll()
        pending = {p for p in pending if _alive(p)}
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.01)



def _comm(pid: int) -> str | None:
    try:
        return Path("/proc/%d/comm" % pid).read_text().strip()
    except OSError:
        return None



def clusterctl_processes(bed: "SSHTestBed", alias: str) -> list[tuple[int, str]]:
    """(pid, command line) of clusterctl's processes (node, workers, boot script) on one
    test host, zombies left out."""
    found = []
    for pid in bed.host_pids(alias):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and ("clusterctl" in cmd or "sys.stdin.buffer.readline" in cmd):
            found.append((pid, cmd))
    return found


def assert_no_clusterctl_left(bed: "SSHTestBed", timeout: float = 5.0) -> None:
    """Fail if clusterctl processes are still on any test host after ``timeout`` seconds
    (boot scripts exit once sshd closes their channel); whatever is left is killed."""
    deadline = time.monotonic() + timeout
    while True:
        leftovers = {a: p for a in bed.aliases if (p := clusterctl_processes(bed, a))}
        if not leftovers or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for procs in leftovers.values():
        for pid, _ in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not leftovers, f"processes left on test hosts: {leftovers}"



class HostProcesses:
    """The processes of each host of an :class:`~sshbed.SSHTestBed`."""

    def _pids_by_host(self, hosts: Iterable[_Host]) -> dict[str, set[int]]:
        hosts = list(hosts)
        out: dict[str, set[int]] = {h.alias: set() for h in hosts}
        ns_hosts = [h for h in hosts if h.namespace]
        if ns_hosts:
            members = _netns_members(h.namespace for h in ns_hosts)
            for h in ns_hosts:
                out[h.alias] |= members.get(h.namespace, set())
        lo_hosts = [h for h in hosts if not h.namespace]
        if lo_hosts:
            roots = {h.alias: [h.popen.pid] if h.popen is not None and h.popen.poll() is None else []
                     for h in lo_hosts}
            found = _process_tree_and_markers(roots, {h.alias: h.marker for h in lo_hosts})
            for h in lo_hosts:
                out[h.alias] |= found.get(h.alias, set())
        protected = _protected_pids()
        for alias in out:
            out[alias] -= protected
            self.seen_pids |= out[alias]
        return out

    def host_pids(self, alias: str) -> list[int]:
        """Every live process of the host: netns mode, all processes in its
        namespace (``ip netns pids``); loopback, its sshd with descendants and
        any process carrying the host's XDG_CACHE_HOME (detached daemons)."""
        h = self._host(alias)
        return sorted(self._pids_by_host([h])[alias])

    def stop_host(self, alias: str) -> list[int]:
        """Freeze the host (SIGSTOP to all its processes): it accepts TCP
        connections but never answers.  Returns the pids stopped."""
        pids = self.host_pids(alias)
        _signal(pids, signal.SIGSTOP)
        return pids

    def start_host(self, alias: str) -> list[int]:
        """Undo ``stop_host`` (SIGCONT to all its processes)."""
        pids = self.host_pids(alias)
        _signal(pids, signal.SIGCONT)
        return pids

    def kill_all_in_host(self, alias: str) -> list[int]:
        """SIGKILL every process of the host (sshd included); does not wait."""
        pids = self.host_pids(alias)
        _signal(pids, signal.SIGKILL)
        return pids

    def kill_host(self, alias: str, timeout: float = 10.0) -> list[int]:
        """Crash the host: SIGKILL everything of it and wait until it is gone.
        Its network stays up (connections are refused); bring sshd back with
        ``restart_sshd``."""
        h = self._host(alias)
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            pids = set(self.kill_all_in_host(alias))
            killed |= pids
            left = _wait_gone(pids, max(0.0, deadline - time.monotonic()),
                              [h.popen] if h.popen else [])
            if not left and not self.host_pids(alias):
                break
            if time.monotonic() >= deadline:
                raise BedError("processes of %s survived SIGKILL: %s" % (alias, sorted(left)))
        if h.popen is not None:
            h.popen.poll()
        return sorted(killed)
