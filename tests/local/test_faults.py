"""Faults against real node processes: bad clients, crashing workers, dying controllers
and nodes, races between starters. Each fault must be contained: the connection or
task concerned ends with a clear reason, and the node keeps serving everyone else."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import cloudpickle
import pytest

from clusterctl import Cluster, errors
from clusterctl.transport.bundle import Bundle, agent_bundle
from clusterctl.config.hosts import HostSpec
from clusterctl.node import boot, wire

from helpers import wait_for
from rawclient import handshake, raw_socket, until_closed

pytestmark = pytest.mark.local_only  # faults of local nodes, their processes and sockets

# the functions below run on nodes, which cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- processes, seen through /proc -------------------------------------------------------

def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state[0] not in "ZX"


def children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (a node's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            state = proc_state(int(entry))
            if state and state[1] == pid and state[0] not in "ZX":
                found.add(int(entry))
    return found


def wait_gone(pids, timeout: float = 10) -> None:
    """Until every process in ``pids`` has exited (a killed node's workers follow it)."""
    pids = set(pids)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=timeout,
             message=f"processes {sorted(pids)} to exit")


def node_roots(env) -> list[int]:
    """The node processes of the test (not their forked workers)."""
    procs = {pid for pid, _ in env.node_processes()}
    return [pid for pid in procs if proc_state(pid) and proc_state(pid)[1] not in procs]


# -- a hand-made client ---------------------------------------------------------------------

def assert_serving(cluster: Cluster, node: str = "n1") -> None:
    assert cluster.rpc(node, "operator.add", 20, 22) == 42


@pytest.fixture
def started_cluster(cluster):
    """The ``cluster`` fixture's local Cluster (local_only) with n1, n2 started: for fault tests."""
    cluster.world()
    return cluster


# -- bad clients ----------------------------------------------------------------------------

def test_garbage_bytes_close_that_connection_only(started_cluster, env):
    with raw_socket(env) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        rest = until_closed(sock)
    assert rest.startswith(wire.MAGIC)  # only the greeting came back
    assert "garbage on the socket: not a clusterctl frame" in env.node_log("n1")
    assert_serving(started_cluster)


