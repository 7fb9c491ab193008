"""Places on disk are checked before they are used.

The run directory (sockets) must be ours and private before anything connects to a
socket in it: whoever owns a socket there would receive the SSH channel's descriptors.
The code cache must be ours, not writable by others, and hold exactly the files of its
code id before a node runs from it; a broken one is repaired by the next start. And
``python=`` never reaches a remote shell as shell syntax.

The boot script is run here directly, as the SSH stub runs it (``python -S``), so its
checks are tested without sshd; the tests over the SSH test bed are in
tests/ssh/test_places_ssh.py.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from clusterctl import Cluster, errors
from clusterctl.transport.bundle import agent_bundle
from clusterctl.config.hosts import HostSpec
from clusterctl.node import boot
from clusterctl.transport.ssh import bundle_zip
from clusterctl.transport.base import NodeSettings
from clusterctl.transport.local import LocalTransport

pytestmark = pytest.mark.empty_code_cache  # (these tests install the agent's code themselves)

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a directory to another user")
BOOT_SOURCE = Path(boot.__file__).read_bytes()
COOKIE = "ab" * 32


class Boot:
    """The boot script in a process of its own, spoken to as the SSH transport does."""

    def __init__(self, env, *, start: bool = False, name: str = "n1", run_env: dict | None = None) -> None:
        bundle = agent_bundle()
        self.code_id = bundle.code_id
        environ = {**os.environ, "XDG_RUNTIME_DIR": str(env.run), "XDG_CACHE_HOME": str(env.cache),
                   **(run_env or {})}
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", boot.STUB], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ,
                                     cwd=str(env.cwd))
        params = {"code_id": self.code_id, "name": name, "start": start,
                  "agent_args": ["--name", name, "--slots", "1", "--code-id", self.code_id]}
        self.send(b"%d\n" % len(BOOT_SOURCE) + BOOT_SOURCE + json.dumps(params).encode() + b"\n")

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError("the boot script ended without an answer (status %s): %s"
                                 % (self.proc.returncode, self.proc.stderr.read().decode()[-2000:]))
        return json.loads(line)

    def ship(self, blob: bytes) -> dict:
        self.send(b"%d\n" % len(blob) + blob)
        return self.reply()

    def go_on(self, code: bytes = b"0\n") -> None:
        """No code (or ``code``), then the key: what comes before the run directory."""
        self.send(code + COOKIE.encode() + b"\n")

    def close(self) -> int:
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            pipe.close()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def start_boot_script(env):
    """Starts the boot script in a process of its own, as SSH does (all ended after): for boot tests."""
    started: list[Boot] = []

    def make(**kwargs) -> Boot:
        started.append(Boot(env, **kwargs))
        return started[-1]

    yield make
    for b in started:
        b.close()


def code_entries(code_root: Path) -> list[str]:
    """What ``code/`` holds: code directories, staging and set-aside ones (not its lock)."""
    return sorted(p.name for p in code_root.iterdir() if p.name != ".lock")


def install_by_boot(start_boot_script) -> Path:
    """Install the agent code into the test's cache the way an SSH bootstrap does."""
    b = start_boot_script()
    first = b.reply()
    assert first["need_code"] is True, first
    assert b.ship(bundle_zip(agent_bundle())) == {"installed": True}
    b.go_on(b"")
    assert b.reply() == {"node": "absent"}
    return Path(os.environ["XDG_CACHE_HOME"]) / "clusterctl" / "code" / b.code_id


# -- the run directory ------------------------------------------------------------------

_traps: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_traps():
    """Closes the sockets a test left listening as traps (``_traps``)."""
    yield
    while _traps:
        _traps.pop().close()


def hostile_run_dir(env, *, owner: int | None = None, mode: int = 0o700) -> socket.socket:
    """The run directory made by someone else (``owner``) or left open (``mode``), with a
    socket listening where node n1's would be: whoever connects there is caught."""
    env.run_dir.mkdir(mode=0o700)
    trap = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    trap.bind(str(env.run_dir / "n1.sock"))
    _traps.append(trap)
    trap.listen(8)
    trap.settimeout(0.3)
    if owner is not None:
        os.chown(env.run_dir / "n1.sock", owner, owner)
        os.chown(env.run_dir, owner, owner)
    os.chmod(env.run_dir, mode)
    return trap


