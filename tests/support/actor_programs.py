"""What the spawned-process tests run in their processes, and how they drive them.

The functions travel by value (this module is registered for it), as a user's script
functions do.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle

from clusterctl.actor import call, caller, receive, register, reply, self, send, sender, whereis
from clusterctl.hub import place
from helpers import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def alive(pid: int) -> bool:
    """The process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def hub_pid(env) -> int | None:
    """The pid of the test's hub, if one was started."""
    return place.read_pid(str(env.run_dir / "hub"))


def stream_through_a_hub_kill(c, env, restart, *, sink_node: str, source_node: str,
                              n: int = 600) -> None:
    """A process on ``source_node`` sends ``n`` numbers, 5 ms apart, to one named "sink"
    on ``sink_node``; the hub is SIGKILLed mid-stream and ``restart(c)`` has a new one
    watch the nodes again. Every number arrives once and in order, and no process was
    restarted (the processes belong to their nodes, not to the hub)."""
    sink = c.spawn(consumer, node=sink_node, name="sink")
    source = c.spawn(sends_to, "sink", list(range(n)), 0.005, node=source_node)
    os_pids = {row["id"]: row["pid"] for row in c.processes()}
    assert set(os_pids) == {sink, source}
    old = hub_pid(env)
    assert old is not None and alive(old)

    def report() -> list:
        return c.call(sink, "report", timeout=10)

    wait_for(lambda: len(report()) >= 40, 15, message="messages flowing")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), 5, message="the hub gone")
    assert all(alive(p) for p in os_pids.values())
    assert len(report()) < n, "the stream ended before the hub was killed"

    rows = restart(c)
    new = hub_pid(env)
    assert new not in (None, old) and alive(new)
    assert sink in {row["id"] for row in rows}  # nothing restarted (the source may be done):
    assert all(os_pids.get(row["id"]) == row["pid"] for row in rows)
    got = wait_for(lambda: (lambda g: g if len(g) >= n else None)(report()), 20, 0.05, f"{n} messages")
    assert got == list(range(n))
    ended(c, source)  # (it sent everything, and ended normally)
    time.sleep(0.5)  # a frame sent twice would come now
    assert report() == list(range(n))
    assert [row["id"] for row in c.processes()] == [sink] and alive(os_pids[sink])


def ended(cluster, proc, then=None, timeout=10.0):
    """Watch ``proc``, do ``then()``, and return its Down."""
    watch = cluster.monitor(proc)
    if then is not None:
        then()
    down = watch.wait(timeout)
    assert down is not None, f"{proc} did not end within {timeout} s"
    return down


def register_as(name):
    register(name)
    return whereis(name)


def sleeper():
    time.sleep(600)  # never receives; down or kill ends it


def kvs():
    """A key-value server; other messages make it crash, stop, stall or ignore a call."""
    table = {}
    while True:
        msg = receive()
        op = msg[0]
        if op == "store":
            table[msg[1]] = msg[2]
            reply(True)
        elif op == "lookup":
            reply(table.get(msg[1]))
        elif op == "whoami":
            reply(self())
        elif op == "crash":
            raise ValueError("asked to crash: %s" % msg[1])
        elif op == "stop":
            return
        elif op == "slow":
            time.sleep(msg[1])
            reply("slow done")
        elif op == "ignore":
            pass


def runner():
    """Runs ``fn(*args)`` for each call ``(fn, args)`` it gets, and replies with the outcome:
    the in-process API, driven from the test."""
    while True:
        fn, args = receive()
        to = caller()  # (fn may receive messages itself)
        try:
            value = ("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - the outcome is the test's to check
            value = ("raised", type(exc).__name__, str(exc))
        reply(value, to=to)


def run_in(cluster, proc, fn, *args):
    """``fn(*args)`` inside the runner process ``proc``: ("ok", value) or ("raised", type, text)."""
    return cluster.call(proc, (fn, args), timeout=20)


def call_from_inside(to, msg, timeout=10):
    return call(to, msg, timeout=timeout)


def hold():
    """Takes the calls "hold" and never answers them; answers "status" with how many."""
    held = []
    while True:
        msg = receive()
        if msg == "hold":
            held.append(caller())
        elif msg == "status":
            reply(len(held))


def known(to):
    """Wait until this node knows where the name ``to`` is (the hub pushes the world's
    names to every node); an id is known at once."""
    deadline = time.monotonic() + 5
    while "." not in to and whereis(to) is None and time.monotonic() < deadline:
        time.sleep(0.01)


def sends_to(to, msgs, pause=0.0):
    known(to)
    for msg in msgs:
        send(to, msg)
        if pause:
            time.sleep(pause)


def collect(n):
    """Take ``n`` messages (with who sent them), then answer the call "report" with them."""
    got = [(receive(match=lambda m: m != "report"), sender()) for _ in range(n)]
    receive(match=lambda m: m == "report")
    reply(got)


def consumer():
    """Keep every message; answer the call "report" with what came so far."""
    got = []
    while True:
        msg = receive()
        if msg == "report":
            reply(got)
        else:
            got.append(msg)


def prints_then_waits(n: int) -> None:
    """Prints ``n`` lines to stdout and one to stderr, then waits for a message to end."""
    for i in range(n):
        print("line", i)
    print("a warning", file=sys.stderr)
    receive()


def prints_what_it_gets() -> None:
    """Prints each message it gets, until "stop" (which it prints too)."""
    while True:
        msg = receive()
        print("got", msg, flush=True)
        if msg == "stop":
            return
