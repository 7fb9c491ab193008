"""What the spawned-process tests run in their processes, and how they drive them.

The functions travel by value (this module is registered for it), as a user's script
functions do.
"""

from __future__ import annotations

import sys
import time

import cloudpickle

from clusterctl.actor import call, caller, receive, register, reply, self, send, sender, whereis

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def alive(pid: int) -> bool:
    """The process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
