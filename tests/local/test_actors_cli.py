"""Spawned processes from the shell: ``clusterctl spawn``, ``ps``, ``send``, ``call``,
``kill`` and the completion of their TO, as users run them: real commands in
subprocesses, real local nodes (the ``local_hosts_env`` fixture's n1, n2, brought down after each
test). Every process outlives the command that spawned it, so each step below is a
command of its own, as from a shell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from helpers import script, wait_for

pytestmark = [pytest.mark.local_only, pytest.mark.timeout(60)]

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "examples")
KVS = os.path.join(EXAMPLES, "kvs.py")

# What the tests' processes run: a script in the test's directory (it travels by value).
INBOX = """
    import time

    from clusterctl.actor import receive, reply


    def collect():
        \"\"\"Keep what it is sent; answer the call 'collected' with all of it.\"\"\"
        got = []
        while True:
            msg = receive()
            if msg == "collected":
                reply(got)
            else:
                got.append(msg)


    def silent():
        \"\"\"Take every message, answer none.\"\"\"
        while True:
            receive()


    def crash_later(text, after):
        time.sleep(after)
        raise RuntimeError(text)


    def refuse(text):
        raise ConnectionRefusedError(text)
"""

PS_KEYS = {"id", "name", "node", "function", "state", "uptime", "mailbox", "restarts",
           "restart", "memory", "pid", "reason", "ended", "error", "traceback", "restarted_as"}
ID = re.compile(r"^n[12]\.\d+$")


def ok(local_hosts_env, *args, **kwargs) -> str:
    """Run ``clusterctl ARGS``; it must succeed; its stdout."""
    result = local_hosts_env.cli(*args, **kwargs)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def assert_clean_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """One error line (no traceback of ours) with the expected exit code."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def spawn(env, *args: str) -> str:
    """``clusterctl spawn ARGS``: the id it printed."""
    pid = ok(env, "spawn", *args).strip()
    assert ID.match(pid), pid
    return pid


def ps_rows(env, *args: str) -> list[dict]:
    """``clusterctl --json ps ARGS``: its processes (no node may have failed to answer)."""
    answer = json.loads(ok(env, "--json", "ps", *args))
    assert answer["errors"] == {}, answer
    return answer["processes"]


def cells(line: str) -> list[str]:
    """A line of ``ps``'s table as its cells (two spaces or more apart; "55 B" is one)."""
    return re.split(r"\s{2,}", line.strip())


