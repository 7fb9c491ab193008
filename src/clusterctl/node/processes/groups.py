"""A supervision group: a spawned process that starts its children on its node, links to
them, and restarts them as OTP's supervisors do (one_for_one, one_for_all,
rest_for_one), with one restart intensity for the group. It is ordinary process code:
``Cluster.spawn_group`` spawns ``supervise``. Ships to hosts: the standard library only.
See docs/how-it-works.md, section "Spawned processes".
"""

from __future__ import annotations

import time

from .runtime import Exit, caller, kill, link, receive, reply, spawn, trap_exits
from .runtime import exit as end
from ..supervision import Restarts, to_restart


def supervise(children: list, strategy: str = "one_for_one", intensity: int = 3,
              period: float = 5.0) -> None:
    """Run the group: ``children`` are ``(function, args, kwargs, options)`` with options
    ``name`` and ``restart`` (permanent, transient, temporary). Answers the call
    "children" with their ids (None for one that is down). More than ``intensity``
    restarts within ``period`` seconds and the group ends, and its children with it."""
    trap_exits()
    group = Restarts("permanent", intensity, period)
    pids: list = [None] * len(children)

    def start(i: int) -> None:
        fn, args, kwargs, options = children[i]
        pids[i] = spawn(fn, *args, name=options.get("name"), **kwargs)
        link(pids[i])

    for i in range(len(children)):
        start(i)
    while True:
        msg = receive()
        if isinstance(msg, Exit) and msg.process in pids:
            i = pids.index(msg.process)
            pids[i] = None
            kind = children[i][3].get("restart", "permanent")
            if not Restarts(kind).wanted(msg.reason != "normal"):
                continue
            if not group.allow(time.monotonic()):
                end("restarted %d times within %g s: the group gives up; last: %s ended: %s"
                    % (intensity, period, msg.process, msg.reason))
            again = to_restart(strategy, len(children), i)
            stopping = [pids[j] for j in again if pids[j] is not None]
            for pid in stopping:
                pids[pids.index(pid)] = None
                kill(pid)
            while stopping:  # (their names are free once they have ended)
                gone = receive(match=lambda m: isinstance(m, Exit) and m.process in stopping)
                stopping.remove(gone.process)
            for j in again:
                start(j)
        elif msg == "children" and caller() is not None:
            reply(list(pids))
