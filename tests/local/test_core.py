"""The API end to end: world, rpc, multicall, down, errors. A test that takes ``cluster``
runs over local nodes and over SSH to test-bed hosts; one marked ``local_only`` looks at
the local nodes' processes or files."""

from __future__ import annotations

import os
import signal
import time

import pytest

from clusterctl import Cluster, errors
from clusterctl.config.hosts import HostSpec

from helpers import wait_for


@pytest.mark.local_only
def test_world_starts_nodes_and_reports_them(cluster, env):
    infos = cluster.world()
    assert [i.name for i in infos] == ["n1", "n2"]
    assert all(i.status == "pong" for i in infos)
    assert {i.slots for i in infos} == {2}
    assert all(i.rtt and i.rtt > 0 for i in infos)
    assert infos[0].pid != infos[1].pid
    assert len(env.node_processes()) == 6  # two nodes, two workers each


def test_rpc_by_name_and_by_value(cluster):
    assert cluster.rpc("n1", "math.pow", 2, 10) == 1024.0
    assert cluster.rpc("n2", "os.path:join", "a", "b") == "a/b"
    offset = 5
    assert cluster.rpc("n1", lambda x: x + offset, 1) == 6
    assert cluster.rpc("n1", sorted, [3, 1, 2], reverse=True) == [3, 2, 1]


def test_remote_exception_carries_node_type_and_traceback(cluster):
    def fails():
        raise KeyError("missing")

    with pytest.raises(errors.RemoteError) as info:
        cluster.rpc("n2", fails)
    err = info.value
    assert err.node == "n2"
    assert err.remote_type == "KeyError"
    assert "in fails" in err.remote_traceback
    assert isinstance(err.exception, KeyError)
    # the node keeps serving
    assert cluster.rpc("n2", "operator.add", 1, 2) == 3


def test_unknown_module_is_a_clear_error(cluster):
    with pytest.raises(errors.RemoteError) as info:
        cluster.rpc("n1", "no_such_module_xyz.f")
    assert info.value.remote_type == "ModuleNotFoundError"
    assert "importable" in info.value.hint


def assert_same_node(cluster, env, node: int) -> None:
    """The node that saw one worker crash is still the same process, on the same
    connection, a moment later (past its housekeeping), not one started again on demand."""
    conn = cluster.connect("n1")
    time.sleep(1.1)
    assert cluster.rpc("n1", os.getppid) == node  # a new worker of the same node
    pong = conn.ping(5)
    assert conn.lost is None and cluster.connect("n1") is conn
    assert pong["pid"] == node == env.node_pid("n1")
    assert pong["stats"]["worker_crashes"] == 1


@pytest.mark.local_only
def test_worker_segfault_fails_the_task_and_the_node_survives(cluster, env):
    node = cluster.world()[0].pid
    with pytest.raises(errors.WorkerCrashed) as info:
        cluster.rpc("n1", lambda: os.kill(os.getpid(), signal.SIGSEGV))
    assert "SIGSEGV" in str(info.value)
    assert cluster.rpc("n1", "operator.mul", 6, 7) == 42
    assert_same_node(cluster, env, node)


