"""Shared fixtures: an isolated per-test environment, a process leak check, and clusters.

Every test gets its own XDG runtime, config and cache directories (short paths, since
unix socket paths are limited to 107 bytes), so its nodes, cookie and code cache are
its own; the code cache starts as a node leaves it, with the agent's code installed and
compiled (unless the test is marked ``empty_code_cache``: the ones about installing it
are). After the test, any process whose command line names the test's runtime
directory (a node or a worker it forked) is a leak: it is killed and the test fails; so
is a thread or a file descriptor of the test's own process still there a few seconds
after the test (dask's tests check the same).
The fixtures that build nodes say what they build: ``cluster`` (two nodes, over each
transport: a test that takes it runs over local nodes and over SSH to hosts of the run's
test bed, unless marked ``local_only``), ``local_cluster`` (two local nodes) and
``local_node_specs`` (their HostSpecs). tests/local/conftest.py adds
``make_local_cluster`` and ``local_hosts_env``, tests/ssh/conftest.py ``ssh_bed`` and
``ssh_clusters``. Helpers the tests import are in tests/support/helpers.py.
"""

from __future__ import annotations

import atexit
import compileall
import faulthandler
import gc
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from clusterctl.config.hosts import HostSpec
from helpers import Env


SESSION_DEADLINE = 40 * 60  # the suite takes about 6 to 7 minutes on 2 cores (three test processes)


def pytest_sessionstart(session):
    """A last guard above pytest-timeout's per-test limit: a run stuck where a signal cannot
    reach it (a fixture's teardown blocked in C) prints every thread's stack and ends,
    instead of holding CI until its own limit."""
    faulthandler.dump_traceback_later(SESSION_DEADLINE, exit=True)


# Python writes its bytecode in this run, as on a usual machine: with
# PYTHONDONTWRITEBYTECODE set (some CI images set it), every ``clusterctl`` a test runs and
# every node it starts would compile all of its modules again (test_cli.py: 93 s, 36 s
# with bytecode). Set before any test process, command or node starts.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# the run's one SSH test bed holds its lane's lock from the test that started it to the end
BED_STATE = ("/run/cct-beds/", f"{tempfile.gettempdir()}/cct-beds-")


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what each refers to."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # (the directory's own descriptor, closed by now)
            pass
    return fds


def leaked_threads_and_fds(threads_before: set, fds_before: dict, grace: float = 3.0) -> list[str]:
    """Threads started and descriptors opened since the snapshot that are still there
    after ``grace`` seconds (a thread or socket of a closed connection may take a moment
    to end), as dask's tests check."""
    deadline = time.monotonic() + grace
    while True:
        gc.collect()
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        fds = {fd: target for fd, target in open_fds().items()
               if fds_before.get(fd) != target and not target.startswith(BED_STATE)}
        if not threads and not fds or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return [f"thread {t.name!r}" for t in threads] + [f"fd {fd} -> {target}" for fd, target in sorted(fds.items())]


_compiled_code: list[Path] = []  # this test process's compiled copy of the agent's code


def compiled_agent_code() -> Path:
    """The agent's code as a host's cache holds it after a node ran from it: installed the
    product's way (``Bundle.install``) and compiled by this interpreter, which the local
    nodes run. Made once per test process: a node starting in a new cache compiles every
    module it imports (about 0.13 s, twice the CPU with two nodes), and most tests start
    nodes in a cache of their own."""
    if not _compiled_code:
        from clusterctl.transport.bundle import agent_bundle

        root = Path(tempfile.mkdtemp(prefix="ccseed", dir="/tmp"))
        atexit.register(shutil.rmtree, root, True)
        code = agent_bundle().install(root / "clusterctl")
        compileall.compile_dir(str(code), quiet=1)
        _compiled_code.append(code)
    return _compiled_code[0]


def seed_code_cache(cache: Path) -> None:
    """Put the compiled agent code in the cache directory ``cache`` (its files' times kept,
    so the bytecode stays valid; its modes kept: private, as the install leaves them)."""
    code = compiled_agent_code()
    places = cache / "clusterctl", cache / "clusterctl" / "code"
    for place in places:
        place.mkdir(mode=0o700)
    shutil.copytree(code, places[-1] / code.name, copy_function=shutil.copy2)


@pytest.fixture
def env(monkeypatch, request) -> Env:
    """An isolated environment; fails the test if it leaves a process behind, or a thread
    or file descriptor in the test's own process."""
    threads_before, fds_before = set(threading.enumerate()), open_fds()
    root = Path(tempfile.mkdtemp(prefix="cc", dir="/tmp"))
    e = Env(root)
    if request.node.get_closest_marker("empty_code_cache") is None:
        seed_code_cache(e.cache)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(e.run))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(e.config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(e.cache))
    monkeypatch.delenv("CLUSTERCTL_HOSTS", raising=False)
    # the runner's terminal width is not the test's: a command's output off a terminal is
    # whole (a test that wants 80 columns says COLUMNS=80)
    monkeypatch.delenv("COLUMNS", raising=False)
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
    left = leaked_threads_and_fds(threads_before, fds_before)
    if left:
        pytest.fail("test left in its own process: " + "; ".join(left))


@pytest.fixture
def local_node_specs():
    """HostSpecs of local nodes n1, n2 (two slots each), none started: for a test's own Clusters."""
    return [HostSpec(name="n1", target="local", slots=2), HostSpec(name="n2", target="local", slots=2)]


@pytest.fixture
def local_cluster(env, local_node_specs):
    """A Cluster of local nodes n1, n2, brought down after: for a test of local processes or files."""
    from clusterctl import Cluster

    c = Cluster(local_node_specs, heartbeat_timeout=10.0)
    try:
        yield c
    finally:
        c.close()
        with Cluster(local_node_specs) as closer:
            closer.down()


# The transports a test that takes ``cluster`` runs over. The SSH one uses the run's one
# test bed (tests/support/sharedbed.py) and skips, with the reason, without one.
TRANSPORTS = ["local", pytest.param("ssh", marks=[pytest.mark.ssh, pytest.mark.timeout(180)])]


def pytest_generate_tests(metafunc):
    """Every test that takes ``cluster`` runs once per transport (like execnet's ``gw``),
    unless it is marked ``local_only``."""
    if "cluster" in metafunc.fixturenames and not metafunc.definition.get_closest_marker("local_only"):
        metafunc.parametrize("cluster", TRANSPORTS, indirect=True)


@pytest.fixture
def cluster(request, env, local_node_specs):
    """A Cluster of nodes n1, n2 over each transport in turn (local, SSH): for a test of any node."""
    # two slots each; local: ``local_cluster``; SSH: test-bed hosts h1, h2. All its nodes
    # are brought down after the test, and none may be left behind. (A test marked
    # ``local_only`` gets the local one alone.)
    if getattr(request, "param", "local") == "local":
        yield request.getfixturevalue("local_cluster")
        return
    from sharedbed import World, heal_hosts, reset_hosts, shared_bed
    from sshbed import assert_no_clusterctl_left

    bed = shared_bed()
    bed_clusters = World(bed, env.root)
    try:
        yield bed_clusters.cluster("h1 name=n1 slots=2\nh2 name=n2 slots=2\n", heartbeat_timeout=10.0)
    finally:
        heal_hosts(bed)
        bed_clusters.down_everything()
        reset_hosts(bed)
        assert_no_clusterctl_left(bed)


def pytest_sessionfinish(session):
    """The shared SSH test bed, if one was started, stops with the run."""
    sharedbed = sys.modules.get("sharedbed")
    if sharedbed is not None:
        sharedbed.release_shared_bed()
