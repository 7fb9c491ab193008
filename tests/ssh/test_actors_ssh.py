"""Spawned processes over real OpenSSH hosts (tests/support/sshbed.py), their messages
routed between nodes by the hub: a key-value server on one host called by name from
another host and from the program, messages in order per pair across hosts, calls to a
host lost hard (killed) or soft (cut off) that fail within the heartbeat bound, a lost
host's permanent process restarted on another host under its name (and called there by
name while its old host is still cut off), the hub SIGKILLed while messages flow
(nothing lost, nothing twice), and ``down`` leaving no process on any host.

Each test has its own XDG directories (``env``), so its own hub; the ``ssh_clusters`` fixture
brings every node down after it and fails it if a clusterctl process is left on a host.
The hosts share this machine's kernel: a process's pid is visible here, and its
``time.monotonic()`` is this one's clock.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest

from clusterctl import errors
from clusterctl.actor import call, receive, reply, spawn, whereis

from actor_programs import (
    alive, call_from_inside, collect, hold, hub_pid, kvs, run_in, runner, sends_to, sleeper,
    stream_through_a_hub_kill)
from helpers import wait_for
from sshbed import assert_no_clusterctl_left, available_reason
from sshbed import clusterctl_processes as clusterctl_pids

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(90)]

_reason = available_reason()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=f"SSH test bed unavailable: {_reason}"))

# the hosts cannot import this module: what the processes run travels by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HOSTS = "h1 slots=2\nh2 slots=2\n"
HEARTBEAT = 3.0  # the heartbeat timeout of the tests that lose a host
BOUND = HEARTBEAT + 3.0  # a loss is seen within the timeout, a heartbeat's period and slack


# -- what the processes run (module level: they travel by value) -------------------------------
# (kvs, runner, sleeper and the helpers to drive them: tests/support/actor_programs.py)

def spawns_a_sleeper():
    """Spawns a process of its own (on its node), then sleeps."""
    spawn(sleeper)
    time.sleep(600)


def call_and_keep(to, msg):
    """Call ``to`` (no timeout); answer the call "report" with the outcome and when the
    call ended (``time.monotonic()``: the hosts share the test's clock)."""
    try:
        outcome = ("ok", call(to, msg))
    except Exception as exc:  # noqa: BLE001 - the outcome is the test's to check
        outcome = ("raised", type(exc).__name__, str(exc))
    ended_at = time.monotonic()
    receive(match=lambda m: m == "report")
    reply(outcome + (ended_at,))


# run by runner():

def where(name):
    return whereis(name)


# -- helpers -----------------------------------------------------------------------------------

def held(cluster, proc, n=1):
    """Wait until the ``hold`` process ``proc`` holds ``n`` calls (so they crossed)."""
    wait_for(lambda: cluster.call(proc, "status", timeout=5) >= n, 10, 0.02, f"{n} held calls")


class ProgramCall:
    """The program's own ``cluster.call(to, msg)`` (no timeout), in a thread: ``outcome``
    (the value, or the exception) and ``ended_at`` (``time.monotonic()``)."""

    def __init__(self, cluster, to, msg) -> None:
        self.outcome = None
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(cluster, to, msg), daemon=True)
        self._thread.start()

    def _run(self, cluster, to, msg) -> None:
        try:
            self.outcome = cluster.call(to, msg)
        except BaseException as exc:  # noqa: BLE001 - the outcome is the test's to check
            self.outcome = exc
        self.ended_at = time.monotonic()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def calls_in_flight(c):
    """A ``hold`` process on h2 holding two calls without timeout: one from a process on
    h1 (``call_and_keep``) and one from the program. (holder, waiting, program call)."""
    holder = c.spawn(hold, node="h2")
    waiting = c.spawn(call_and_keep, holder, "hold", node="h1")
    held(c, holder)
    program = ProgramCall(c, holder, "hold")
    held(c, holder, 2)
    return holder, waiting, program


def assert_calls_failed_naming_the_loss(c, waiting, program, lost_at):
    """The process on h1 got CallFailed naming h2's loss, the program NodeLost or
    CallFailed, both within the heartbeat bound of ``lost_at``."""
    kind, cls, text, ended_at = c.call(waiting, "report", timeout=BOUND + 10)
    assert (kind, cls) == ("raised", "CallFailed"), text
    assert "its node h2 was lost" in text, text
    assert ended_at - lost_at < BOUND, ended_at - lost_at
    assert program.join(BOUND + 10), "the program's call to a process on the lost host hangs"
    assert isinstance(program.outcome, (errors.NodeLost, errors.CallFailed)), repr(program.outcome)
    assert program.ended_at - lost_at < BOUND, program.ended_at - lost_at


# -- a server called across hosts --------------------------------------------------------------

