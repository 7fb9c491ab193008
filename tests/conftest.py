"""Shared fixtures: an isolated per-test environment and a process leak check.

Every test gets its own XDG runtime, config and cache directories (short paths, since
unix socket paths are limited to 107 bytes), so its nodes, cookie and code cache are
its own. After the test, any process whose command line names the test's runtime
directory (a node or a worker it forked) is a leak: it is killed and the test fails.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from clusterctl.hosts import HostSpec


SESSION_DEADLINE = 40 * 60  # the suite takes about 5 minutes on 2 cores


def pytest_sessionstart(session):
    """A last guard above pytest-timeout's per-test limit: a run stuck where a signal cannot
    reach it (a fixture's teardown blocked in C) prints every thread's stack and ends,
    instead of holding CI until its own limit."""
    faulthandler.dump_traceback_later(SESSION_DEADLINE, exit=True)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains ``text``."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            found.append((int(entry), cmd.strip()))
    return found


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Env:
    """The test's private directories and helpers to use them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "r"
        self.config = root / "c"
        self.cache = root / "k"
        self.cwd = root / "w"
        for d in (self.run, self.config, self.cache, self.cwd):
            d.mkdir(mode=0o700)

    @property
    def run_dir(self) -> Path:
        """Where local nodes put their sockets, pid files and logs."""
        return self.run / "clusterctl"

    def hosts_file(self, text: str, name: str = "hosts") -> Path:
        path = self.cwd / name
        path.write_text(text)
        return path

    def node_processes(self) -> list[tuple[int, str]]:
        return processes_mentioning(str(self.run))

    def node_log(self, name: str) -> str:
        try:
            return (self.run_dir / f"{name}.log").read_text()
        except OSError:
            return ""

    def node_pid(self, name: str) -> int:
        return int((self.run_dir / f"{name}.pid").read_text())

    def cli(self, *args: str, timeout: float = 60, input: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the real ``clusterctl`` command in a subprocess, in the test's directory."""
        return subprocess.run([sys.executable, "-m", "clusterctl", *args], cwd=self.cwd,
                              capture_output=True, text=True, timeout=timeout, input=input,
                              env={**os.environ, **(env or {})})


# A shell that starts a job in the background (as CI runners may) leaves SIGINT ignored
# for it and everything it starts, and Python then never turns Ctrl-C into
# KeyboardInterrupt. The CLI under test gets Ctrl-C back the way a terminal gives it.
INTERRUPTIBLE = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                 "sys.argv[0] = 'clusterctl'; runpy.run_module('clusterctl', run_name='__main__')")


def interruptible_cli(args, cwd) -> subprocess.Popen:
    """The real ``clusterctl ARGS`` in a subprocess that Ctrl-C (SIGINT) interrupts."""
    return subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def end_process(proc: subprocess.Popen) -> None:
    """Kill a test's subprocess if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    proc.wait()


@pytest.fixture
def env(monkeypatch) -> Env:
    """An isolated environment; fails the test if it leaves a process behind."""
    root = Path(tempfile.mkdtemp(prefix="cc", dir="/tmp"))
    e = Env(root)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(e.run))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(e.config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(e.cache))
    monkeypatch.delenv("CLUSTERCTL_HOSTS", raising=False)
    monkeypatch.chdir(e.cwd)
    yield e
    leaked = e.node_processes()
    deadline = time.monotonic() + 3.0  # a process killed just now may still be exiting
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = e.node_processes()
    for pid, _ in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if leaked:
        time.sleep(0.1)
    shutil.rmtree(root, ignore_errors=True)
    if leaked:
        pytest.fail("test left processes behind: " + "; ".join(f"{p} {c[:80]}" for p, c in leaked))


@pytest.fixture
def local_specs():
    """Two local nodes with two slots each."""
    return [HostSpec(name="n1", target="local", slots=2), HostSpec(name="n2", target="local", slots=2)]


@pytest.fixture
def cluster(env, local_specs):
    """A Cluster over two local nodes, brought down (all processes gone) after the test."""
    from clusterctl import Cluster

    c = Cluster(local_specs, heartbeat_timeout=10.0)
    try:
        yield c
    finally:
        c.close()
        with Cluster(local_specs) as closer:
            closer.down()
