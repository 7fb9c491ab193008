"""Cancelling and killing on real nodes: cancelled work never runs, what user code
started goes with its worker, and killing workers never holds up the node's loop."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time

import cloudpickle
import pytest

from clusterctl import Cluster, errors
from clusterctl.api.calls import function_message
from clusterctl.api.pickling import dumps
from clusterctl.config.hosts import HostSpec
from clusterctl.node import wire
from clusterctl.node.workers.channel import CHANNEL
from clusterctl.api.pmap import PMap

from helpers import end_process, interruptible_cli, wait_for
from test_faults import alive, children

# the functions below run on nodes, which cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def make_n1_cluster(env):
    """Makes Clusters of one local node n1, each its own connection to it: for tests across connections."""
    # all closed and the node brought down after the test
    made: list[Cluster] = []
    specs: list[HostSpec] = []

    def make(slots: int = 1, **options) -> Cluster:
        if not specs:
            specs.append(HostSpec(name="n1", target="local", slots=slots))
        c = Cluster(specs, heartbeat_timeout=10.0, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    if specs:
        with Cluster(specs) as closer:
            closer.down()


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.rename(path + ".tmp", path)


def _hold_the_slot(started: str, seconds: float) -> None:
    _write_atomically(started, str(os.getpid()))
    time.sleep(seconds)


def _start_holder(cluster: Cluster, env, seconds: float):
    """A thread whose rpc keeps the node's one slot busy for ``seconds``, once started."""
    started = env.root / "holder"
    outcome: dict = {}

    def hold() -> None:
        try:
            outcome["result"] = cluster.rpc("n1", _hold_the_slot, str(started), seconds)
        except errors.ClusterError as exc:
            outcome["result"] = exc

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    wait_for(started.exists, timeout=20, message="the slot to be taken")
    return thread, outcome


def _request(cluster: Cluster, fn, *args):
    """Send one call without waiting: (connection, request head, pending reply)."""
    head, by_value = function_message(fn)
    conn = cluster.connect("n1")
    pending = conn.request(head, dumps((by_value, args, {}), "call"))
    return conn, head, pending


# -- cancelled work never runs ---------------------------------------------------------------

@pytest.mark.parametrize("how", ["timeout", "cancel", "disconnect"])
def test_a_task_handed_ahead_to_a_busy_worker_and_cancelled_never_runs(make_n1_cluster, env, how):
    """One slot, busy for a second; a second connection's task is handed ahead to that
    worker, then cancelled (an rpc timeout, a cancel, or its connection closing). It must
    never run, not even once the worker is free again."""
    a, b = make_n1_cluster(slots=1), make_n1_cluster()
    marker = env.root / "ran"
    holder, outcome = _start_holder(a, env, 1.0)
    if how == "timeout":
        with pytest.raises(errors.CallTimeout):
            b.rpc("n1", os.mkdir, str(marker), timeout=0.3)
    elif how == "cancel":
        conn, head, pending = _request(b, os.mkdir, str(marker))
        time.sleep(0.2)  # (it reached the node, which handed it ahead)
        conn.cancel(head["id"])
        assert pending.wait(10)
        assert pending.head["ok"] is False and pending.head["error"]["kind"] == "cancelled"
    else:
        _request(b, os.mkdir, str(marker))
        time.sleep(0.2)
        b.close()
    holder.join(20)
    assert outcome == {"result": None}
    # the worker is free: anything it still had would have run before this answer
    assert a.rpc("n1", "operator.add", 1, 1) == 2
    assert not marker.exists()


def test_tasks_queued_behind_a_dropped_one_run_in_order(make_n1_cluster, env):
    """The task handed ahead is dropped; the ones queued behind it then take its place and
    each runs once, in order, on the same (never killed) worker."""
    a, b = make_n1_cluster(slots=1), make_n1_cluster()
    holder, _ = _start_holder(a, env, 0.8)
    worker = int((env.root / "holder").read_text())
    conn, head, pending = _request(b, os.mkdir, str(env.root / "ran"))  # handed ahead
    time.sleep(0.2)
    results = {}

    def call(i):
        results[i] = a.rpc("n1", "operator.mul", i, 10)

    queued = []
    for i in (1, 2, 3):
        queued.append(threading.Thread(target=call, args=(i,), daemon=True))
        queued[-1].start()
        time.sleep(0.05)
    conn.cancel(head["id"])
    assert pending.wait(10) and pending.head["error"]["kind"] == "cancelled"
    for t in [holder, *queued]:
        t.join(20)
    assert results == {1: 10, 2: 20, 3: 30}
    assert not (env.root / "ran").exists()
    assert b.rpc("n1", os.getpid) == worker  # dropping a task killed nothing
    assert b.connect("n1").ping(5)["stats"]["worker_crashes"] == 0


