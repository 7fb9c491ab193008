"""Spawned processes on real local nodes: a key-value server, messages in order, selective
receive, calls that fail or time out, monitors and links, the restart types and their
intensity limit, names, bounded mailboxes, kill, placement, and processes outliving the
program that spawned them (but not ``down``).

Every process the tests start goes with the nodes, which ``make_local_cluster`` brings down
after each test (and the ``env`` fixture fails a test that leaves one behind). Messages
between processes stay on one node: routing between nodes is not there yet.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest

from clusterctl import Cluster, errors
from clusterctl.actor import (
    Down, Exit, MailboxFull, ReceiveTimeout, call, caller, link, monitor, receive, reply,
    self, send, sender, spawn, trap_exits, whereis)
from clusterctl.config.hosts import HostSpec

from actor_programs import (
    alive, call_from_inside, ended, kvs, register_as, run_in, runner, sleeper)
from helpers import wait_for

pytestmark = [pytest.mark.local_only, pytest.mark.timeout(60)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- what the processes run (module level: they travel by value) -----------------------------

def crasher(text):
    raise RuntimeError(text)


def returner():
    return "done"


def segfault():
    import resource

    receive()  # once the test watches
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def sends_to(to, msgs, pause=0.0):
    time.sleep(pause)
    for msg in msgs:
        send(to, msg)


def collect(n):
    """Take ``n`` numbers (and who sent them), then answer the call "report" with them."""
    got = [(receive(match=lambda m: isinstance(m, int)), sender()) for _ in range(n)]
    receive(match=lambda m: m == "report")
    reply(got)


def selective():
    """Messages 1..6 and then the call "go": the even ones first, then the rest, in order."""
    receive(match=lambda m: m == "go")
    go = caller()
    evens = [receive(match=lambda m: m % 2 == 0) for _ in range(3)]
    rest = [receive(timeout=5) for _ in range(3)]
    reply((evens, rest), to=go)


def linker():
    """On "go": a partner linked that ends normally (no harm), then one that crashes."""
    receive()
    calm = spawn(kvs)
    link(calm)
    ref = monitor(calm)
    send(calm, ("stop",))
    receive(match=lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
    doomed = spawn(kvs)
    link(doomed)
    send(doomed, ("crash", "cascade"))
    receive()  # ended by the link while waiting here


# run by runner():

def links_and_monitors(nosuch):
    trap_exits()
    a = spawn(kvs)
    link(a)
    send(a, ("crash", "linked one"))
    ex = receive(timeout=5, match=lambda m: isinstance(m, Exit))
    b = spawn(kvs)
    ref = monitor(b)
    send(b, ("crash", "watched one"))
    down = receive(timeout=5, match=lambda m: isinstance(m, Down))
    ref2 = monitor(nosuch)
    gone = receive(timeout=5, match=lambda m: isinstance(m, Down) and m.ref == ref2)
    return (a, tuple(ex), b, ref, tuple(down), ref2, tuple(gone))


def overfill(to, size):
    send(to, b"x" * size)
    send(to, b"x" * size)  # no room: refused
    whereis("anything")  # a round trip to the node: its refusal is in by now
    try:
        send(to, b"")
    except MailboxFull as exc:
        return str(exc)
    return "no MailboxFull"


def overfill_then_receive(to, size):
    send(to, b"x" * size)
    send(to, b"x" * size)  # no room: refused
    try:
        receive(timeout=1)
    except MailboxFull as exc:
        return str(exc)
    except ReceiveTimeout:
        try:
            send(to, b"")
        except MailboxFull:
            return "ReceiveTimeout, though the refusal had come back (the next send raised it)"
        return "ReceiveTimeout"


def poll_with_zero_timeout(seconds):
    """Poll the mailbox with receive(timeout=0) while a helper sends one message."""
    spawn(sends_to, self(), ["ping"], 0.1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return receive(timeout=0)
        except ReceiveTimeout:
            time.sleep(0.01)
    return ("nothing within %g s, though receive(timeout=1) then gives" % seconds, receive(timeout=1))


def returns_when_told():
    receive()


def a_down_notice():
    """Monitor a process that ends normally (once watched): the Down notice."""
    pid = spawn(returns_when_told)
    ref = monitor(pid)
    send(pid, "go")
    return receive(timeout=5, match=lambda m: isinstance(m, Down) and m.ref == ref)


def pass_a_down_notice_on(to):
    """Send the Down notice this process got to the runner ``to`` (as an argument of a call)."""
    down = a_down_notice()
    return call(to, (tuple, (down,)), timeout=5)


# -- helpers -----------------------------------------------------------------------------------

def rows(cluster, **where):
    return [r for r in cluster.processes() if all(r.get(k) == v for k, v in where.items())]


# -- calls, messages, selective receive --------------------------------------------------------

def test_a_kvs_server_stores_and_looks_up(make_local_cluster):
    c = make_local_cluster()
    pid = c.spawn(kvs, node="n1", name="kvs")
    assert pid.startswith("n1.")
    assert c.whereis("kvs") == pid
    assert c.call("kvs", ("store", "a", [1, 2])) is True
    assert c.call(pid, ("store", "b", "x" * 100_000)) is True
    assert c.call("kvs", ("lookup", "a")) == [1, 2]
    assert c.call("kvs", ("lookup", "b")) == "x" * 100_000
    assert c.call("kvs", ("lookup", "nope")) is None
    assert c.call("kvs", ("whoami",)) == pid
    [row] = c.processes()
    assert (row["id"], row["name"], row["node"], row["state"], row["restart"]) == \
        (pid, "kvs", "n1", "running", "temporary")
    assert row["function"].endswith("kvs") and alive(row["pid"]) and row["pid"] != os.getpid()


def test_calls_between_processes(make_local_cluster):
    c = make_local_cluster()
    server = c.spawn(kvs, node="n2", name="kvs")
    r = c.spawn(runner, node="n2")
    assert run_in(c, r, call_from_inside, "kvs", ("store", "a", 1)) == ("ok", True)
    assert run_in(c, r, call_from_inside, server, ("lookup", "a")) == ("ok", 1)
    kind, cls, text = run_in(c, r, call_from_inside, "nosuch", ("lookup", "a"))
    assert (kind, cls) == ("raised", "NoProcess") and "nosuch" in text
    kind, cls, text = run_in(c, r, call_from_inside, "kvs", ("crash", "mid-call"))
    assert (kind, cls) == ("raised", "CallFailed")
    assert f"{server} (kvs) ended before it replied: ValueError: asked to crash: mid-call" in text
    kind, cls, _ = run_in(c, r, call, "kvs", "anything", 0.2)  # gone: not restarted
    assert (kind, cls) == ("raised", "NoProcess")


def test_two_thousand_messages_arrive_in_order(make_local_cluster):
    c = make_local_cluster()
    sink = c.spawn(collect, 2000, node="n1")
    source = c.spawn(sends_to, sink, list(range(2000)), node="n1")
    got = c.call(sink, "report", timeout=20)
    assert [n for n, _ in got] == list(range(2000))
    assert {who for _, who in got} == {source}


def test_selective_receive_leaves_the_others_in_order(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(selective, node="n2")
    for n in range(1, 7):
        c.send(p, n)
    assert c.call(p, "go", timeout=10) == ([2, 4, 6], [1, 3, 5])


def test_a_call_whose_callee_crashes_first_fails_with_the_reason(make_local_cluster):
    c = make_local_cluster()
    c.spawn(kvs, node="n1", name="kvs")
    with pytest.raises(errors.CallFailed) as info:
        c.call("kvs", ("crash", "before replying"), timeout=10)
    assert "ended before it replied" in str(info.value)
    assert "ValueError: asked to crash: before replying" in str(info.value)


def test_a_call_or_send_to_nobody_is_no_process(make_local_cluster):
    c = make_local_cluster()
    c.spawn(kvs, node="n1")
    with pytest.raises(errors.NoProcess, match="nosuch"):
        c.call("nosuch", ("lookup", "a"), timeout=5)
    with pytest.raises(errors.NoProcess, match="n1.999"):
        c.call("n1.999", ("lookup", "a"), timeout=5)
    with pytest.raises(errors.NoProcess, match="n9"):
        c.send("n9.1", "hello")
    with pytest.raises(errors.NoProcess):
        c.send("nosuch", "hello")
    with pytest.raises(errors.NoProcess):
        c.kill("n1.999")
    assert c.whereis("nosuch") is None


def test_a_call_that_times_out_leaves_the_process_answering(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(kvs, node="n1")
    started = time.monotonic()
    with pytest.raises(errors.CallTimeout):
        c.call(p, ("ignore",), timeout=0.2)
    with pytest.raises(errors.CallTimeout):
        c.call(p, ("slow", 0.3), timeout=0.1)  # its late reply must not answer the next call
    assert time.monotonic() - started < 5
    assert c.call(p, ("store", "k", 1), timeout=5) is True
    assert c.call(p, ("lookup", "k"), timeout=5) == 1


# -- monitors and links ------------------------------------------------------------------------

def test_a_monitor_gets_down_with_the_error_and_its_traceback(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(kvs, node="n2")
    down = ended(c, p, lambda: c.send(p, ("crash", "for the monitor")))
    assert down.process == p
    assert down.reason == "ValueError: asked to crash: for the monitor"
    assert "Traceback" in down.traceback and "in kvs" in down.traceback
    assert "ValueError: asked to crash: for the monitor" in down.traceback
    assert c.monitor(p).wait(5).reason == "noproc"  # watching what is gone: at once


def test_a_normal_end_and_a_segfault_as_down_reasons(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(kvs, node="n1")
    assert ended(c, p, lambda: c.send(p, ("stop",))).reason == "normal"
    q = c.spawn(segfault, node="n1")
    down = ended(c, q, lambda: c.send(q, "now"))
    assert "SIGSEGV" in down.reason
    assert c.processes() == []


def test_links_exits_and_monitors_inside_processes(make_local_cluster):
    c = make_local_cluster()
    r = c.spawn(runner, node="n1")
    outcome = run_in(c, r, links_and_monitors, "n1.9999")
    assert outcome[0] == "ok", outcome
    a, ex, b, ref, down, ref2, gone = outcome[1]
    assert ex[:2] == (a, "ValueError: asked to crash: linked one") and "Traceback" in ex[2]
    assert down[:3] == (ref, b, "ValueError: asked to crash: watched one")
    assert gone[:3] == (ref2, "n1.9999", "noproc")
    assert c.call(r, (returner, ()), timeout=5) == ("ok", "done")  # trapping, it lives on


def test_an_abnormal_end_kills_the_linked_partner(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(linker, node="n1")
    down = ended(c, p, lambda: c.send(p, "go"))
    assert down.reason.startswith("linked process n1.")
    assert "ValueError: asked to crash: cascade" in down.reason
    wait_for(lambda: c.processes() == [], 5, message="no process left")


# -- restarts ------------------------------------------------------------------------------------

def test_temporary_is_not_restarted(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(kvs, node="n1", name="temp")
    ended(c, p, lambda: c.send("temp", ("crash", "once")))
    assert c.whereis("temp") is None
    assert c.processes() == []


def test_the_processes_that_ended_are_listed_apart_with_how_and_when(make_local_cluster):
    """``processes()`` lists the processes that run (and those that stay down); its
    ``ended``, the last ones that ended on each node, each with its reason, its error's
    type and traceback, and the process it was restarted as."""
    c = make_local_cluster()
    first = c.spawn(kvs, node="n1", name="tr", restart="transient")
    ended(c, first, lambda: c.send("tr", ("crash", "once")))
    second = c.whereis("tr")
    ended(c, second, lambda: c.send("tr", ("stop",)))
    listed = c.processes()
    assert listed == []
    crashed, stopped = listed.ended
    assert (crashed["id"], crashed["state"], crashed["reason"], crashed["error"],
            crashed["restarted_as"]) == (first, "crashed", "ValueError: asked to crash: once",
                                         "ValueError", second)
    assert "in kvs" in crashed["traceback"] and crashed["name"] == "tr"
    assert (stopped["id"], stopped["state"], stopped["reason"], stopped["error"],
            stopped["restarted_as"]) == (second, "ended", "normal", None, None)
    assert time.time() + 1 > stopped["ended"] >= crashed["ended"] > time.time() - 30


def test_transient_is_restarted_after_a_crash_only(make_local_cluster):
    c = make_local_cluster()
    first = c.spawn(kvs, node="n1", name="tr", restart="transient")
    c.call("tr", ("store", "k", 1))
    ended(c, first, lambda: c.send("tr", ("crash", "once")))
    second = c.whereis("tr")
    assert second is not None and second != first and second.startswith("n1.")
    assert c.call("tr", ("lookup", "k")) is None  # a fresh start, by name
    assert c.call("tr", ("whoami",)) == second
    [row] = c.processes()
    assert (row["id"], row["restarts"], row["restart"]) == (second, 1, "transient")
    ended(c, second, lambda: c.send("tr", ("stop",)))
    assert c.whereis("tr") is None
    assert c.processes() == []


def test_permanent_is_restarted_after_a_normal_end_too(make_local_cluster):
    c = make_local_cluster()
    first = c.spawn(kvs, node="n2", name="perm", restart="permanent")
    assert ended(c, first, lambda: c.send("perm", ("stop",))).reason == "normal"
    second = c.whereis("perm")
    assert second not in (None, first)
    assert c.call("perm", ("whoami",)) == second


def test_too_many_restarts_and_it_stays_down_as_failed(make_local_cluster):
    c = make_local_cluster()
    c.spawn(crasher, "again", node="n1", name="flaky", restart="permanent", intensity=2, period=30)
    [row] = wait_for(lambda: rows(c, state="failed"), 10, message="a failed row")
    assert row["name"] == "flaky" and row["node"] == "n1" and row["restarts"] == 2
    assert "restarted 2 times within 30 s (the limit)" in row["reason"]
    assert "RuntimeError: again" in row["reason"]
    assert c.whereis("flaky") is None
    assert c.kill(row["id"]) == row["id"]  # forgets the row
    assert c.processes() == []


def test_kill_ends_a_permanent_process_for_good(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(kvs, node="n1", name="perm", restart="permanent")
    os_pid = c.processes()[0]["pid"]
    down = ended(c, p, lambda: c.kill("perm"))
    assert down.reason == "killed"
    assert c.whereis("perm") is None
    assert c.processes() == []
    wait_for(lambda: not alive(os_pid), 5, message="its OS process gone")
    with pytest.raises(errors.NoProcess):
        c.call(p, ("whoami",), timeout=5)


# -- names ---------------------------------------------------------------------------------------

def test_a_taken_name_is_refused_naming_its_holder(make_local_cluster):
    c = make_local_cluster()
    holder = c.spawn(kvs, node="n1", name="kvs")
    with pytest.raises(errors.NameTaken, match=f"the name kvs is taken by {holder}"):
        c.spawn(kvs, node="n1", name="kvs")
    r = c.spawn(runner, node="n1")
    kind, cls, text = run_in(c, r, register_as, "kvs")
    assert (kind, cls) == ("raised", "NameTaken") and holder in text
    assert run_in(c, r, register_as, "mine") == ("ok", r)
    assert run_in(c, r, send, "bad name", 1)[:2] == ("raised", "ProcessError")
    assert c.whereis("mine") == r
    assert c.call("mine", (returner, ()), timeout=5) == ("ok", "done")


def test_racing_registrations_of_one_name_one_wins(make_local_cluster):
    a, b = make_local_cluster(), make_local_cluster()
    a.connect("n1"), b.connect("n1")
    for i in range(3):
        name = f"race{i}"
        barrier = threading.Barrier(2)
        outcomes = {}

        def spawn_it(cluster, key):
            barrier.wait(5)
            try:
                outcomes[key] = cluster.spawn(sleeper, node="n1", name=name)
            except errors.NameTaken as exc:
                outcomes[key] = exc

        threads = [threading.Thread(target=spawn_it, args=(cl, k)) for k, cl in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        won = [v for v in outcomes.values() if isinstance(v, str)]
        lost = [v for v in outcomes.values() if isinstance(v, errors.NameTaken)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert won[0] in str(lost[0])
        assert a.whereis(name) == won[0]
    assert len(a.processes()) == 3


def test_a_name_is_free_once_its_process_ends(make_local_cluster):
    c = make_local_cluster()
    first = c.spawn(kvs, node="n1", name="kvs")
    ended(c, first, lambda: c.send("kvs", ("stop",)))
    second = c.spawn(kvs, node="n1", name="kvs")
    assert second != first and c.whereis("kvs") == second


# -- mailboxes -----------------------------------------------------------------------------------

def test_a_full_mailbox_refuses_the_controllers_message(make_local_cluster):
    c = make_local_cluster()
    p = c.spawn(sleeper, node="n1", mailbox=4096)
    c.send(p, b"x" * 3000)
    with pytest.raises(errors.MailboxFull) as info:
        c.send(p, b"x" * 3000)
    assert "4096" in str(info.value) and p in str(info.value)
    with pytest.raises(errors.MailboxFull):
        c.call(p, b"x" * 3000, timeout=5)
    c.send(p, b"x" * 100)  # what fits still goes
    [row] = c.processes()
    assert 3100 < row["mailbox"] <= 4096


def test_a_full_mailbox_refuses_a_processs_message_at_its_next_send(make_local_cluster):
    c = make_local_cluster()
    sink = c.spawn(sleeper, node="n1", name="sink", mailbox=4096)
    r = c.spawn(runner, node="n1")
    kind, text = run_in(c, r, overfill, "sink", 3000)
    assert kind == "ok" and "is full" in text and "4096" in text and sink in text
    assert run_in(c, r, returner) == ("ok", "done")  # the refusal was raised once


def test_a_refusal_that_comes_back_during_receive_is_raised_there(make_local_cluster):
    """A refusal that arrives while the sender waits in receive is raised there, as
    MailboxFull, rather than waiting out the timeout."""
    c = make_local_cluster()
    c.spawn(sleeper, node="n1", name="sink", mailbox=4096)
    r = c.spawn(runner, node="n1")
    kind, text = run_in(c, r, overfill_then_receive, "sink", 3000)
    assert kind == "ok" and "is full" in text, text


def test_receive_with_a_zero_timeout_takes_what_the_node_sent(make_local_cluster):
    """receive(timeout=0) looks at what the node sent already: a process polling its
    mailbox that way gets its message."""
    c = make_local_cluster()
    r = c.spawn(runner, node="n1")
    assert run_in(c, r, poll_with_zero_timeout, 1.0) == ("ok", "ping")


def test_a_down_notice_passed_on_to_another_process_arrives_whole(make_local_cluster):
    """Down and Exit (tuples with fields) pickle and unpickle as themselves: a process may
    pass one on like any message."""
    c = make_local_cluster()
    r1, r2 = c.spawn(runner, node="n1"), c.spawn(runner, node="n1")
    outcome = run_in(c, r1, pass_a_down_notice_on, r2)
    assert outcome[0] == "ok" and outcome[1][0] == "ok", outcome
    assert outcome[1][1][2] == "normal"


def test_a_down_notice_in_a_reply_unpickles_in_the_program(make_local_cluster):
    """The in-process API's classes pickle under clusterctl.node.processes.runtime, which the
    program has (on the node they are clusterctl_node.processes.runtime's)."""
    c = make_local_cluster()
    r = c.spawn(runner, node="n1")
    kind, down = run_in(c, r, a_down_notice)
    assert kind == "ok" and tuple(down)[2] == "normal"


# -- bad inputs ------------------------------------------------------------------------------------

def test_bad_inputs_are_refused_before_anything_runs(make_local_cluster):
    c = make_local_cluster()
    with pytest.raises(errors.UsageError, match="process name"):
        c.spawn(kvs, name="bad name")
    with pytest.raises(errors.UsageError, match="restart must be one of"):
        c.spawn(kvs, restart="sometimes")
    with pytest.raises(errors.UsageError, match="intensity"):
        c.spawn(kvs, intensity=-1)
    with pytest.raises(errors.UsageError, match="mailbox"):
        c.spawn(kvs, mailbox=0)
    for bad in ("", "not valid!", "n1.", 17):
        with pytest.raises(errors.UsageError, match="send to a process id"):
            c.send(bad, "hello")
    with pytest.raises(errors.UsageError):
        c.whereis("bad name")
    assert c.processes() == []
    with pytest.raises(errors.ClusterError, match="nosuch") as info:
        c.spawn("nosuch.module", node="n1")
    assert "No module named" in str(info.value)
    assert c.processes() == []


# -- placement, and the life of processes -------------------------------------------------------

def test_a_process_goes_to_the_least_loaded_node(make_local_cluster):
    c = make_local_cluster()
    for _ in range(3):
        c.spawn(sleeper, node="n1")
    assert c.spawn(sleeper).startswith("n2.")


def test_a_process_outlives_its_program_and_keeps_its_node_from_idling(env):
    specs = [HostSpec(name=n, target="local", slots=1, idle=1.0) for n in ("n1", "n2")]
    try:
        with Cluster(specs) as first:
            first.world()
            p = first.spawn(kvs, node="n1", name="kvs")
            first.call("kvs", ("store", "k", "kept"))
            pids = {n: env.node_pid(n) for n in ("n1", "n2")}
        wait_for(lambda: not alive(pids["n2"]), 10, message="the idle node n2 to exit")
        assert alive(pids["n1"])
        with Cluster(specs) as second:
            assert second.whereis("kvs") == p
            assert second.call("kvs", ("lookup", "k"), timeout=5) == "kept"
            assert env.node_pid("n1") == pids["n1"]
    finally:
        with Cluster(specs) as closer:
            closer.down()


def test_down_leaves_no_process_running(make_local_cluster):
    c = make_local_cluster()
    c.spawn(kvs, node="n1", restart="permanent")
    c.spawn(sleeper, node="n2")
    r = c.spawn(runner, node="n1")
    assert run_in(c, r, lambda: spawn(sleeper))[0] == "ok"
    os_pids = [row["pid"] for row in c.processes()]
    assert len(os_pids) == 4 and all(alive(p) for p in os_pids)
    c.down()
    wait_for(lambda: not any(alive(p) for p in os_pids), 5, message="the processes gone")


# -- supervision groups ------------------------------------------------------------------------

def member():
    """A group's child: answers "whoami"; "crash" makes it raise."""
    while True:
        msg = receive()
        if msg == "crash":
            raise RuntimeError("member asked to crash")
        if msg == "whoami":
            reply(self())


def children_of(cluster, group, want=None, timeout=10.0):
    """The group's children's ids (once ``want(ids)`` holds, if given)."""
    return wait_for(lambda: (lambda ids: ids if (want is None or want(ids)) else None)(
        cluster.call(group, "children", timeout=5)), timeout, 0.05, "the group's children")


@pytest.mark.parametrize("strategy, restarted", [
    ("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})])
def test_a_group_restarts_its_children_as_its_strategy_says(make_local_cluster, strategy, restarted):
    c = make_local_cluster()
    group = c.spawn_group([(member, (), {"name": n}) for n in ("a", "b", "c")], strategy=strategy,
                          node="n1")
    before = dict(zip("abc", children_of(c, group, all)))
    c.send("b", "crash")
    after = dict(zip("abc", children_of(c, group, lambda ids: all(ids) and ids[1] != before["b"])))
    assert {n for n in "abc" if after[n] != before[n]} == restarted
    assert all(c.call(n, "whoami", timeout=5) == after[n] for n in "abc")  # names kept


def test_a_group_past_its_intensity_ends_with_its_children(make_local_cluster):
    """Too many restarts: the group gives up (its end names why) and its children end
    with it (they are linked to it); a temporary child is never restarted."""
    c = make_local_cluster()
    group = c.spawn_group([(member, (), {"name": "m"}), (member, (), {"name": "t", "restart": "temporary"})],
                          intensity=1, period=30, node="n1")
    first = children_of(c, group, all)
    c.send("t", "crash")
    assert children_of(c, group, lambda ids: ids[1] is None)[0] == first[0]
    c.send("m", "crash")
    second = children_of(c, group, lambda ids: ids[0] not in (None, first[0]))
    watch = c.monitor(group)
    c.send("m", "crash")
    down = watch.wait(10)
    assert down is not None and "the group gives up" in down.reason, down
    wait_for(lambda: not rows(c, state="running"), 10, message="the children to end")
    assert c.whereis("m") is None and second[0] != first[0]
    with pytest.raises(errors.UsageError, match="strategy must be one of"):
        c.spawn_group([member], strategy="all_for_none")
    with pytest.raises(errors.UsageError, match="a group's child is a function"):
        c.spawn_group([42])


# -- malformed frames --------------------------------------------------------------------------

def scribble():
    """When told, write garbage on this process's own channel to its node."""
    from clusterctl.node.processes.runtime import _current

    receive()
    _current().sock.sendall(b"this is no frame at all, just bytes")
    receive()


def test_garbage_from_a_process_ends_that_process_only(make_local_cluster):
    """A process that writes garbage on its channel is ended, its monitor told why; the
    node and its other processes go on."""
    c = make_local_cluster()
    c.spawn(kvs, node="n1", name="calm")
    scribbler = c.spawn(scribble, node="n1")
    down = ended(c, scribbler, then=lambda: c.send(scribbler, "go"))
    assert "garbage on its channel" in down.reason, down
    assert c.call("calm", ("store", "k", 1), timeout=5) is True


def test_the_hubs_frames_from_anyone_else_are_ignored_and_malformed_ones_refused(make_local_cluster, env):
    """relay, names, nodedown... come from the hub's watch connection only: from a
    program's connection they are ignored (and logged); a malformed one ends that
    connection; the node and its processes go on."""
    c = make_local_cluster()
    c.spawn(kvs, node="n1", name="calm")
    conn = c.connect("n1")
    conn.send({"op": "nodedown", "node": "n2", "reason": "a lie"})
    conn.send({"op": "names", "set": {"calm": "n2.1"}})
    assert c.call("calm", ("store", "k", 1), timeout=5) is True  # (still here: names untouched)
    wait_for(lambda: "is the hub's to send" in env.node_log("n1"), 5, message="the node to log it")
    conn.send({"op": "relay", "node": "n1", "src": "n2", "s": "x", "q": -1})  # q: not a count
    wait_for(lambda: conn.lost is not None, 5, message="the connection to be ended")
    c2 = make_local_cluster()
    assert c2.call("calm", ("lookup", "k"), timeout=5) == 1