def devnulls(pid: int) -> list[str]:
    """The descriptors of a process open on /dev/null."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == os.devnull:
                found.append(fd)
        except OSError:
            pass
    return sorted(found)


def test_passed_descriptors_are_a_channel_or_nothing(started_cluster, env):
    """A splice request (what the SSH boot script sends) with no descriptors is refused;
    one with more than a channel's two closes that connection; the node stays up and
    keeps none of them."""
    before = devnulls(env.node_pid("n1"))  # (its stdin is one)
    with raw_socket(env) as sock:
        sock.sendall(wire.encode({"op": "splice"}))
        hello, _ = wire.read_message(sock, max_payload=0)
        refused, _ = wire.read_message(sock, max_payload=0)
        assert refused["op"] == "refused" and "splice" in refused["reason"]
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    try:
        with raw_socket(env) as sock:
            socket.send_fds(sock, [wire.encode({"op": "splice"})], extra)
            until_closed(sock)
    finally:
        for fd in extra:
            os.close(fd)
    assert "more than a channel's two descriptors" in env.node_log("n1")
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(2)]  # two, but not a channel's
    try:
        with raw_socket(env) as sock:
            socket.send_fds(sock, [wire.encode({"op": "splice"})], files)
            hello, _ = wire.read_message(sock, max_payload=0)
            refused, _ = wire.read_message(sock, max_payload=0)
            assert refused["op"] == "refused" and "not a channel" in refused["reason"]
    finally:
        for fd in files:
            os.close(fd)
    wait_for(lambda: devnulls(env.node_pid("n1")) == before, timeout=5,
             message="the node to close the descriptors it was passed")
    assert_serving(started_cluster)


def test_wrong_cookie_is_refused(started_cluster, env):
    with raw_socket(env) as sock:
        answer = handshake(sock, os.urandom(32))
        assert answer["op"] == "refused" and "wrong cookie" in answer["reason"]
        assert until_closed(sock) == b""
    assert "refused: wrong cookie" in env.node_log("n1")
    assert_serving(started_cluster)


def test_wrong_cookie_through_the_api_names_the_fix(started_cluster, local_node_specs):
    with Cluster(local_node_specs, cookie=os.urandom(32)) as stranger:
        with pytest.raises(errors.HandshakeError) as info:
            stranger.rpc("n1", "os.getpid")
    assert "wrong cookie" in str(info.value) and "name=" in info.value.hint
    assert_serving(started_cluster)


def test_oversized_frame_after_auth_is_refused_before_its_body(started_cluster, env):
    with raw_socket(env) as sock:
        assert handshake(sock, started_cluster.settings.cookie)["op"] == "welcome"
        too_big = started_cluster.settings.max_payload + 1
        sock.sendall(wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, 20, too_big))
        t0 = time.monotonic()
        assert until_closed(sock) == b""  # closed with no body sent at all
        assert time.monotonic() - t0 < 5
    assert f"frame payload of {too_big} bytes exceeds the limit" in env.node_log("n1")
    assert_serving(started_cluster)


def test_oversized_head_is_refused(started_cluster, env):
    with raw_socket(env) as sock:
        sock.sendall(wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, wire.MAX_HEAD + 1, 0))
        until_closed(sock)
    assert "control head of" in env.node_log("n1")
    assert_serving(started_cluster)


def test_request_before_the_handshake_is_refused(started_cluster, env):
    with raw_socket(env) as sock:
        wire.read_message(sock, max_payload=0)
        sock.sendall(wire.encode({"op": "ping", "id": 1}))
        answer, _ = wire.read_message(sock, max_payload=0)
        assert answer == {"op": "refused", "reason": "expected the handshake, got 'ping'"}
        assert until_closed(sock) == b""
    assert "refused: expected the handshake" in env.node_log("n1")
    assert_serving(started_cluster)


def test_payload_before_the_handshake_is_never_read(started_cluster, env):
    with raw_socket(env) as sock:
        wire.read_message(sock, max_payload=0)
        sock.sendall(wire.encode({"op": "call", "id": 1}, b"\x80\x05not even read"))
        until_closed(sock)
    assert "exceeds the limit of 0 bytes" in env.node_log("n1")
    assert_serving(started_cluster)


def test_client_that_vanishes_mid_frame(started_cluster, env):
    with raw_socket(env) as sock:
        assert handshake(sock, started_cluster.settings.cookie)["op"] == "welcome"
        sock.sendall(wire.encode({"op": "ping", "id": 1})[:7])
    assert_serving(started_cluster)
    assert started_cluster.world()[0].ok


def test_silent_client_is_closed_after_the_handshake_timeout(env, local_node_specs, monkeypatch):
    monkeypatch.setenv("CLUSTERCTL_HANDSHAKE_TIMEOUT", "0.5")
    with Cluster(local_node_specs[:1]) as cluster:
        try:
            cluster.world()
            with raw_socket(env) as sock:
                t0 = time.monotonic()
                until_closed(sock)
                assert time.monotonic() - t0 < 5
            assert "no handshake within 0.5 s" in env.node_log("n1")
            assert_serving(cluster)
        finally:
            cluster.down()


def test_arguments_over_the_frame_limit_fail_before_sending(env, local_node_specs):
    with Cluster(local_node_specs[:1]) as cluster:
        cluster.settings = dataclasses.replace(cluster.settings, max_payload=10_000)
        try:
            assert_serving(cluster)
            with pytest.raises(errors.SerializationError, match="limit of 10000 bytes"):
                cluster.rpc("n1", "builtins.len", b"x" * 20_000)
            assert_serving(cluster)
        finally:
            cluster.down()


def test_result_over_the_frame_limit_is_an_error_not_a_dead_connection(env, local_node_specs):
    with Cluster(local_node_specs[:1]) as cluster:
        cluster.settings = dataclasses.replace(cluster.settings, max_payload=10_000)
        try:
            with pytest.raises(errors.RemoteError, match="limit of 10000 bytes"):
                cluster.rpc("n1", "os.urandom", 20_000)
            assert_serving(cluster)
            assert "garbage" not in env.node_log("n1")
        finally:
            cluster.down()


# -- crashing workers ------------------------------------------------------------------------

def _segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def _sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def _exit3():
    os._exit(3)


def _abort():
    os.abort()


@pytest.mark.parametrize("crash, how", [(_segfault, "killed by SIGSEGV"),
                                        (_sigkill, "killed by SIGKILL"),
                                        (_exit3, "exited with status 3"),
                                        (_abort, "killed by SIGABRT")])
def test_worker_death_fails_the_task_and_the_worker_is_replaced(started_cluster, env, crash, how):
    node = env.node_pid("n1")
    before = children(node)
    with pytest.raises(errors.WorkerCrashed) as info:
        started_cluster.rpc("n1", crash)
    assert how in str(info.value) and info.value.node == "n1"
    after = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(children(node)))
    assert len(before - after) == 1  # exactly the crashed worker was replaced
    assert env.node_pid("n1") == node
    assert how in env.node_log("n1")
    assert_serving(started_cluster)


def test_task_queued_behind_a_crash_still_runs(started_cluster):
    def slow_crash():
        time.sleep(0.3)
        os._exit(1)

    results = {}

    def call(key, fn, *args):
        try:
            results[key] = started_cluster.rpc("n1", fn, *args)
        except errors.ClusterError as exc:
            results[key] = exc

    threads = [threading.Thread(target=call, args=(i, slow_crash), daemon=True) for i in range(2)]
    threads += [threading.Thread(target=call, args=(i, "operator.add", i, i), daemon=True)
                for i in range(2, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(results[i], errors.WorkerCrashed) for i in range(2))
    assert [results[i] for i in range(2, 6)] == [4, 6, 8, 10]


# -- controllers that go away -----------------------------------------------------------------

CONTROLLER = textwrap.dedent("""
    import os, sys, time
    from clusterctl import Cluster
    from clusterctl.config.hosts import HostSpec

    marker = sys.argv[1]

    def task():
        with open(marker + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(60)

    spec = HostSpec(name="n1", target="local", slots=2)
    with Cluster([spec], heartbeat_interval=0.2, heartbeat_timeout=1.0) as cluster:
        cluster.rpc("n1", task)
""")


def _run_controller(env, marker) -> subprocess.Popen:
    script = env.root / "controller.py"
    script.write_text(CONTROLLER)
    return subprocess.Popen([sys.executable, str(script), str(marker)], cwd=env.cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_controller_gone_mid_rpc_cancels_its_task(started_cluster, env, how):
    """A controller that is SIGKILLed (its socket closes) or frozen (its heartbeats stop):
    the node kills the worker running its task within the heartbeat bound."""
    node = env.node_pid("n1")
    marker = env.root / "task.pid"
    proc = _run_controller(env, marker)
    try:
        wait_for(marker.exists, timeout=20, message="the task to start")
        worker = int(marker.read_text())
        assert worker in children(node)
        t0 = time.monotonic()
        if how == "killed":
            proc.kill()
        else:
            proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: not alive(worker), timeout=10, message="the node to kill the task")
        assert time.monotonic() - t0 < (1.0 + 2 * 0.5 + 1.5 if how == "frozen" else 2.0)
        wait_for(lambda: len(children(node)) == 2, message="a new worker")
        assert worker not in children(node)
        if how == "frozen":
            assert "no heartbeat" in env.node_log("n1")
        assert env.node_pid("n1") == node
        assert_serving(started_cluster)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stderr.close()


# -- nodes that go away ----------------------------------------------------------------------

def test_node_killed_between_commands_is_started_afresh(env, local_node_specs):
    with Cluster(local_node_specs[:1]) as first:
        old = first.world()[0].pid
    family = children(old) | {old}
    os.kill(old, signal.SIGKILL)
    wait_gone(family)
    with Cluster(local_node_specs[:1]) as second:
        try:
            new = second.world()[0].pid
            assert new != old
            assert_serving(second)
        finally:
            second.down()
    assert env.node_processes() == []


def test_node_killed_while_connected_is_restarted_on_next_use(env, local_node_specs):
    with Cluster(local_node_specs[:1], heartbeat_interval=0.2) as cluster:
        try:
            old = cluster.world()[0].pid
            conn = cluster.connect("n1")
            family = children(old) | {old}
            os.kill(old, signal.SIGKILL)
            wait_gone(family)
            wait_for(lambda: conn.lost is not None, timeout=5, message="the loss to be seen")
            assert isinstance(conn.lost, errors.NodeLost)
            assert_serving(cluster)
            assert cluster.connect("n1").hello["pid"] != old
        finally:
            cluster.down()


def marks_then_sleeps(marker):
    """A task that writes its worker's pid to ``marker`` (atomically), then sleeps 30 s."""
    def task():
        with open(str(marker) + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(str(marker) + ".tmp", marker)
        time.sleep(30)

    return task


def test_node_killed_during_rpc_reports_outcome_unknown_quickly(started_cluster, env):
    node = env.node_pid("n1")
    marker = env.root / "task.pid"

    task = marks_then_sleeps(marker)
    outcome = {}

    def call():
        t0 = time.monotonic()
        try:
            started_cluster.rpc("n1", task)
        except errors.ClusterError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    family = children(node) | {node}
    try:
        wait_for(marker.exists, message="the task to start")
        t0 = time.monotonic()
        os.kill(node, signal.SIGKILL)
    finally:
        thread.join(20)
        wait_gone(family)
    assert isinstance(outcome.get("error"), errors.NodeLost)
    assert "outcome of the call is unknown" in str(outcome["error"])
    assert time.monotonic() - t0 < 3
    assert_serving(started_cluster, "n2")
    assert_serving(started_cluster, "n1")  # a new node


def test_a_node_we_keep_writing_to_but_that_has_nothing_to_say_is_not_lost(env, local_node_specs):
    """Frames that want no answer (cancels here; the hub's broadcasts on its watches) go
    to a node more often than the heartbeat interval: the node is still asked for a
    pong when it was not heard from, so it is not taken for lost. (Before, a write made
    the ping look unneeded, nothing came back, and at 100 hosts the hub's watches of a
    world at rest were lost and reconnected over and over.)"""
    try:
        with Cluster(local_node_specs[:1], heartbeat_interval=0.2, heartbeat_timeout=1.0) as cluster:
            cluster.world()
            conn = cluster.connect("n1")
            end = time.monotonic() + 3.0
            while time.monotonic() < end and conn.lost is None:
                conn.send({"op": "cancel", "id": 999_999})  # (a request that never was: no answer)
                time.sleep(0.05)
            assert conn.lost is None, conn.lost
            assert cluster.rpc("n1", "operator.add", 1, 2) == 3
    finally:
        with Cluster(local_node_specs[:1]) as closer:
            closer.down()


@pytest.mark.parametrize("busy", [True, False])
def test_frozen_node_is_lost_by_heartbeat(env, local_node_specs, busy):
    """A node that stops answering (SIGSTOP: a frozen host, a cut network) is declared
    lost within the heartbeat timeout, with or without a call in flight."""
    marker = env.root / "task.pid"

    task = marks_then_sleeps(marker)
    cluster = Cluster(local_node_specs[:1], heartbeat_interval=0.2, heartbeat_timeout=1.0)
    node = cluster.world()[0].pid
    conn = cluster.connect("n1")
    outcome = {}

    def call():
        try:
            cluster.rpc("n1", task)
        except errors.ClusterError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    try:
        if busy:
            thread.start()
            wait_for(marker.exists, message="the task to start")
        os.kill(node, signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: conn.lost is not None, timeout=5, message="the node to be lost")
        assert 0.5 < time.monotonic() - t0 < 2.5  # heartbeat_timeout, give or take a tick
        assert "no heartbeat" in str(conn.lost)
        if busy:
            thread.join(5)
            assert isinstance(outcome["error"], errors.NodeLost)
            assert "outcome of the call is unknown" in str(outcome["error"])
    finally:
        os.kill(node, signal.SIGCONT)
        thread.join(5) if thread.is_alive() else None
    # thawed, the node finds our connection gone, cancels the task, and serves again
    if busy:
        wait_for(lambda: not alive(int(marker.read_text())), message="the task to be cancelled")
    try:
        assert_serving(cluster)
        assert cluster.connect("n1").hello["pid"] == node
    finally:
        cluster.down()
        cluster.close()


def test_a_thawed_node_does_not_blame_its_clients_for_its_own_freeze(env, local_node_specs):
    """A node frozen (SIGSTOP: a paused VM, a starved host) for longer than a client's
    heartbeat finds that client's pings waiting when it runs again: the node was the
    silent one, and the connection stays. The freeze lands while the node is busy with
    another client's stream, as on a loaded host, so no read comes between its waking and
    its judging who was silent."""
    cluster = Cluster(local_node_specs[:1])
    node = cluster.world()[0].pid
    cookie = cluster.settings.cookie
    stop = threading.Event()
    quiet, flood = raw_socket(env), raw_socket(env)

    def ping_every(sock, pause):
        try:
            while not stop.is_set():
                sock.sendall(wire.encode({"op": "ping", "id": 1}))
                stop.wait(pause)
        except OSError:
            pass

    def drain(sock):
        try:
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass

    try:
        assert handshake(quiet, cookie, heartbeat=1.0)["op"] == "welcome"
        assert handshake(flood, cookie)["op"] == "welcome"
        flood.settimeout(None)
        threads = [threading.Thread(target=ping_every, args=(quiet, 0.2), daemon=True),
                   threading.Thread(target=ping_every, args=(flood, 0), daemon=True),
                   threading.Thread(target=drain, args=(flood,), daemon=True)]
        for thread in threads:
            thread.start()
        pong, _ = wire.read_message(quiet)
        assert pong["op"] == "pong"
        time.sleep(0.3)
        os.kill(node, signal.SIGSTOP)
        try:
            time.sleep(2.0)  # twice the quiet client's heartbeat
        finally:
            os.kill(node, signal.SIGCONT)
        time.sleep(1.0)  # a few housekeeping rounds of the thawed node
        stop.set()
        quiet.sendall(wire.encode({"op": "ping", "id": 99}))
        while pong.get("id") != 99:  # (the pongs to the pings of the freeze come first)
            pong, _ = wire.read_message(quiet)
        assert "no heartbeat" not in env.node_log("n1")
    finally:
        stop.set()
        os.kill(node, signal.SIGCONT)
        quiet.close()
        flood.close()
        cluster.down()
        cluster.close()


def test_idle_node_exits_by_itself(env):
    spec = HostSpec(name="idler", target="local", slots=1, idle=1.0)
    with Cluster([spec]) as cluster:
        pid = cluster.world()[0].pid
    wait_for(lambda: not alive(pid), timeout=10, message="the idle node to exit")
    wait_for(lambda: env.node_processes() == [], message="its workers to exit")
    assert not (env.run_dir / "idler.sock").exists()
    assert not (env.run_dir / "idler.pid").exists()
    assert "idle for 1 s" in env.node_log("idler")


def test_a_watching_connection_does_not_keep_a_node_from_idling_out(env):
    """The hub keeps a connection to each node to watch it (heartbeat, ping): a node
    that nobody else uses still exits when idle; a command's connection keeps it."""
    from clusterctl.session.opening import Heartbeat, open_node
    from clusterctl.transport.local import LocalTransport

    spec = HostSpec(name="watched", target="local", slots=1, idle=1.0)
    cluster, watch = Cluster([spec]), None
    try:
        pid = cluster.world()[0].pid
        settings = cluster.settings
        watch = open_node(spec, LocalTransport(spec, settings), settings, start=False,
                          deadline=time.monotonic() + 10, heartbeat=Heartbeat(0.5, 5.0),
                          stop_timeout=5.0, watch=True)
        assert watch.hello["pid"] == pid
        time.sleep(1.5)
        assert alive(pid)  # the command's own connection keeps it
        cluster.close()
        wait_for(lambda: not alive(pid), timeout=10, message="the watched, idle node to exit")
        assert "idle for 1 s" in env.node_log("watched")
        wait_for(lambda: watch.lost is not None, message="the watch to see it go")
    finally:
        cluster.close()
        if watch is not None:
            watch.close()


def test_a_busy_node_does_not_idle_out(env):
    spec = HostSpec(name="busy", target="local", slots=1, idle=0.5)
    with Cluster([spec]) as cluster:
        try:
            pid = cluster.world()[0].pid
            assert cluster.rpc("busy", "time.sleep", 1.5) is None
            assert cluster.world()[0].pid == pid
        finally:
            cluster.down()


# -- versions, starters and cookies ---------------------------------------------------------

def test_node_running_other_code_is_replaced_at_connect(env, local_node_specs):
    current = agent_bundle()
    old_files = current.files + (("clusterctl_node/older.py", b"# another version\n"),)
    old_bundle = Bundle(old_files, boot.code_digest(old_files))  # cached code must match its id
    with Cluster(local_node_specs[:1]) as old:
        old.settings = dataclasses.replace(old.settings, bundle=old_bundle)
        old_pid = old.world()[0].pid
        assert old.connect("n1").hello["code"] == old_bundle.code_id
    with Cluster(local_node_specs[:1]) as new:
        try:
            info = new.world()[0]
            assert info.ok and info.pid != old_pid
            assert new.connect("n1").hello["code"] == current.code_id
            assert not alive(old_pid)
            assert_serving(new)
        finally:
            new.down()
    assert env.node_processes() == []


def test_concurrent_starters_make_one_node(env, local_node_specs):
    from clusterctl.config.cookie import load_or_create_cookie

    load_or_create_cookie()  # the race under test is the node's start, not the cookie's
    barrier = threading.Barrier(3, timeout=20)
    pids = []

    def start():
        with Cluster(local_node_specs[:1]) as cluster:
            barrier.wait()
            pids.append(cluster.world()[0].pid)

    threads = [threading.Thread(target=start, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert len(pids) == 3 and len(set(pids)) == 1
        assert node_roots(env) == pids[:1]
    finally:
        with Cluster(local_node_specs[:1]) as closer:
            closer.down()


def test_cookie_is_created_private(env, local_node_specs):
    with Cluster(local_node_specs[:1]):
        pass
    path = env.config / "clusterctl" / "cookie"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert len(bytes.fromhex(path.read_text().strip())) >= 16


def test_threads_creating_the_cookie_at_once_agree_on_one(env):
    from clusterctl.config.cookie import load_or_create_cookie

    barrier = threading.Barrier(8, timeout=20)
    found = []

    def create():
        barrier.wait()
        found.append(load_or_create_cookie())

    threads = [threading.Thread(target=create, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(found) == 8 and len(set(found)) == 1
    assert [p.name for p in (env.config / "clusterctl").iterdir()] == ["cookie"]


def test_cookie_readable_by_others_is_refused(env, local_node_specs):
    with Cluster(local_node_specs[:1]):
        pass
    path = env.config / "clusterctl" / "cookie"
    path.chmod(0o644)
    with pytest.raises(errors.ClusterError) as info:
        Cluster(local_node_specs[:1])
    assert "readable by others" in str(info.value)
    assert info.value.hint == f"run: chmod 400 {path}"
    assert env.node_processes() == []


def test_a_local_node_on_another_python_is_refused_and_can_still_be_stopped(env, tmp_path):
    """A node whose Python differs in major.minor cannot take our pickled functions: world
    says so and names python=; ``down`` still stops it (stopping pickles nothing)."""
    shim = tmp_path / "py39"
    # runs `python -c CODE ARGS...` as a Python that says it is 3.9.18
    shim.write_text("#!/bin/sh\nshift\ncode=\"$1\"\nshift\nexec %s -c 'import sys; "
                    "sys.version_info = (3, 9, 18, \"final\", 0); code = sys.argv[1]; "
                    "sys.argv = [\"-c\"] + sys.argv[2:]; exec(code)' \"$code\" \"$@\"\n" % sys.executable)
    shim.chmod(0o755)
    spec = HostSpec(name="n1", target="local", slots=1, python=str(shim), source="hosts:1")
    with Cluster([spec]) as cluster:
        info, = cluster.world()
        assert info.status == "pang"
        assert "3.9.18" in info.reason and "python=" in info.reason and "hosts:1" in info.reason
        assert env.node_processes()  # the node runs: only its Python was refused
        assert cluster.down() == {"n1": "stopped"}
    wait_for(lambda: not env.node_processes(), message="the node to exit")
