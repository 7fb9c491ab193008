"""Whether a process just spawned lived through its first moments: what ``clusterctl
spawn`` asks before it prints the id, so that a process that dies at once (a missing
argument, a bad configuration) is an error there and then, with its reason, rather than
a line in the node's log and an empty ``ps``.

``Cluster.spawn`` itself does not wait: as Erlang's spawn, it returns once the process
runs its function, and a program hears of an end from ``monitor`` (or finds it in
``processes().ended``), so spawning a hundred processes costs no hundred waits. A
command exits right after it spawned, with nobody left to hear a ``Down``: it looks
before it goes.
"""

from __future__ import annotations

import time

from clusterctl import errors
from clusterctl.node.addresses import node_of

RUNNING = ("running", "starting")  # the states of a process's row while it runs


def early_end(cluster, pid: str, grace: float) -> dict | None:
    """None if the process ``pid``, just spawned on ``cluster``, still runs ``grace``
    seconds later; else the ``processes()`` row that says how it ended. One that was
    restarted is followed to its latest run, watched until the same time is up: the row
    returned is then that run's ("running" if it still runs, "failed" if it stays down
    after too many restarts). Returns as soon as the answer is known."""
    deadline = time.monotonic() + grace
    watched, row = pid, None
    while grace > 0:
        down = cluster.monitor(watched).wait(max(0.0, deadline - time.monotonic()))
        if down is None:
            return row  # (None for pid itself)
        row = _latest(cluster, watched, down)
        if row.get("state") not in RUNNING or time.monotonic() >= deadline:
            return row
        watched = row["id"]
    return None


def _latest(cluster, pid: str, down) -> dict:
    """The row of how ``pid`` (which ``down`` says ended) ended, or of the latest run it
    was restarted as."""
    node = node_of(pid)
    rows = cluster.processes([node])
    if node in rows.errors:
        raise rows.errors[node]
    known = {row["id"]: row for row in [*rows, *rows.ended]}
    row = known.get(pid)
    for _ in range(len(known)):  # (ids only grow along restarts; bounded all the same)
        if row is None or row.get("restarted_as") not in known:
            break
        row = known[row["restarted_as"]]
    if row is None:  # (its node keeps a bounded number of rows: more ended since)
        row = {"id": pid, "name": None, "node": node, "function": "?", "reason": down.reason,
               "state": "ended" if down.reason in ("normal", "killed") else "crashed",
               "error": None, "traceback": down.traceback or None}
    return row


def start_error(row: dict) -> errors.ClusterError:
    """The error of a process that crashed as it started (or stays down, restarted too
    often), from its row: a ``RemoteError`` with the exception's type and traceback when
    it raised one, else a ``ProcessError``. The message names the process and says why
    it ended."""
    who = f"{row['id']} ({row.get('name') or row.get('function') or '?'})"
    reason = row.get("reason") or "?"
    how = "did not keep running" if row.get("state") == "failed" else "crashed as it started"
    message = f"{who} {how}: {reason}"
    kind = row.get("error")
    if not kind:
        return errors.ProcessError(message)
    text = reason[len(kind) + 2:] if reason.startswith(kind + ": ") else reason
    traceback = row.get("traceback") or ""
    if '  File "' not in traceback:  # (it raised before any line of its own ran: the
        traceback = ""  # traceback would only say the reason again)
    error = errors.RemoteError(row.get("node") or node_of(row["id"]) or "?", kind, text, traceback)
    error.message, error.args = message, (message,)  # (the id names the node already)
    return error
