"""Spawned processes across two local nodes (n1, n2), with the hub routing the frames
between them: messages in order per pair of processes, calls, monitors and links that
cross nodes, names unique in the world (racing commands too), a hub killed while
messages flow, a node lost hard (SIGKILL) or soft (SIGSTOP: its heartbeat stops), and
``down`` (which moves nothing, and leaves no process).

Each test has its own XDG directories, so its own hub; ``make_local_cluster`` brings the nodes
down after it, and its ``down()`` (no nodes named) stops whichever hub runs then.
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
from clusterctl.actor import (
    Down, Exit, ReceiveTimeout, call, link, monitor, receive, reply, send, spawn,
    trap_exits, whereis)

from actor_programs import (
    alive, call_from_inside, collect, consumer, ended, hold, hub_pid, kvs, register_as, run_in,
    runner, sends_to, sleeper, stream_through_a_hub_kill)
from helpers import wait_for

pytestmark = [pytest.mark.local_only, pytest.mark.timeout(60)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- what the processes run (module level: they travel by value) -----------------------------

def call_and_keep(to, msg):
    """Call ``to`` (no timeout); answer the call "report" with the outcome and how long
    the call took."""
    started = time.monotonic()
    try:
        outcome = ("ok", call(to, msg))
    except Exception as exc:  # noqa: BLE001 - the outcome is the test's to check
        outcome = ("raised", type(exc).__name__, str(exc))
    took = time.monotonic() - started
    receive(match=lambda m: m == "report")
    reply(outcome + (took,))


def linked_partner(calm, doomed):
    """Linked to ``calm`` (on another node), which ends normally: no harm; then linked to
    ``doomed``, which crashes: this process is ended with it."""
    link(calm)
    ref = monitor(calm)
    send(calm, ("stop",))  # (after the link and the monitor: one pair, in order)
    receive(match=lambda m: isinstance(m, Down) and m.ref == ref, timeout=10)
    link(doomed)
    send(doomed, ("crash", "cascade"))
    receive()  # ended by the link while waiting here


# run by runner():

def watch_it_crash(target, nosuch):
    """Monitor ``target`` (another node's), make it crash; and monitor one that is not."""
    ref = monitor(target)
    send(target, ("crash", "watched one"))
    down = receive(timeout=10, match=lambda m: isinstance(m, Down) and m.ref == ref)
    ref2 = monitor(nosuch)
    gone = receive(timeout=10, match=lambda m: isinstance(m, Down) and m.ref == ref2)
    return ref, tuple(down), ref2, tuple(gone)


def trap_its_exit(target):
    """Trapping exits, link to ``target`` (another node's) and make it crash: an Exit."""
    trap_exits()
    link(target)
    send(target, ("crash", "linked one"))
    return tuple(receive(timeout=10, match=lambda m: isinstance(m, Exit)))


def after_the_loss(target):
    """Monitor and call ``target`` (on a node known lost): the Down (or None after 2 s),
    and how the call ended."""
    ref = monitor(target)
    try:
        down = tuple(receive(timeout=2, match=lambda m: isinstance(m, Down) and m.ref == ref))
    except ReceiveTimeout:
        down = None
    try:
        calling = ("replied", call(target, ("whoami",), timeout=2))
    except Exception as exc:  # noqa: BLE001 - the outcome is the test's to check
        calling = (type(exc).__name__, str(exc))
    return down, calling


def spawn_named(name):
    return spawn(sleeper, name=name)


def where(name):
    return whereis(name)


# -- helpers -----------------------------------------------------------------------------------

def hub_log(env) -> str:
    try:
        return (env.run_dir / "hub" / "hub.log").read_text()
    except OSError:
        return ""


def held(cluster, proc, n=1):
    """Wait until the ``hold`` process ``proc`` holds ``n`` calls (so they crossed)."""
    wait_for(lambda: cluster.call(proc, "status", timeout=5) >= n, 10, 0.02, "the call to arrive")


# -- messages in order ---------------------------------------------------------------------------

def test_three_thousand_messages_cross_in_order_by_id_and_by_name(make_local_cluster):
    c = make_local_cluster()
    sink = c.spawn(collect, 3000, node="n2")
    source = c.spawn(sends_to, sink, list(range(3000)), node="n1")
    got = c.call(sink, "report", timeout=30)
    assert [n for n, _ in got] == list(range(3000))
    assert {who for _, who in got} == {source}

    named = c.spawn(collect, 3000, node="n2", name="sink")
    assert c.whereis("sink") == named
    source = c.spawn(sends_to, "sink", [("m", i) for i in range(3000)], node="n1")
    got = c.call("sink", "report", timeout=30)
    assert [m for m, _ in got] == [("m", i) for i in range(3000)]
    assert {who for _, who in got} == {source}


def test_two_senders_on_two_nodes_each_in_order(make_local_cluster):
    c = make_local_cluster()
    sink = c.spawn(collect, 3000, node="n2", name="sink")
    far = c.spawn(sends_to, "sink", [("far", i) for i in range(1500)], node="n1")
    near = c.spawn(sends_to, sink, [("near", i) for i in range(1500)], node="n2")
    got = c.call("sink", "report", timeout=30)
    assert len(got) == 3000
    assert [i for (tag, i), _ in got if tag == "far"] == list(range(1500))
    assert [i for (tag, i), _ in got if tag == "near"] == list(range(1500))
    assert {who for (tag, _), who in got if tag == "far"} == {far}
    assert {who for (tag, _), who in got if tag == "near"} == {near}


# -- calls, monitors and links across nodes --------------------------------------------------------

def test_calls_to_a_server_on_the_other_node(make_local_cluster):
    c = make_local_cluster()
    server = c.spawn(kvs, node="n2", name="kvs")
    r = c.spawn(runner, node="n1")
    assert run_in(c, r, where, "kvs") == ("ok", server)
    assert run_in(c, r, call_from_inside, "kvs", ("store", "a", [1, 2])) == ("ok", True)
    assert run_in(c, r, call_from_inside, "kvs", ("store", "b", "x" * 200_000)) == ("ok", True)
    assert run_in(c, r, call_from_inside, "kvs", ("lookup", "a")) == ("ok", [1, 2])
    assert run_in(c, r, call_from_inside, server, ("lookup", "b")) == ("ok", "x" * 200_000)
    assert run_in(c, r, call_from_inside, server, ("whoami",)) == ("ok", server)
    assert c.call("kvs", ("lookup", "a"), timeout=5) == [1, 2]  # the program sees the same

    kind, cls, text = run_in(c, r, call_from_inside, "kvs", ("crash", "mid-call"))
    assert (kind, cls) == ("raised", "CallFailed")
    assert f"{server} (kvs) ended before it replied: ValueError: asked to crash: mid-call" in text
    wait_for(lambda: run_in(c, r, where, "kvs") == ("ok", None), 5, message="n1 to forget kvs")
    kind, cls, text = run_in(c, r, call_from_inside, "kvs", ("lookup", "a"))
    assert (kind, cls) == ("raised", "NoProcess") and "kvs" in text


def test_a_second_watch_that_comes_and_goes_leaves_the_node_connected(make_local_cluster, env):
    """Another watch of n1 (a second hub of the user's, or anyone holding the cookie) is
    n1's way out while it is there; when it goes, the hub's own watch, still open, takes
    over at once, and calls to the other node go on."""
    from clusterctl.config.cookie import load_or_create_cookie
    from rawclient import handshake, raw_socket

    c = make_local_cluster()
    server = c.spawn(kvs, node="n2", name="kvs")
    r = c.spawn(runner, node="n1")
    assert run_in(c, r, call_from_inside, server, ("store", "a", 1)) == ("ok", True)
    def ways_out() -> int:
        return env.node_log("n1").count("is this node's way to the others")

    before = ways_out()
    with raw_socket(env, "n1") as sock:
        assert handshake(sock, load_or_create_cookie(), heartbeat=30, watch=True)["op"] == "welcome"
        wait_for(lambda: ways_out() > before, message="n1 to take the second watch")
    assert run_in(c, r, call_from_inside, server, ("lookup", "a"), 5) == ("ok", 1)


def test_a_name_held_on_a_node_outside_the_programs_world_is_a_clear_error(make_local_cluster):
    """A program whose world is n1 only, calling a name held on n2 (started from a world
    with both, on the same hub): one line naming the holder and its node."""
    from clusterctl import Cluster
    from clusterctl.config.hosts import HostSpec

    c = make_local_cluster()
    server = c.spawn(kvs, node="n2", name="kvs")
    with Cluster([HostSpec(name="n1", target="local", slots=2)]) as only_n1:
        assert only_n1.whereis("kvs") == server
        for use in (lambda: only_n1.call("kvs", ("lookup", "a"), timeout=10),
                    lambda: only_n1.send("kvs", ("store", "b", 2))):
            with pytest.raises(errors.NoProcess, match=f"held by {server}, on node n2, which is not in"):
                use()


def test_a_monitor_across_nodes_gets_down_with_the_reason(make_local_cluster):
    c = make_local_cluster()
    target = c.spawn(kvs, node="n2")
    r = c.spawn(runner, node="n1")
    outcome = run_in(c, r, watch_it_crash, target, "n2.9999")
    assert outcome[0] == "ok", outcome
    ref, down, ref2, gone = outcome[1]
    assert down[:3] == (ref, target, "ValueError: asked to crash: watched one")
    assert "Traceback" in down[3] and "in kvs" in down[3]
    assert gone[:3] == (ref2, "n2.9999", "noproc")


def test_a_link_across_nodes_traps_an_exit_or_ends_the_partner(make_local_cluster):
    c = make_local_cluster()
    target = c.spawn(kvs, node="n2")
    r = c.spawn(runner, node="n1")
    outcome = run_in(c, r, trap_its_exit, target)
    assert outcome[0] == "ok", outcome
    assert outcome[1][:2] == (target, "ValueError: asked to crash: linked one")
    assert run_in(c, r, where, "nobody") == ("ok", None)  # trapping, it lives on

    calm, doomed = c.spawn(kvs, node="n2"), c.spawn(kvs, node="n2")
    partner = c.spawn(linked_partner, calm, doomed, node="n1")
    down = ended(c, partner)
    assert down.reason.startswith(f"linked process {doomed} ended")
    assert "ValueError: asked to crash: cascade" in down.reason
    wait_for(lambda: {row["id"] for row in c.processes()} == {r}, 5, message="only the runner left")


# -- names, unique in the world ---------------------------------------------------------------------

def test_a_name_is_unique_across_nodes(make_local_cluster):
    c = make_local_cluster()
    holder = c.spawn(kvs, node="n1", name="x")
    with pytest.raises(errors.NameTaken, match=f"the name x is taken by {holder}"):
        c.spawn(kvs, node="n2", name="x")
    r = c.spawn(runner, node="n2")
    kind, cls, text = run_in(c, r, register_as, "x")
    assert (kind, cls) == ("raised", "NameTaken") and holder in text
    kind, cls, text = run_in(c, r, spawn_named, "x")
    assert (kind, cls) == ("raised", "NameTaken") and holder in text
    assert run_in(c, r, register_as, "y") == ("ok", r)
    with pytest.raises(errors.NameTaken, match=f"taken by {r}"):
        c.spawn(kvs, node="n1", name="y")
    assert c.whereis("x") == holder and c.whereis("y") == r
    assert sorted(row["name"] or "" for row in c.processes()) == ["x", "y"]


def test_racing_registrations_on_two_nodes_one_wins(make_local_cluster):
    a, b = make_local_cluster(heartbeat_timeout=3), make_local_cluster(heartbeat_timeout=3)
    a.spawn(sleeper, node="n1")  # the nodes run, and the hub watches them
    b.world()
    winners = []
    for i in range(4):
        name = f"race{i}"
        barrier = threading.Barrier(2)
        outcomes = {}

        def spawn_it(cluster, node):
            try:
                barrier.wait(5)
                outcomes[node] = cluster.spawn(sleeper, node=node, name=name)
            except Exception as exc:  # noqa: BLE001 - the test looks at each outcome
                outcomes[node] = exc

        threads = [threading.Thread(target=spawn_it, args=(cl, node))
                   for cl, node in ((a, "n1"), (b, "n2"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        won = [v for v in outcomes.values() if isinstance(v, str)]
        lost = [v for v in outcomes.values() if isinstance(v, errors.NameTaken)]
        assert len(won) == 1 and len(lost) == 1, (name, outcomes)
        assert f"the name {name} is taken by {won[0]}" in str(lost[0])
        assert a.whereis(name) == won[0] and b.whereis(name) == won[0]
        winners.append(won[0])
    named = {row["name"]: row["id"] for row in a.processes() if row["name"]}
    assert named == {f"race{i}": w for i, w in enumerate(winners)}


def test_two_claims_of_a_name_that_reach_the_hub_together_have_one_winner(make_local_cluster, env):
    """The hub alone decides between claims that no node could tell apart: with the hub
    frozen, n1 and n2 each start a process named x (each claim waits at the hub); thawed,
    the hub lets the first have it and refuses the second, naming the first."""
    c = make_local_cluster()
    runners = {node: c.spawn(runner, node=node) for node in ("n1", "n2")}  # (the hub watches both)
    hub = hub_pid(env)
    outcomes = {}

    def spawn_x(node):  # from a process on the node: the node claims the name from the hub
        outcomes[node] = run_in(c, runners[node], spawn_named, "x")

    os.kill(hub, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=spawn_x, args=(node,)) for node in ("n1", "n2")]
        for t in threads:
            t.start()
        time.sleep(1.0)  # both claims are sent, and wait at the hub
        assert outcomes == {}
    finally:
        os.kill(hub, signal.SIGCONT)
    for t in threads:
        t.join(15)
    won = [v[1] for v in outcomes.values() if v[0] == "ok"]
    lost = [v for v in outcomes.values() if v[:2] == ("raised", "NameTaken")]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert f"the name x is taken by {won[0]}" in lost[0][2]
    assert c.whereis("x") == won[0]
    assert [row["id"] for row in c.processes() if row["name"] == "x"] == won


def crash_at_once():
    raise RuntimeError("down again")


def test_a_process_that_stays_down_is_killed_by_name_wherever_it_is(make_local_cluster):
    """A permanent process past its restart limit holds no name, but ps lists it under it:
    kill NAME finds it on its node (the other node has none) and forgets it."""
    c = make_local_cluster()
    c.spawn(crash_at_once, node="n2", name="flaky", restart="permanent", intensity=1, period=30)
    row = wait_for(lambda: next((r for r in c.processes() if r["state"] == "failed"), None), 10,
                   message="the process to stay down")
    assert row["name"] == "flaky" and row["node"] == "n2" and c.whereis("flaky") is None
    assert c.kill("flaky") == "flaky"
    assert not [r for r in c.processes() if r["name"] == "flaky"]
    with pytest.raises(errors.NoProcess, match="no process is registered as flaky"):
        c.kill("flaky")


def test_a_name_freed_on_one_node_can_be_taken_on_the_other(make_local_cluster):
    c = make_local_cluster()
    r = c.spawn(runner, node="n2")
    for i in range(3):
        name = f"free{i}"
        first = c.spawn(kvs, node="n1", name=name)
        wait_for(lambda: run_in(c, r, where, name) == ("ok", first), 5, message="n2 to learn it")
        ended(c, first, lambda: c.send(name, ("stop",)))
        second = c.spawn(kvs, node="n2", name=name)
        assert second.startswith("n2.") and c.whereis(name) == second
        assert c.call(name, ("whoami",), timeout=5) == second


# -- the hub killed while messages flow ------------------------------------------------------------

def start_hub_from_its_memory(c):
    """Start a new hub by a request that names no node: only the list of watched nodes
    the killed hub left has it watch n1 and n2 again (the first back sends again at once
    what it kept for the other, which the hub must know as part of the world)."""
    assert c._links.hub.call("status", {}, 10.0)["requests"] >= 0
    return wait_for(lambda: (lambda rows: rows if len(rows) == 2 else None)(c.processes()),
                    10, message="the processes listed again")


@pytest.mark.parametrize("restart", [lambda c: c.processes(), start_hub_from_its_memory],
                         ids=["by-a-command", "from-its-memory"])
def test_a_hub_killed_mid_stream_loses_nothing(make_local_cluster, env, restart):
    # (the default heartbeat: a busy machine must not lose a node here; ``processes``
    # starts a new hub, which watches the nodes again)
    stream_through_a_hub_kill(make_local_cluster(), env, restart, sink_node="n2", source_node="n1")


# -- a node lost -----------------------------------------------------------------------------------

def test_a_node_killed_hard_fails_calls_and_restarts_its_permanent_process(make_local_cluster, env):
    c = make_local_cluster(heartbeat_timeout=3)
    first = c.spawn(kvs, node="n2", name="kvs", restart="permanent")
    c.call("kvs", ("store", "a", 1), timeout=5)
    c.spawn(sleeper, node="n2", name="temp")
    holder = c.spawn(hold, node="n2")
    waiting = c.spawn(call_and_keep, holder, "hold", node="n1")
    held(c, holder)
    n2_pids = [row["pid"] for row in c.processes() if row["node"] == "n2"]
    assert len(n2_pids) == 3

    os.kill(env.node_pid("n2"), signal.SIGKILL)
    kind, cls, text, took = c.call(waiting, "report", timeout=10)
    assert (kind, cls) == ("raised", "CallFailed"), text
    assert "its node n2 was lost" in text
    assert took < 5
    wait_for(lambda: not any(alive(p) for p in n2_pids), 5, message="n2's processes gone")

    second = wait_for(lambda: (c.whereis("kvs") or "").startswith("n1.") and c.whereis("kvs"),
                      3.5, 0.05, "kvs restarted on n1")
    assert second != first
    assert c.call("kvs", ("whoami",), timeout=5) == second
    assert c.call("kvs", ("lookup", "a"), timeout=5) is None  # a fresh start
    assert c.call("kvs", ("store", "a", 2), timeout=5) is True
    assert c.call("kvs", ("lookup", "a"), timeout=5) == 2
    time.sleep(0.3)  # (the hub restarts a lost node's processes all at once)
    assert c.whereis("temp") is None
    rows = c.processes()
    [row] = rows  # (the caller ended once it had told its outcome)
    assert (row["id"], row["name"], row["node"], row["restart"]) == (second, "kvs", "n1", "permanent")


def watches(target):
    """Monitor ``target`` (a process on another node); answer the call "report" with its
    Down, once it came: (whether it is this monitor's, the process, the reason)."""
    ref = monitor(target)
    down = receive(match=lambda m: isinstance(m, Down), timeout=50)
    receive(match=lambda m: m == "report")
    reply((down.ref == ref, down.process, down.reason))


def test_monitors_set_before_their_node_was_lost_fire_in_processes_and_in_the_program(
        make_local_cluster, env):
    """A process on n1 and the program both monitor a process on n2; n2 is killed: each
    gets a Down saying its node was lost, within the heartbeat bound."""
    c = make_local_cluster(heartbeat_timeout=3)
    target = c.spawn(sleeper, node="n2")
    watcher = c.spawn(watches, target, node="n1")
    program_watch = c.monitor(target)
    time.sleep(0.5)  # (the watcher's monitor has reached n2: a monitor request is a frame)
    assert program_watch.wait(0) is None
    killed = time.monotonic()
    os.kill(env.node_pid("n2"), signal.SIGKILL)
    down = program_watch.wait(10)
    assert down is not None and "its node was lost" in down.reason, down
    assert down.process == target
    mine, process, reason = c.call(watcher, "report", timeout=10)
    assert time.monotonic() - killed < 8
    assert mine and process == target and "its node n2 was lost" in reason, reason


def test_a_node_that_stops_answering_is_lost_and_its_calls_fail(make_local_cluster, env):
    c = make_local_cluster(heartbeat_timeout=3)
    holder = c.spawn(hold, node="n2")
    waiting = c.spawn(call_and_keep, holder, "hold", node="n1")
    held(c, holder)
    n2 = env.node_pid("n2")
    os.kill(n2, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        kind, cls, text, _ = c.call(waiting, "report", timeout=12)
        lost_after = time.monotonic() - stopped
    finally:
        os.kill(n2, signal.SIGCONT)
    assert (kind, cls) == ("raised", "CallFailed"), text
    assert "its node n2 was lost" in text
    assert 2.0 < lost_after < 8.0, lost_after


def test_the_hub_takes_a_node_back_by_itself_and_shows_it_up(make_local_cluster, env):
    """n2 frozen past the heartbeat is lost to the hub; thawed, the hub reconnects it with
    no command asking, its status says up again (not lost), and messages cross again."""
    from clusterctl.config.cookie import load_or_create_cookie
    from clusterctl.hub.client import HubClient
    from clusterctl.transport.base import NodeSettings
    from clusterctl.transport.bundle import agent_bundle

    hub = HubClient(NodeSettings(cookie=load_or_create_cookie(), bundle=agent_bundle()))

    def state(node: str) -> str | None:
        status = hub.call("status", {}, 10.0, start=False) or {}
        return next((w["state"] for w in status.get("nodes", []) if w["node"] == node), None)

    c = make_local_cluster(heartbeat_timeout=3)
    server = c.spawn(kvs, node="n2", name="kvs")
    r = c.spawn(runner, node="n1")
    assert run_in(c, r, call_from_inside, server, ("store", "a", 1)) == ("ok", True)
    n2 = env.node_pid("n2")
    os.kill(n2, signal.SIGSTOP)
    try:
        wait_for(lambda: state("n2") == "lost", 15, interval=0.2, message="the hub to lose n2")
    finally:
        os.kill(n2, signal.SIGCONT)
    wait_for(lambda: state("n2") == "up", 15, interval=0.2, message="the hub to show n2 up")
    wait_for(lambda: run_in(c, r, call_from_inside, server, ("lookup", "a"), 2) == ("ok", 1), 15,
             interval=0.2, message="a call across again")


def test_a_name_taken_over_while_its_holder_was_cut_off_stays_with_the_new_holder(make_local_cluster, env):
    """n2, holding the permanent kvs, is frozen past the heartbeat: kvs restarts on n1
    under its name. Thawed, n2 comes back by itself and its kvs, whose name was taken
    over meanwhile, is evicted: one kvs, the new one, answers by name."""
    c = make_local_cluster(heartbeat_timeout=3)
    first = c.spawn(kvs, node="n2", name="kvs", restart="permanent")
    [first_pid] = [row["pid"] for row in c.processes() if row["id"] == first]
    r = c.spawn(runner, node="n1")
    wait_for(lambda: run_in(c, r, whereis, "kvs") == ("ok", first), 5, 0.05, "n1 to know kvs")
    n2 = env.node_pid("n2")
    os.kill(n2, signal.SIGSTOP)
    try:
        def moved():
            kind, value = run_in(c, r, whereis, "kvs")[:2]
            return value if kind == "ok" and (value or "").startswith("n1.") else None

        second = wait_for(moved, 20, 0.1, "kvs restarted on n1")
        assert alive(first_pid)  # (cut off, not ended: its node is frozen)
    finally:
        os.kill(n2, signal.SIGCONT)
    wait_for(lambda: not alive(first_pid), 20, 0.1, "the old kvs evicted")
    assert alive(n2)  # (its node lives on)
    assert c.whereis("kvs") == second
    assert c.call("kvs", ("whoami",), timeout=5) == second
    assert any("evicting" in line for line in (env.run_dir / "hub" / "hub.log").read_text().splitlines())


# -- down --------------------------------------------------------------------------------------------

def test_down_leaves_no_process_running(make_local_cluster, env):
    c = make_local_cluster()
    c.spawn(kvs, node="n1", restart="permanent", name="p1")
    c.spawn(kvs, node="n2", restart="transient", name="p2")
    c.spawn(sleeper, node="n2")
    r = c.spawn(runner, node="n1")
    assert run_in(c, r, lambda: spawn(sleeper))[0] == "ok"
    assert run_in(c, r, call_from_inside, "p2", ("store", "k", 1)) == ("ok", True)
    os_pids = [row["pid"] for row in c.processes()]
    assert len(os_pids) == 5 and all(alive(p) for p in os_pids)
    hub = hub_pid(env)
    assert hub is not None and alive(hub)
    c.down()
    wait_for(lambda: not any(alive(p) for p in os_pids), 5, message="the processes gone")
    wait_for(lambda: not alive(hub), 5, message="the hub gone")


def test_a_node_stopped_by_down_moves_none_of_its_processes(make_local_cluster, env):
    c = make_local_cluster()
    c.spawn(kvs, node="n1", restart="permanent", name="p1")
    c.spawn(kvs, node="n1", restart="transient", name="t1")
    on_n1 = [row["pid"] for row in c.processes()]
    stays = c.spawn(sleeper, node="n2")
    assert c.down(["n1"]) == {"n1": "stopped"}
    wait_for(lambda: not any(alive(p) for p in on_n1), 5, message="n1's processes gone")
    line = wait_for(lambda: [ln for ln in hub_log(env).splitlines() if "node n1 lost" in ln],
                    5, message="the hub to see n1 go")
    assert "it stopped" in line[0] and "0 processes to restart" in line[0], line
    time.sleep(0.8)  # (a lost node's processes would be restarted after 0.5 s)
    assert c.whereis("p1") is None and c.whereis("t1") is None
    assert [row["id"] for row in c.processes()] == [stays]


# -- lost nodes, and back ------------------------------------------------------------------------

def test_a_monitor_or_call_of_a_process_on_a_lost_node_ends_at_once(make_local_cluster, env):
    """Once n1 has been told n2 was lost, a monitor of an n2 process fires at once and a
    call to it fails at once, naming the loss (the node remembers which nodes are lost
    until the hub says they are back)."""
    c = make_local_cluster(heartbeat_timeout=3)
    target = c.spawn(kvs, node="n2")
    r = c.spawn(runner, node="n1")
    assert run_in(c, r, call_from_inside, target, ("whoami",)) == ("ok", target)
    os.kill(env.node_pid("n2"), signal.SIGKILL)
    wait_for(lambda: "node n2 lost" in env.node_log("n1"), 10, 0.05, "n1 to hear n2 was lost")
    kind, (down, calling) = run_in(c, r, after_the_loss, target)
    assert kind == "ok"
    assert down is not None and down[1] == target, "no Down within 2 s"
    assert calling[0] in ("CallFailed", "NoProcess"), calling


def test_messages_flow_both_ways_after_a_lost_node_comes_back(make_local_cluster, env):
    """n2 stops answering (SIGSTOP) until the hub declares it lost, then runs again and the
    hub watches it again: messages flow again both ways (n1 forgot its outbox to n2, but
    remembers how far n2's session had come, so n2 goes on where it was)."""
    c = make_local_cluster(heartbeat_timeout=2)
    on1, on2 = c.spawn(consumer, node="n1"), c.spawn(consumer, node="n2")
    c.spawn(sends_to, on1, ["before"], node="n2")
    wait_for(lambda: c.call(on1, "report", timeout=5) == ["before"], 5, message="n2 -> n1")
    n2 = env.node_pid("n2")
    os.kill(n2, signal.SIGSTOP)
    try:
        wait_for(lambda: "node n2 lost" in env.node_log("n1"), 10, 0.05, "n1 to hear n2 was lost")
    finally:
        os.kill(n2, signal.SIGCONT)
    c.spawn(sends_to, on2, ["after"], node="n1")
    wait_for(lambda: c.call(on2, "report", timeout=5) == ["after"], 10, 0.05, "n1 -> n2 again")
    c.spawn(sends_to, on1, ["after"], node="n2")
    wait_for(lambda: c.call(on1, "report", timeout=5) == ["before", "after"], 4, 0.05,
             "n2 -> n1 again (a lost frame is sent again within 2 s)")