def test_a_kvs_server_on_h2_is_called_by_name_from_h1_and_from_the_program(env, ssh_clusters):
    c = ssh_clusters.cluster(HOSTS)
    server = c.spawn(kvs, node="h2", name="kvs")
    assert server.startswith("h2.")
    r = c.spawn(runner, node="h1")
    wait_for(lambda: run_in(c, r, where, "kvs") == ("ok", server), 5, 0.05,
             "h1 to learn where kvs is")
    assert run_in(c, r, call_from_inside, "kvs", ("store", "a", [1, 2])) == ("ok", True)
    assert run_in(c, r, call_from_inside, "kvs", ("store", "b", "x" * 100_000)) == ("ok", True)
    assert run_in(c, r, call_from_inside, "kvs", ("lookup", "a")) == ("ok", [1, 2])
    assert run_in(c, r, call_from_inside, "kvs", ("lookup", "b")) == ("ok", "x" * 100_000)
    assert run_in(c, r, call_from_inside, "kvs", ("lookup", "nope")) == ("ok", None)
    assert run_in(c, r, call_from_inside, "kvs", ("whoami",)) == ("ok", server)
    assert c.call("kvs", ("lookup", "a"), timeout=10) == [1, 2]  # the program sees the same
    assert c.call("kvs", ("store", "c", 3), timeout=10) is True
    assert run_in(c, r, call_from_inside, "kvs", ("lookup", "c")) == ("ok", 3)
    assert c.whereis("kvs") == server
    rows = {row["id"]: row for row in c.processes()}
    assert set(rows) == {server, r}
    assert (rows[server]["node"], rows[server]["name"]) == ("h2", "kvs")
    assert (rows[r]["node"], rows[r]["name"]) == ("h1", None)


# -- messages in order -------------------------------------------------------------------------

def test_two_thousand_messages_from_h1_to_h2_arrive_in_order(env, ssh_clusters):
    c = ssh_clusters.cluster(HOSTS)
    n = 2000
    sink = c.spawn(collect, n, node="h2")
    source = c.spawn(sends_to, sink, [("m", i) for i in range(n)], node="h1")
    got = c.call(sink, "report", timeout=40)
    assert [m for m, _ in got] == [("m", i) for i in range(n)]
    assert {who for _, who in got} == {source}


# -- a host lost -------------------------------------------------------------------------------

def test_a_host_killed_hard_fails_calls_to_it_and_its_permanent_kvs_moves(env, ssh_clusters, ssh_bed):
    """h2 (its sshd, its node and its processes) is SIGKILLed while a process on h1 and
    the program each wait for a call that a process on h2 holds: both calls fail within
    the heartbeat bound, naming the loss; the permanent "kvs" of h2 is restarted on h1
    under its name and answers calls by name."""
    c = ssh_clusters.cluster(HOSTS, heartbeat_interval=0.5, heartbeat_timeout=HEARTBEAT)
    first = c.spawn(kvs, node="h2", name="kvs", restart="permanent")
    assert c.call("kvs", ("store", "a", 1), timeout=10) is True
    holder, waiting, program = calls_in_flight(c)
    on_h2 = [row["pid"] for row in c.processes() if row["node"] == "h2"]
    assert len(on_h2) == 2 and all(alive(p) for p in on_h2)
    try:
        killed_at = time.monotonic()
        ssh_bed.kill_host("h2")
        assert not any(alive(p) for p in on_h2)
        assert_calls_failed_naming_the_loss(c, waiting, program, killed_at)

        def moved():
            holder = c.whereis("kvs")
            return holder if (holder or "").startswith("h1.") else None

        second = wait_for(moved, 5, 0.05, "kvs restarted on h1")
        assert second != first
        assert c.call("kvs", ("whoami",), timeout=10) == second
        assert c.call("kvs", ("lookup", "a"), timeout=10) is None  # a fresh start
        assert c.call("kvs", ("store", "a", 2), timeout=10) is True
        assert c.call("kvs", ("lookup", "a"), timeout=10) == 2
        r = c.spawn(runner, node="h1")
        assert run_in(c, r, call_from_inside, "kvs", ("lookup", "a")) == ("ok", 2)
        rows = [row for row in c.processes() if row["name"] == "kvs"]
        assert [(row["id"], row["node"], row["restart"]) for row in rows] == \
            [(second, "h1", "permanent")]
    finally:
        ssh_bed.restart_sshd("h2")  # the host comes back, for the tests after this one