@pytest.mark.local_only
def test_worker_sigkill_mid_task_is_reported_and_replaced(cluster, env):
    node = cluster.world()[0].pid
    with pytest.raises(errors.WorkerCrashed) as info:
        cluster.rpc("n1", lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert "SIGKILL" in str(info.value)
    assert cluster.rpc("n1", "operator.add", 2, 2) == 4
    assert_same_node(cluster, env, node)


def test_multicall_one_failure_does_not_hide_the_others(cluster):
    result = cluster.multicall(os.getpid)
    assert set(result) == {"n1", "n2"} and result.ok
    mixed = cluster.multicall("operator.truediv", 1, 0)
    assert set(mixed.failed) == {"n1", "n2"}
    assert all(e.remote_type == "ZeroDivisionError" for e in mixed.failed.values())


def test_call_timeout_cancels_remote_work(env):
    """One slot: the timed-out call's worker must be killed, or the next call waits."""
    spec = HostSpec(name="n1", target="local", slots=1)
    with Cluster([spec]) as c:
        try:
            worker = c.rpc("n1", os.getpid)
            with pytest.raises(errors.CallTimeout):
                c.rpc("n1", "time.sleep", 30, timeout=0.5)
            wait_for(lambda: not os.path.exists(f"/proc/{worker}"), timeout=5,
                     message="the sleeping worker to be killed")
            assert c.rpc("n1", "operator.add", 1, 1, timeout=5) == 2
        finally:
            c.down()


def test_unknown_node(cluster):
    with pytest.raises(errors.UnknownNodeError) as info:
        cluster.rpc("n9", "os.getpid")
    assert "(2 nodes: n1-n2; " in info.value.one_line()


def test_unpicklable_result_is_a_clear_error(cluster):
    with pytest.raises(errors.RemoteError) as info:
        cluster.rpc("n1", "threading.Lock")
    error = info.value
    assert isinstance(error, errors.UnpicklableResult) and isinstance(error, errors.SerializationError)
    assert error.one_line() == ("n1: the result could not be pickled: the function returned a "
                                "_thread.lock (return plain data instead: numbers, strings, lists, "
                                "dicts, or objects of classes the controller can import)")
    assert error.remote_traceback == "" and str(error) == error.message  # no frames of ours
    assert cluster.rpc("n1", "operator.add", 1, 1) == 2


def test_a_generator_result_says_to_return_a_list(cluster):
    with pytest.raises(errors.UnpicklableResult) as info:
        cluster.rpc("n1", lambda: (i for i in range(3)))
    assert info.value.message == "n1: the result could not be pickled: the function returned a generator"
    assert info.value.hint == "return a list instead: list(...) of it"
    with pytest.raises(errors.UnpicklableResult) as info:  # inside plain data: the inner type named
        cluster.rpc("n1", lambda: {"items": (i for i in range(3))})
    assert info.value.reason == ("the result could not be pickled: the function returned a dict "
                                 "(cannot pickle 'generator' object)")


def test_an_unpicklable_item_result_in_pmap_is_the_same_clear_error(cluster):
    with pytest.raises(errors.RemoteError) as info:
        list(cluster.pmap(lambda x: (i for i in range(x)), [3], retries=0))
    assert "the function returned a generator" in info.value.message
    assert info.value.hint == "return a list instead: list(...) of it"
    assert info.value.remote_traceback == ""


def test_unpicklable_argument(cluster):
    import threading

    with pytest.raises(errors.SerializationError):
        cluster.rpc("n1", "builtins.repr", threading.Lock())


def test_nodes_persist_across_clusters_and_down_stops_them(env, local_node_specs):
    with Cluster(local_node_specs) as c1:
        first = {i.name: i.pid for i in c1.world()}
    assert len(env.node_processes()) == 6
    with Cluster(local_node_specs) as c2:
        second = {i.name: i.pid for i in c2.world()}
        assert first == second
        assert c2.down() == {"n1": "stopped", "n2": "stopped"}
    assert env.node_processes() == []
    with Cluster(local_node_specs) as c3:
        assert c3.down() == {"n1": "not running", "n2": "not running"}


# -- one connection, many callers --------------------------------------------------------

def test_concurrent_rpcs_share_one_connection(cluster):
    import threading

    results: dict[int, object] = {}

    def call(i: int) -> None:
        for j in range(20):
            results[i * 100 + j] = cluster.rpc("n1" if i % 2 else "n2", "operator.mul", i, j)

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i * 100 + j: i * j for i in range(8) for j in range(20)}


def test_a_timeout_while_another_thread_reads(cluster):
    import threading

    outcome = {}

    def slow() -> None:
        outcome["slow"] = cluster.rpc("n1", "time.sleep", 1.0)

    reader = threading.Thread(target=slow, daemon=True)
    reader.start()
    with pytest.raises(errors.CallTimeout):
        cluster.rpc("n1", "time.sleep", 30, timeout=0.3)
    reader.join(10)
    assert outcome == {"slow": None}
    assert cluster.rpc("n1", "operator.add", 1, 1) == 2


def test_rpc_longer_than_the_heartbeat_timeout(env, local_node_specs):
    with Cluster(local_node_specs[:1], heartbeat_interval=0.1, heartbeat_timeout=0.5) as c:
        try:
            assert c.rpc("n1", "time.sleep", 1.5) is None  # pings keep both sides content
            assert c.connect("n1").lost is None
        finally:
            c.down()


def test_large_argument_and_result(cluster):
    blob = os.urandom(24 << 20)
    assert cluster.rpc("n1", "zlib.crc32", blob) == __import__("zlib").crc32(blob)
    assert len(cluster.rpc("n2", "os.urandom", 24 << 20)) == 24 << 20


def test_callbacks_and_waiters_on_one_connection(cluster):
    import queue

    conn = cluster.connect("n1")
    replies: queue.Queue = queue.Queue()
    for i in range(50):
        conn.request({"op": "ping"}, callback=lambda h, p, e, i=i: replies.put((i, e)))
    assert cluster.rpc("n1", "operator.add", 2, 3) == 5
    got = sorted(replies.get(timeout=10) for _ in range(50))
    assert got == [(i, None) for i in range(50)]


def test_a_failing_callback_does_not_break_the_connection(cluster, capsys):
    """The callback's failure is told on stderr (with the hook pytest puts in place of
    ``sys.unraisablehook`` left alone: tests/local/test_callback_failures.py has Python's
    own) and the connection goes on."""
    conn = cluster.connect("n1")

    def broken(head, payload, error):
        raise ValueError("bug in a callback")

    conn.request({"op": "ping"}, callback=broken)
    told: list[str] = []

    def reported() -> bool:
        told.append(capsys.readouterr().err)
        return "ValueError: bug in a callback" in "".join(told)

    wait_for(reported, message="the callback's failure on stderr")
    assert cluster.rpc("n1", "operator.add", 2, 3) == 5
    assert conn.lost is None
