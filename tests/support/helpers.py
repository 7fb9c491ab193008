"""Helpers the tests import: process lookup, polling, the test's private environment,
and the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path


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


def node_pid(cluster, name: str) -> int:
    """The node's pid; the world is pinged first, so a run starts on these connections
    (and starts no node again in the background after the test killed it)."""
    cluster.world()
    return cluster.connect(name).hello["pid"]


def script(env, text: str, name: str = "job.py") -> str:
    """Write a script (dedented) into the test's directory; its path."""
    path = env.cwd / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def lines(text: str) -> list:
    """The JSON values of a command's output, one a line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class CutUntilLost:
    """In a thread: once ``started()``, cut ``host`` off the bed's network; once
    ``lost()``, restore it, while the run goes on. ``cut_at`` and ``restored_at`` say
    when (``time.monotonic()``); ``join`` waits for the thread."""

    def __init__(self, bed, host: str, started, lost, *, start_timeout: float = 30.0) -> None:
        self.cut_at: float | None = None
        self.restored_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        args=(bed, host, started, lost, start_timeout))
        self._thread.start()

    def _run(self, bed, host, started, lost, start_timeout) -> None:
        wait_for(started, start_timeout, message=f"items to start on {host}")
        bed.cut(host)
        self.cut_at = time.monotonic()
        try:
            wait_for(lost, 30, interval=0.005, message=f"{host} to be declared lost")
        finally:
            self.restored_at = time.monotonic()
            bed.restore(host)

    def join(self, timeout: float = 60.0) -> bool:
        """True once the thread is done."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