def completions(env, words: str) -> list[str]:
    """What bash completion offers for the last of ``words`` (``clusterctl ...``)."""
    result = subprocess.run(
        [sys.executable, "-m", "clusterctl"], capture_output=True, text=True, cwd=env.cwd,
        timeout=30, env={**os.environ, "_CLUSTERCTL_COMPLETE": "bash_complete",
                         "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)})
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if "," in line]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def node_daemons(env) -> list[tuple[int, str]]:
    """The test's node processes (not its hub)."""
    return [p for p in env.node_processes() if "clusterctl_node" in p[1]]


# -- the README's key-value server ----------------------------------------------------------

def test_the_kvs_example_from_the_shell(local_hosts_env):
    pid = spawn(local_hosts_env, "--name", "kvs", KVS, "serve")
    # each command below is a new program: the process outlived the one that spawned it
    assert ok(local_hosts_env, "call", "kvs", "('store', 'a', 1)") == "True\n"
    assert ok(local_hosts_env, "call", "kvs", "('lookup', 'a')") == "1\n"
    assert ok(local_hosts_env, "call", pid, "('lookup', 'zz')") == "None\n"  # by id, too

    table = ok(local_hosts_env, "ps").splitlines()
    assert table[0].split() == ["id", "name", "node", "function", "state", "uptime", "mailbox",
                                "restarts", "memory"]
    [row] = [cells(line) for line in table[1:]]
    assert row[:5] == [pid, "kvs", pid.split(".")[0], "serve", "running"], table
    assert row[7] == "0"

    answer = json.loads(ok(local_hosts_env, "--json", "ps"))
    assert answer["errors"] == {}
    [proc] = answer["processes"]
    assert set(proc) == PS_KEYS
    assert (proc["id"], proc["name"], proc["node"], proc["state"], proc["restarts"],
            proc["restart"], proc["reason"]) == (pid, "kvs", pid.split(".")[0], "running", 0,
                                                 "temporary", None)
    assert isinstance(proc["pid"], int) and alive(proc["pid"])
    assert proc["uptime"] >= 0 and proc["memory"] > 0

    taken = local_hosts_env.cli("spawn", "--name", "kvs", KVS, "serve")
    assert_clean_error(taken, 1, "the name kvs is taken by " + pid)

    assert ok(local_hosts_env, "kill", "kvs") == f"killed {pid}\n"
    gone = local_hosts_env.cli("call", "kvs", "('lookup', 'a')")
    assert_clean_error(gone, 1, "no process is registered as kvs", "clusterctl ps")
    assert gone.stdout == ""
    wait_for(lambda: not alive(proc["pid"]), 5, message="the killed process gone")
    gone = ok(local_hosts_env, "ps").splitlines()  # listed apart, as one that ended
    assert gone[:3] == ["no processes running", "", "ended recently:"], gone
    assert re.fullmatch(rf"{re.escape(pid)} \(kvs\)  serve  ended \S+ ago: killed", gone[3]), gone


def test_spawn_json_node_and_a_module_target(local_hosts_env):
    # a module importable on the node: time.sleep(600), a trivial long-lived process
    answer = json.loads(ok(local_hosts_env, "--json", "spawn", "--node", "n2", "--name", "nap",
                           "time", "sleep", "600"))
    assert answer["node"] == "n2" and answer["name"] == "nap"
    assert answer["id"].startswith("n2.")
    [row] = ps_rows(local_hosts_env, "--nodes", "n2")
    assert (row["id"], row["node"], row["state"]) == (answer["id"], "n2", "running")
    assert "sleep" in row["function"]
    assert ps_rows(local_hosts_env, "--nodes", "n1") == []

    bad = local_hosts_env.cli("spawn", "--node", "n1", "no_such_module_xyz", "f")
    assert_clean_error(bad, 1, "no_such_module_xyz", "importable on the node")
    assert [r["id"] for r in ps_rows(local_hosts_env)] == [answer["id"]]  # nothing left of it


@pytest.mark.parametrize("args, message", [
    (["inbox.py", "nope"], "inbox.py defines no function 'nope' (it defines: collect, "
                           "crash_later, refuse, silent)"),
    (["missing.py", "serve"], "no script missing.py"),
    (["--name", "bad name", "inbox.py", "collect"], "'bad name'"),
])
def test_spawn_usage_errors(local_hosts_env, args, message):
    script(local_hosts_env, INBOX, "inbox.py")
    result = local_hosts_env.cli("spawn", *args)
    assert_clean_error(result, 2, message)
    assert result.stdout == ""
    assert node_daemons(local_hosts_env) == []  # refused before any node was asked


def test_a_bad_restart_type_is_a_click_choice_error(local_hosts_env):
    result = local_hosts_env.cli("spawn", "--restart", "bogus", KVS, "serve")
    assert result.returncode == 2, result.stderr
    assert "'bogus' is not one of 'temporary', 'transient', 'permanent'" in result.stderr
    assert "Traceback" not in result.stderr


# -- messages -------------------------------------------------------------------------------

def test_send_then_call_with_messages_read_as_literals_or_strings(local_hosts_env):
    script(local_hosts_env, INBOX, "inbox.py")
    pid = spawn(local_hosts_env, "--name", "inbox", "inbox.py", "collect")  # a relative path
    for msg in ("[1, 2]", "hello", "('store', 'a', 1)", "{'k': None}", "os.getpid()"):
        sent = local_hosts_env.cli("send", "inbox", msg)
        assert (sent.returncode, sent.stdout, sent.stderr) == (0, "", "")
    ok(local_hosts_env, "send", "--", pid, "-3.5")  # by id; a negative number after --
    want = [[1, 2], "hello", ("store", "a", 1), {"k": None}, "os.getpid()", -3.5]
    assert ok(local_hosts_env, "call", "inbox", "collected") == repr(want) + "\n"
    as_json = json.loads(ok(local_hosts_env, "--json", "call", pid, "'collected'"))
    assert as_json == {"to": pid, "result": json.loads(json.dumps(want))}


def test_a_call_nobody_answers_times_out_in_one_line(local_hosts_env):
    script(local_hosts_env, INBOX, "inbox.py")
    spawn(local_hosts_env, "--name", "quiet", "inbox.py", "silent")
    started = time.monotonic()
    result = local_hosts_env.cli("call", "--timeout", "0.5", "quiet", "ping")
    assert time.monotonic() - started < 10
    assert_clean_error(result, 1, "no result within 0.5 s", "--timeout")
    assert result.stdout == ""
    [row] = ps_rows(local_hosts_env)
    assert (row["name"], row["state"]) == ("quiet", "running")  # it takes messages still


# -- supervision -------------------------------------------------------------------------------

def test_a_permanent_crasher_is_restarted_then_stays_down_as_failed(local_hosts_env):
    script(local_hosts_env, INBOX, "inbox.py")
    spawn(local_hosts_env, "--name", "flaky", "--restart", "permanent", "--intensity", "2",
          "--period", "30", "inbox.py", "crash_later", "'again'", "0.8")

    def flaky(state: str, restarted: bool = False) -> dict | None:
        """Its ``ps`` row in ``state`` (once restarted), or None."""
        return next((r for r in ps_rows(local_hosts_env) if r["name"] == "flaky" and r["state"] == state
                     and (r["restarts"] > 0 or not restarted)), None)

    # each run lasts 0.8 s: restarted, it runs again for a while before it fails for good
    restarted = wait_for(lambda: flaky("running", restarted=True), 10, message="a restart")
    assert restarted["restart"] == "permanent"
    failed = wait_for(lambda: flaky("failed"), 10, message="the failed row")
    assert failed["restarts"] == 2
    assert "restarted 2 times within 30 s (the limit)" in failed["reason"]
    assert "RuntimeError: again" in failed["reason"]
    table = ok(local_hosts_env, "ps", env={"COLUMNS": "200"})
    [row] = [cells(line) for line in table.splitlines()
             if line.startswith(failed["id"] + " ") and "the limit" not in line]
    assert row[1:5] == ["flaky", failed["node"], "crash_later", "failed"] and row[7] == "2"
    # why it stays down: a whole line under the table
    assert f"{failed['id']} (flaky): {failed['reason']}" in table.splitlines()
    # the name is free again: a call by name finds no process
    assert_clean_error(local_hosts_env.cli("call", "flaky", "'x'"), 1, "no process is registered as flaky")


# -- shell completion --------------------------------------------------------------------------

def test_to_completes_with_names_and_ids(local_hosts_env):
    # (each on a node of its own: an id's prefix "n1." then names one process)
    pid = spawn(local_hosts_env, "--node", "n1", "--name", "kvs", KVS, "serve")
    other = spawn(local_hosts_env, "--node", "n2", "time", "sleep", "600")
    assert completions(local_hosts_env, "clusterctl call k") == ["kvs"]
    assert completions(local_hosts_env, "clusterctl send " + pid[:3]) == [pid]
    assert completions(local_hosts_env, "clusterctl kill kvs n2.") == [other]
    offered = completions(local_hosts_env, "clusterctl call ''")
    assert set(offered) == {"kvs", pid, other}, offered


# -- down ------------------------------------------------------------------------------------

def test_down_ends_every_spawned_process(local_hosts_env):
    script(local_hosts_env, INBOX, "inbox.py")
    spawn(local_hosts_env, "--node", "n1", "--restart", "permanent", "inbox.py", "silent")
    spawn(local_hosts_env, "--node", "n2", "--name", "kvs", KVS, "serve")
    rows = ps_rows(local_hosts_env)
    pids = [row["pid"] for row in rows]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    said = ok(local_hosts_env, "down")
    ended = said.split("ended with them: ")[1].strip().split(", ")
    assert sorted(ended) == sorted(f"{row['id']} (kvs)" if row["name"] == "kvs" else row["id"]
                                   for row in rows), said
    wait_for(lambda: not any(alive(p) for p in pids), 5, message="the processes gone")
    assert node_daemons(local_hosts_env) == []


# -- what the commands get wrong (these tests fail until it is fixed) -------------------------

def test_a_negative_number_is_a_message_as_it_is_an_rpc_argument(local_hosts_env):
    """MSG is read "as rpc's args" (README), and ``rpc n1 builtins abs -5`` works: the
    commands ending in values are ``CallCommand``s, for which ``-5`` is no option. FAILS:
    send and call are plain click commands, so ``send inbox -1`` is "No such option '-1'"
    (exit 2)."""
    script(local_hosts_env, INBOX, "inbox.py")
    spawn(local_hosts_env, "--name", "inbox", "inbox.py", "collect")
    ok(local_hosts_env, "send", "inbox", "-1")
    assert ok(local_hosts_env, "call", "inbox", "collected") == "[-1]\n"


def test_ps_prints_the_whole_reason_a_process_stays_down_on_80_columns(local_hosts_env):
    """A failed row's reason is what ``ps`` is read for. It goes below the row (the
    render's docstring) and must stay whole on a terminal of 80 columns, as ``world``'s
    failures do (wrapped between words, never cut). FAILS: the reason is a row of the
    table in the narrow ``name`` column, so rich folds it there and cuts its long words
    (``restart…``, ``Connectio…``: render/actors.py, ps_table)."""
    script(local_hosts_env, INBOX, "inbox.py")
    spawn(local_hosts_env, "--node", "n2", "time", "sleep", "600")  # a process that runs, beside it
    gate = local_hosts_env.cli("spawn", "--node", "n1", "--name", "gate", "--restart", "permanent",
                               "--intensity", "1", "inbox.py", "refuse", "'port 5432 is closed'")
    assert gate.returncode == 1 and "ConnectionRefusedError: port 5432 is closed" in gate.stderr
    [failed] = wait_for(lambda: [r for r in ps_rows(local_hosts_env) if r["state"] == "failed"], 10,
                        message="the failed row")
    assert "ConnectionRefusedError: port 5432 is closed" in failed["reason"]
    table = ok(local_hosts_env, "ps", env={"COLUMNS": "80"})
    words = " ".join(table.split())  # wrapped lines are fine; cut words are not
    assert " ".join(failed["reason"].split()) in words, table


def test_completion_and_ps_start_no_node(local_hosts_env):
    """Completion asks the running nodes only ("nodes that are not running are not
    started", complete_processes), and ps lists the running nodes' processes. FAILS:
    both start the hub, which starts every node (``Processes.processes`` calls
    ``NodeLinks.ensure_hub``, whose ``watch_all`` pings the world through the hub)."""
    assert completions(local_hosts_env, "clusterctl call k") == []
    assert node_daemons(local_hosts_env) == [], "completion started the nodes"
    assert ok(local_hosts_env, "ps") == "no processes\n"
    assert node_daemons(local_hosts_env) == [], "ps started the nodes"