def test_a_host_cut_off_fails_calls_to_it_within_the_heartbeat_bound(env, ssh_clusters, ssh_bed):
    """h2 is cut off the network (its node and processes run on, unreachable) while a
    process on h1 and the program each wait for a call that a process on h2 holds:
    both fail within the heartbeat bound, naming the loss."""
    c = ssh_clusters.cluster(HOSTS, heartbeat_interval=0.5, heartbeat_timeout=HEARTBEAT)
    holder, waiting, program = calls_in_flight(c)
    if ssh_bed.unsupported_reason("cut"):  # (without netns: the node frozen instead)
        node = c.connect("h2").hello["pid"]
        lose = lambda: os.kill(node, signal.SIGSTOP)  # noqa: E731
        back = lambda: os.kill(node, signal.SIGCONT)  # noqa: E731
    else:
        lose, back = (lambda: ssh_bed.cut("h2")), (lambda: ssh_bed.restore("h2"))
    cut_at = time.monotonic()
    lose()
    try:
        assert_calls_failed_naming_the_loss(c, waiting, program, cut_at)
        assert time.monotonic() - cut_at > HEARTBEAT - 1.0  # lost by heartbeat, not at once
    finally:
        back()


# -- the hub killed while messages flow --------------------------------------------------------

def test_a_hub_killed_mid_stream_between_hosts_loses_nothing(env, ssh_clusters):
    c = ssh_clusters.cluster(HOSTS, heartbeat_interval=0.5, heartbeat_timeout=HEARTBEAT)
    stream_through_a_hub_kill(c, env, lambda c: c.processes(), sink_node="h2", source_node="h1")


def test_down_leaves_no_process_on_any_host(env, ssh_clusters, ssh_bed):
    c = ssh_clusters.cluster("h1 slots=2\nh2 slots=2\nh3 slots=2\n")
    c.spawn(kvs, node="h1", restart="permanent", name="p1")
    c.spawn(kvs, node="h2", restart="transient", name="p2")
    c.spawn(sleeper, node="h3")
    c.spawn(spawns_a_sleeper, node="h3")
    c.spawn(hold, node="h2", restart="permanent")
    rows = wait_for(lambda: (lambda rs: rs if len(rs) == 6 else None)(c.processes()), 10,
                    message="six processes (one spawned by another)")
    by_host = {h: {row["pid"] for row in rows if row["node"] == h} for h in ("h1", "h2", "h3")}
    assert all(by_host.values()), by_host
    for host, pids in by_host.items():  # the bed's check sees the spawned processes too
        assert pids <= {pid for pid, _ in clusterctl_pids(ssh_bed, host)}, (host, pids)
    hub = hub_pid(env)
    assert hub is not None and alive(hub)
    assert c.down() == {"h1": "stopped", "h2": "stopped", "h3": "stopped"}
    assert_no_clusterctl_left(ssh_bed)
    assert not any(alive(p) for pids in by_host.values() for p in pids)
    wait_for(lambda: not alive(hub), 5, message="the hub gone")


# -- a name on a host that is out of reach -----------------------------------------------------

def test_a_cut_off_hosts_permanent_kvs_moves_and_the_program_calls_it_by_name_at_once(
        env, ssh_clusters, ssh_bed):
    """h2, holding the permanent "kvs", is cut off: kvs is restarted on h1 under its name
    within the heartbeat bound, and a process on h1 and the program (which has only the
    name) both call it there at once, while h2 stays out of reach."""
    if ssh_bed.unsupported_reason("cut"):
        pytest.skip(ssh_bed.unsupported_reason("cut"))
    c = ssh_clusters.cluster(HOSTS, heartbeat_interval=0.5, heartbeat_timeout=HEARTBEAT)
    first = c.spawn(kvs, node="h2", name="kvs", restart="permanent")
    r = c.spawn(runner, node="h1")
    wait_for(lambda: run_in(c, r, where, "kvs") == ("ok", first), 5, 0.05,
             "h1 to learn where kvs is")
    cut_at = time.monotonic()
    ssh_bed.cut("h2")
    try:
        def moved():
            kind, value = run_in(c, r, where, "kvs")[:2]
            return value if kind == "ok" and (value or "").startswith("h1.") else None

        second = wait_for(moved, BOUND + 2, 0.05, "kvs restarted on h1")
        assert time.monotonic() - cut_at < BOUND + 2
        assert run_in(c, r, call_from_inside, "kvs", ("whoami",)) == ("ok", second)
        assert c.call(second, ("whoami",), timeout=10) == second  # by id: at once
        started = time.monotonic()
        by_name = ProgramCall(c, "kvs", ("whoami",))
        by_name.join(3.0)
    finally:
        ssh_bed.restore("h2")  # (h2 back: a call still waiting for it goes on)
    assert by_name.join(30), "the program's call by name hangs"
    assert by_name.outcome == second, repr(by_name.outcome)
    took = by_name.ended_at - started
    assert took < 3.0, (f"the program's call by name took {took:.1f} s: it answered only "
                        "once h2 was no longer cut off")