def _mkdir_with_ballast(path: str, ballast: bytes) -> None:
    os.mkdir(path)


@pytest.mark.parametrize("size", [100_000, 4_000_000])
def test_a_cancelled_task_still_on_its_way_to_the_worker_never_runs(make_n1_cluster, env, size):
    """Tasks with a large argument, one handed ahead to the busy worker (with 4 MB, while
    its channel is full: the frame only partly written), the others queued at the node,
    all cancelled: none runs."""
    a, b = make_n1_cluster(slots=1), make_n1_cluster()
    marker = env.root / "ran"
    holder, outcome = _start_holder(a, env, 1.0)
    ballast = os.urandom(size)
    conns = []
    for i in range(4):  # more than the channel holds
        conns.append(_request(b, _mkdir_with_ballast, f"{marker}{i}", ballast))
    time.sleep(0.3)
    for conn, head, pending in conns:
        conn.cancel(head["id"])
    for conn, head, pending in conns:
        assert pending.wait(10) and pending.head["error"]["kind"] == "cancelled"
    holder.join(20)
    assert outcome == {"result": None}
    assert a.rpc("n1", "operator.add", 1, 1) == 2
    assert not [p.name for p in env.root.iterdir() if p.name.startswith("ran")]


def _record_run(x, runs: str):
    with open(os.path.join(runs, "%d-%d-%d" % (x, os.getpid(), time.monotonic_ns())), "w"):
        pass
    time.sleep(0.02)
    return x


def test_a_pmap_twin_that_lost_never_runs(env):
    """n2's only slot is held by another connection, so what pmap sends there waits; pmap
    runs those items again on n1 (speculation), which wins, and cancels the attempts on
    n2. Once n2's slot is free again, none of them runs there."""
    specs = [HostSpec(name="n1", target="local", slots=1),
             HostSpec(name="n2", target="local", slots=1)]
    runs = env.root / "runs"
    runs.mkdir()
    with Cluster(specs) as c, Cluster(specs[1:]) as other:
        try:
            c.world()
            started = env.root / "holder"
            holder = threading.Thread(target=lambda: other.rpc("n2", _hold_the_slot,
                                                               str(started), 3.0), daemon=True)
            holder.start()
            wait_for(started.exists, timeout=20, message="n2's slot to be taken")
            where = str(runs)
            run = PMap(c, lambda x: _record_run(x, where), range(12), chunksize=1)
            assert list(run.values()) == list(range(12))
            assert run.stats.speculated > 0  # (some items did wait on n2)
            holder.join(20)
            assert other.rpc("n2", "operator.add", 1, 1) == 2  # n2's worker is past them all
            ran = sorted(int(name.split("-")[0]) for name in os.listdir(runs))
            assert ran == list(range(12)), "items ran more than once: %s" % ran
        finally:
            c.down()


