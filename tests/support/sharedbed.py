"""One SSH test bed for the whole run, and clusters over its hosts.

The netns bed is one per machine, so the tests share one: :func:`shared_bed` starts it
on first use (four hosts ``h1``..``h4``; only the jump host ``h4`` allows TCP forwarding)
and :func:`release_shared_bed` stops it (at the end of the run, or before a test that
builds beds of its own). A test that changes a host (cuts it, slows it, freezes it,
turns forwarding on) is put back by :func:`heal_hosts` and :func:`reset_hosts`, which
the fixtures run after every test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from clusterctl import Cluster, errors
from sshbed import SSHTestBed, available_reason

N_HOSTS = 4
JUMP = "h4"
FORWARDING = frozenset({JUMP})

_bed: SSHTestBed | None = None
_workdir: Path | None = None
_failed: str | None = None


def shared_bed() -> SSHTestBed:
    """The run's bed, started on first use; skips the test (with the reason) without one."""
    global _bed, _workdir, _failed
    if _bed is not None:
        return _bed
    reason = _failed or available_reason()
    if reason:
        pytest.skip(f"SSH test bed unavailable: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="ccb", dir="/tmp"))
    try:
        _bed = SSHTestBed(N_HOSTS, workdir, forwarding=FORWARDING).start()
    except Exception as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        _failed = f"the bed did not start: {exc}"
        raise
    _workdir = workdir
    return _bed


def release_shared_bed() -> None:
    """Stop the run's bed if it runs (the next :func:`shared_bed` starts a new one)."""
    global _bed, _workdir
    bed, workdir, _bed, _workdir = _bed, _workdir, None, None
    if bed is not None:
        try:
            bed.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def heal_hosts(bed: SSHTestBed) -> None:
    """Undo the faults a test put on the hosts: network back up, no delay, not frozen
    (before its clusters are brought down, which needs the hosts)."""
    for alias in bed.aliases:
        for undo in (lambda: bed.restore(alias), lambda: bed.slow(alias, 0), lambda: bed.start_host(alias)):
            try:
                undo()
            except Exception:  # noqa: BLE001 - a loopback bed has no network to restore
                pass


def reset_hosts(bed: SSHTestBed) -> None:
    """:func:`heal_hosts`, and forwarding as at the start (after the clusters are down: a
    cluster may reach its host through a jump host)."""
    heal_hosts(bed)
    for alias in bed.aliases:
        bed.set_forwarding(alias, alias in FORWARDING)


# A program's ``Cluster()`` reads the user's ~/.ssh/config; in the tests it gets the bed's.
PROGRAM_WITH_BED_SSH = """
import json, runpy, sys
import clusterctl
ssh_options = json.loads(sys.argv[1])

class Cluster(clusterctl.Cluster):
    def __init__(self, hosts=None, **options):
        options.setdefault("ssh_options", ssh_options)
        super().__init__(hosts, **options)

clusterctl.Cluster = Cluster
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class World:
    """Clusters over bed hosts with the bed's ssh files, all brought down at the end."""

    def __init__(self, bed: SSHTestBed, root: Path) -> None:
        self.bed = bed
        self.root = root
        self.made: list[tuple[Cluster, Path]] = []
        self.ssh = {"config_file": str(bed.ssh_config), "known_hosts": str(bed.known_hosts)}

    def cluster(self, hosts_text: str, **options) -> Cluster:
        """A Cluster over a new hosts file; ``ssh=`` adds to the bed's ssh options."""
        ssh = {**self.ssh, **options.pop("ssh", {})}
        path = self.root / f"hosts{len(self.made)}"
        path.write_text(hosts_text)
        c = Cluster(path, ssh_options=ssh, connect_timeout=options.pop("connect_timeout", 20), **options)
        self.made.append((c, path))
        return c

    def cli(self, hosts_text: str, *args: str, cwd: Path, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """The real ``clusterctl ARGS`` over a new hosts file with the bed's ssh files, run
        to its end in ``cwd``; its nodes are brought down at the end too."""
        hosts = self._hosts_file(hosts_text, cwd)
        return subprocess.run([sys.executable, "-m", "clusterctl", "--hosts", str(hosts),
                               "--ssh-config", self.ssh["config_file"], "--known-hosts",
                               self.ssh["known_hosts"], *args], cwd=cwd, input=input,
                              capture_output=True, text=True, timeout=timeout)

    def program(self, hosts_text: str, path: str | Path, *args: str, cwd: Path,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """``python PATH ARGS`` run to its end, as a user runs a program that makes a
        ``Cluster()``: its world is a new hosts file (``CLUSTERCTL_HOSTS``), reached with
        the bed's ssh files; its nodes are brought down at the end too."""
        hosts = self._hosts_file(hosts_text, cwd)
        return subprocess.run([sys.executable, "-c", PROGRAM_WITH_BED_SSH, json.dumps(self.ssh),
                               str(path), *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "CLUSTERCTL_HOSTS": str(hosts)})

    def _hosts_file(self, hosts_text: str, directory: Path) -> Path:
        hosts = directory / f"hosts{len(self.made)}"
        hosts.write_text(hosts_text)
        self.made.append((Cluster(hosts, ssh_options=self.ssh), hosts))
        return hosts

    def interruptible_cli(self, hosts_text: str, args: list[str], cwd: Path):
        """The real ``clusterctl ARGS`` over a new hosts file with the bed's ssh files, in a
        subprocess Ctrl-C interrupts; its nodes are brought down at the end too."""
        from helpers import interruptible_cli

        hosts = cwd / "hosts"
        hosts.write_text(hosts_text)
        self.made.append((Cluster(hosts, ssh_options=self.ssh), hosts))
        return interruptible_cli(["--hosts", str(hosts), "--ssh-config", self.ssh["config_file"],
                                  "--known-hosts", self.ssh["known_hosts"], *args], cwd)

    def down_everything(self, attempts: int = 3) -> None:
        """Bring every cluster's nodes down. A node that could not be reached to be
        stopped (a login that timed out on a loaded machine, a relay's hiccup) is tried
        again, up to ``attempts`` times: a node left running fails the test after it."""
        done = set()
        for c, path in self.made:
            c.close()
            key = (path.read_text(), repr(sorted(c.ssh_options.items())))
            if key in done:  # the same world, brought down already
                continue
            done.add(key)
            names = None
            for _ in range(attempts):
                try:
                    with Cluster(path, ssh_options=c.ssh_options, connect_timeout=10) as closer:
                        outcomes = closer.down(names)
                except errors.ClusterError:
                    continue
                names = [n for n, outcome in outcomes.items()
                         if isinstance(outcome, errors.ClusterError)]
                if not names:
                    break
        if self.made:  # (a down keeps the hub while it knows another world's node, one the
            # test lost, say; and a retry for some nodes may have started a hub again)
            c, path = self.made[-1]
            with Cluster(path, ssh_options=c.ssh_options, connect_timeout=10) as closer:
                closer.stop_hub()