def assert_not_reached(trap: socket.socket) -> None:
    try:
        conn, _ = trap.accept()
    except socket.timeout:
        return
    finally:
        trap.close()
    conn.close()
    raise AssertionError("something connected to the socket in the untrusted run directory")


def local_open(env) -> socket.socket | None:
    spec = HostSpec(name="n1", target="local", slots=1, source="hosts:1")
    settings = NodeSettings(cookie=bytes.fromhex(COOKIE), bundle=agent_bundle())
    return LocalTransport(spec, settings).open(start=True, deadline=time.monotonic() + 20)


@needs_root
def test_local_transport_refuses_a_run_dir_owned_by_another_user(env):
    trap = hostile_run_dir(env, owner=NOBODY)
    with pytest.raises(errors.NodeStartError) as info:
        sock = local_open(env)
        sock.close()
    assert str(env.run_dir) in str(info.value) and f"uid {NOBODY}" in str(info.value)
    assert_not_reached(trap)


def test_local_transport_refuses_a_run_dir_others_may_write(env):
    trap = hostile_run_dir(env, mode=0o777)
    with pytest.raises(errors.NodeStartError) as info:
        sock = local_open(env)
        sock.close()
    assert str(env.run_dir) in str(info.value) and "group or others" in str(info.value)
    assert_not_reached(trap)


@needs_root
def test_boot_refuses_a_run_dir_owned_by_another_user(env, start_boot_script):
    trap = hostile_run_dir(env, owner=NOBODY)
    b = start_boot_script()
    b.reply()
    b.go_on()  # with whatever code is cached: the run directory comes next
    answer = b.reply()
    assert "error" in answer, answer
    assert str(env.run_dir) in answer["error"] and f"uid {NOBODY}" in answer["error"]
    assert_not_reached(trap)


def test_boot_refuses_a_run_dir_others_may_write(env, start_boot_script):
    trap = hostile_run_dir(env, mode=0o770)
    b = start_boot_script()
    b.reply()
    b.go_on()
    answer = b.reply()
    assert "error" in answer, answer
    assert str(env.run_dir) in answer["error"] and "group or others" in answer["error"]
    assert_not_reached(trap)


@needs_root
def test_boot_refuses_a_socket_owned_by_another_user(env, start_boot_script):
    trap = hostile_run_dir(env)
    os.chown(env.run_dir / "n1.sock", NOBODY, NOBODY)
    b = start_boot_script()
    b.reply()
    b.go_on()
    answer = b.reply()
    assert "error" in answer and f"uid {NOBODY}" in answer["error"], answer
    assert_not_reached(trap)


# -- the code cache ---------------------------------------------------------------------

def test_boot_repairs_a_corrupted_code_dir(env, start_boot_script):
    code_dir = install_by_boot(start_boot_script)
    wire = code_dir / "clusterctl_node" / "wire.py"
    good = wire.read_bytes()
    wire.write_bytes(good[: len(good) // 2])  # daemon.py is still there
    (code_dir / "cloudpickle" / "cloudpickle.py").unlink()
    b = start_boot_script()
    assert b.reply()["need_code"] is True  # the broken directory does not count as present
    assert b.ship(bundle_zip(agent_bundle())) == {"installed": True}
    b.go_on(b"")
    assert b.reply() == {"node": "absent"}
    assert wire.read_bytes() == good
    assert (code_dir / "cloudpickle" / "cloudpickle.py").is_file()
    assert start_boot_script().reply()["need_code"] is False  # and the repaired one does
    assert code_entries(code_dir.parent) == [code_dir.name]  # nothing left aside


def test_code_being_compiled_by_a_starting_node_is_still_whole(env):
    """A node's Python writes its bytecode beside the code (a file under a temporary name,
    renamed into place): a check at that moment (another node starting) must not take the
    code for damaged, set it aside and pull it from under the starting node."""
    bundle = agent_bundle()
    code_dir = str(bundle.install(boot.cache_root()))
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    checks = damaged = 0
    for _ in range(15):
        for cached in Path(code_dir).rglob("__pycache__/*"):
            cached.unlink()
        importer = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, "
                                     f"{code_dir!r}); import clusterctl_node.daemon.node"],
                                    env=environment)
        while importer.poll() is None:
            checks += 1
            damaged += not boot.code_ok(code_dir, bundle.code_id)
        assert importer.returncode == 0
    assert checks > 100 and damaged == 0, (checks, damaged)