def _sockets(pid: int) -> int:
    """How many sockets the process has open (a node: one per connection and worker)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def test_ctrl_c_of_multicall_drops_its_task_handed_ahead(env):
    """``clusterctl multicall`` interrupted while its call waits behind a busy worker:
    the call never runs."""
    env.hosts_file("local name=n1 slots=1\n")
    marker = env.root / "ran"
    with Cluster(str(env.cwd / "hosts")) as a:
        try:
            node = a.world()[0].pid
            holder, outcome = _start_holder(a, env, 2.0)
            before = _sockets(node)
            proc = interruptible_cli(["multicall", "os", "mkdir", str(marker)], env.cwd)
            try:
                wait_for(lambda: _sockets(node) > before, timeout=20,
                         message="the command to connect")
                time.sleep(0.3)  # (its call went out right after the handshake)
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=10)
            finally:
                end_process(proc)
            assert proc.returncode == 130 and err.strip() == "interrupted"
            holder.join(20)
            assert outcome == {"result": None}
            assert a.rpc("n1", "operator.add", 1, 1) == 2
            assert not marker.exists()
        finally:
            a.down()


# -- the worker's side, on a socket pair ----------------------------------------------------

def _channel_call(seq: int, task_id: int, mod: str, fun: str, *args) -> bytes:
    frame = wire.encode({"op": "call", "id": task_id, "mod": mod, "fun": fun},
                        pickle.dumps((None, args, {})))
    return CHANNEL.pack(seq, len(frame)) + frame


def _channel_replies(sock, count: int) -> list[tuple[int, dict | None]]:
    """(seq, head or None for an empty frame) of the next ``count`` replies."""
    data, replies = b"", []
    sock.settimeout(10)
    while len(replies) < count:
        while len(data) < CHANNEL.size or \
                len(data) < CHANNEL.size + CHANNEL.unpack_from(data)[1]:
            data += sock.recv(65536)
        seq, length = CHANNEL.unpack_from(data)
        frame, data = data[CHANNEL.size:CHANNEL.size + length], data[CHANNEL.size + length:]
        head = None
        if frame:
            head_len, _ = wire.check_header(frame, 1 << 30)
            head = wire.decode_head(frame[wire.HEADER_SIZE:wire.HEADER_SIZE + head_len])
        replies.append((seq, head))
    return replies


def test_a_worker_skips_a_dropped_task_and_says_so_ahead_of_the_reply_before_it(tmp_path):
    """What the node relies on: the word that a task was dropped comes before the reply of
    the task run before it, and the task itself never runs; the next one still does."""
    from clusterctl.node.workers.channel import DROP_FLAG
    from clusterctl.node.workers.worker import Worker

    ours, theirs = socket.socketpair()
    worker = threading.Thread(target=Worker(theirs, "t").run, daemon=True)
    worker.start()
    marker = tmp_path / "ran"
    try:
        ours.sendall(_channel_call(1, 11, "time", "sleep", 0.3)
                     + _channel_call(2, 12, "os", "mkdir", str(marker)))
        time.sleep(0.1)  # (the worker sleeps, task 2 read ahead)
        ours.sendall(CHANNEL.pack(2 | DROP_FLAG, 0) + _channel_call(3, 13, "operator", "add", 1, 2))
        replies = _channel_replies(ours, 3)
        assert [(seq, head and head["id"]) for seq, head in replies] == \
            [(2 | DROP_FLAG, None), (1, 11), (3, 13)]
        ours.sendall(CHANNEL.pack(3 | DROP_FLAG, 0))  # a task that ran: nothing to drop
        ours.sendall(_channel_call(4, 14, "operator", "add", 2, 2))
        assert [seq for seq, _ in _channel_replies(ours, 1)] == [4]
        assert not marker.exists()
    finally:
        ours.close()
        worker.join(10)
        theirs.close()


# -- what user code started goes with it --------------------------------------------------

def _spawn_sleep(pidfile: str, then: str = "wait") -> None:
    proc = subprocess.Popen(["sleep", "300"])
    _write_atomically(pidfile, str(proc.pid))
    if then == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("how", ["timeout", "disconnect", "crash", "down"])
def test_a_subprocess_of_a_task_goes_with_its_worker(make_n1_cluster, env, how):
    """A task that started ``sleep 300`` and is cancelled (or its worker crashes, or the
    node is stopped) leaves no ``sleep`` behind."""
    c = make_n1_cluster(slots=1)
    pidfile = env.root / "sleep.pid"
    thread = None
    sleeper = None
    try:
        if how == "timeout":
            with pytest.raises(errors.CallTimeout):
                c.rpc("n1", _spawn_sleep, str(pidfile), timeout=1.0)
        elif how == "crash":
            with pytest.raises(errors.WorkerCrashed):
                c.rpc("n1", _spawn_sleep, str(pidfile), "crash")
        else:
            _request(c, _spawn_sleep, str(pidfile))
            wait_for(pidfile.exists, timeout=20, message="the task to start its sleep")
            if how == "disconnect":
                c.close()
            else:
                thread = threading.Thread(target=lambda: c.down(), daemon=True)
                thread.start()
        sleeper = int(pidfile.read_text())
        wait_for(lambda: not alive(sleeper), timeout=5, message="the task's sleep to be killed")
    finally:
        if thread is not None:
            thread.join(20)
        if sleeper is not None and alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)


# -- killing workers never freezes the node ---------------------------------------------------

def test_killing_eight_busy_workers_does_not_hold_up_other_connections(make_n1_cluster, env):
    """Connection A has 8 slots busy and closes: the node kills those 8 workers, while a
    ping on connection B is answered as quickly as ever."""
    a, b = make_n1_cluster(slots=8), make_n1_cluster()
    node = b.world()[0].pid
    probe = b.connect("n1")
    conn = a.connect("n1")
    head, by_value = function_message("time.sleep")
    for _ in range(8):
        conn.request(dict(head), dumps((by_value, (30,), {}), "call"))
    wait_for(lambda: probe.ping(5)["running"] == 8, message="8 busy slots")
    busy = children(node)
    assert len(busy) == 8
    a.close()
    worst = 0.0
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        probe.ping(5)
        worst = max(worst, time.monotonic() - t0)
    assert worst < 0.1, f"a ping took {worst * 1000:.0f} ms while workers were killed"
    # the busy workers are gone and 8 fresh ones serve
    wait_for(lambda: len(children(node)) == 8 and not children(node) & busy,
             message="8 new workers")
    assert b.world()[0].pid == node
    assert b.rpc("n1", "operator.add", 2, 3) == 5