def test_a_start_repairs_a_corrupted_local_code_dir(env):
    specs = [HostSpec(name="n1", target="local", slots=1)]
    with Cluster(specs) as c:
        assert [i.status for i in c.world()] == ["pong"]
        c.down()
    code_dir = env.cache / "clusterctl" / "code" / agent_bundle().code_id
    (code_dir / "clusterctl_node" / "wire.py").write_text("raise ImportError('corrupt')\n")
    with Cluster(specs) as c:
        info, = c.world()
        assert info.status == "pong", info.reason
        c.down()


def _zip_with_a_bad_member() -> bytes:
    """The bundle's zip with one byte of its last member's data changed (its CRC fails)."""
    blob = bytearray(bundle_zip(agent_bundle()))
    with zipfile.ZipFile(io.BytesIO(bytes(blob))) as archive:
        last = archive.infolist()[-1]
    header = 30 + len(last.filename.encode()) + int.from_bytes(blob[last.header_offset + 28:last.header_offset + 30], "little")
    blob[last.header_offset + header + last.compress_size // 2] ^= 0xFF
    return bytes(blob)


def test_a_failed_install_leaves_no_staging_dir(env, start_boot_script):
    b = start_boot_script()
    assert b.reply()["need_code"] is True
    answer = b.ship(_zip_with_a_bad_member())
    assert "error" in answer and "code bundle" in answer["error"], answer
    code_root = env.cache / "clusterctl" / "code"
    assert code_entries(code_root) == []
    assert b.close() == 1


def test_old_staging_dirs_are_cleaned_up_by_the_next_install(env, start_boot_script):
    code_root = env.cache / "clusterctl" / "code"
    code_root.mkdir(parents=True, mode=0o700)
    old = code_root / ".incoming-otherhost-123-0badc0de"
    (old / "clusterctl_node").mkdir(parents=True)
    hours_ago = time.time() - 3 * 3600
    os.utime(old, (hours_ago, hours_ago))
    fresh = code_root / ".incoming-otherhost-124-0badc0df"  # maybe still being written
    fresh.mkdir()
    code_dir = install_by_boot(start_boot_script)
    assert code_entries(code_root) == sorted([code_dir.name, fresh.name])


@pytest.mark.parametrize("where", ["clusterctl", "clusterctl/code", "clusterctl/code/ID",
                                   "clusterctl/code/ID/clusterctl_node"])
def test_boot_refuses_a_cache_others_may_write(env, start_boot_script, where):
    code_dir = install_by_boot(start_boot_script)
    place = env.cache / where.replace("ID", code_dir.name)
    os.chmod(place, 0o777)
    b = start_boot_script()
    answer = b.reply()
    assert "error" in answer, answer
    assert str(place) in answer["error"] and "group or others" in answer["error"]


@needs_root
def test_boot_refuses_a_code_dir_owned_by_another_user(env, start_boot_script):
    code_dir = install_by_boot(start_boot_script)
    os.chown(code_dir, NOBODY, NOBODY)
    answer = start_boot_script().reply()
    assert "error" in answer and str(code_dir) in answer["error"] and f"uid {NOBODY}" in answer["error"]


def test_local_start_refuses_a_cache_others_may_write(env):
    cache = env.cache / "clusterctl"
    cache.mkdir(mode=0o700)
    os.chmod(cache, 0o777)
    with pytest.raises(errors.NodeStartError) as info:
        local_open(env)
    assert str(cache) in str(info.value) and "group or others" in str(info.value)
    assert env.node_processes() == []


def test_installed_code_is_private_whatever_the_umask(env, start_boot_script):
    old = os.umask(0o002)  # a common default: group-writable files
    try:
        code_dir = install_by_boot(start_boot_script)
        local = agent_bundle().install(env.root / "other")
    finally:
        os.umask(old)
    for tree in (code_dir, local):
        for path in [tree, *tree.rglob("*")]:
            assert path.stat().st_mode & 0o022 == 0, path


def test_concurrent_installs_over_a_damaged_dir_leave_one_good_copy(env):
    import threading

    bundle = agent_bundle()
    code_dir = bundle.install(env.cache / "clusterctl")
    (code_dir / "clusterctl_node" / "daemon.py").write_text("broken\n")
    barrier = threading.Barrier(4, timeout=20)
    failures = []

    def install():
        barrier.wait()
        try:
            bundle.install(env.cache / "clusterctl")
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=install) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    assert boot.code_ok(str(code_dir), bundle.code_id)
    assert code_entries(code_dir.parent) == [code_dir.name]
