"""A spawned process that ends as it starts, as users meet it (issue 25, item 5): the
``spawn`` command that started it says so, and ``ps`` lists it afterwards among the
processes that ended, with its reason. Real commands in subprocesses over real local
nodes (the ``local_hosts_env`` fixture's n1, n2, brought down after each test)."""

from __future__ import annotations

import json
import re

import pytest

from helpers import script

pytestmark = [pytest.mark.local_only, pytest.mark.timeout(60)]

JOBS = """
    import time


    def task(x):
        return x


    def boom():
        raise ValueError("bad config: port must be a number")


    def quick():
        return 42


    def nap():
        time.sleep(600)
"""

ID = re.compile(r"\bn[12]\.\d+\b")


def ok(where, *args, **kwargs) -> str:
    """Run ``clusterctl ARGS`` in the test's environment ``where``; it must succeed; its stdout."""
    result = where.cli(*args, **kwargs)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def ps_rows(env) -> list[dict]:
    answer = json.loads(ok(env, "--json", "ps"))
    assert answer["errors"] == {}, answer
    return answer["processes"]


def line_of(table: str, pid: str) -> str:
    """The line of ``ps``'s text that begins with ``pid`` (with its wrapped rest joined)."""
    lines = table.splitlines()
    [start] = [i for i, line in enumerate(lines) if line.split()[:1] == [pid]]
    rest = [line for line in lines[start + 1:start + 4] if line.startswith("    ")]
    return " ".join(" ".join([lines[start]] + rest).split())


@pytest.mark.parametrize("fun, reason", [
    ("task", "TypeError: task() missing 1 required positional argument: 'x'"),
    ("boom", "ValueError: bad config: port must be a number"),
])
def test_a_process_that_crashes_as_it_starts_fails_its_spawn(local_hosts_env, fun, reason):
    env = local_hosts_env
    script(env, JOBS, "jobs.py")
    result = env.cli("spawn", "--node", "n1", "jobs.py", fun)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: n1.") and first.endswith(
        f" ({fun}) crashed as it started: {reason}"), result.stderr
    assert "clusterctl" not in result.stderr.partition("\n")[2]  # (no frame of ours under it)
    if fun == "boom":
        assert "in boom" in result.stderr and "remote traceback (node n1)" in result.stderr
    pid = ID.search(first).group()

    [row] = [r for r in ps_rows(env) if r["id"] == pid]
    assert (row["state"], row["reason"], row["function"], row["error"]) == \
        ("crashed", reason, fun, reason.split(":")[0])
    assert row["ended"] > 0 and row["memory"] is None
    table = ok(env, "ps", env={"COLUMNS": "200"})
    assert table.startswith("no processes running\n"), table
    assert "ended recently" in table
    assert re.fullmatch(rf"{re.escape(pid)} {fun} crashed \S+ ago: {re.escape(reason)}",
                        line_of(table, pid)), table


def test_a_process_that_returns_at_once_is_spawned_and_listed_as_ended(local_hosts_env):
    env = local_hosts_env
    script(env, JOBS, "jobs.py")
    result = env.cli("spawn", "--node", "n2", "jobs.py", "quick")
    assert result.returncode == 0, result.stderr  # a normal end is no failure
    pid = result.stdout.strip()
    assert ID.fullmatch(pid), result.stdout
    assert f"{pid} has ended already: normal" in result.stderr
    [row] = ps_rows(env)
    assert (row["id"], row["state"], row["reason"], row["error"]) == (pid, "ended", "normal", None)
    table = ok(env, "ps")
    assert table.startswith("no processes running\n"), table
    assert re.fullmatch(rf"{re.escape(pid)} quick ended \S+ ago: normal",
                        line_of(table, pid)), table


def test_ps_at_80_columns_keeps_names_whole_and_wraps_reasons_between_words(local_hosts_env):
    env = local_hosts_env
    script(env, JOBS, "jobs.py")
    running = ok(env, "spawn", "--node", "n2", "--name", "inventory-service-primary",
                 "jobs.py", "nap").strip()
    failed = env.cli("spawn", "--node", "n1", "--name", "database-gateway-replica",
                     "jobs.py", "task")
    assert failed.returncode == 1, failed.stdout
    table = ok(env, "ps", env={"COLUMNS": "80"})
    assert all(len(line) <= 80 for line in table.splitlines()), table
    [row] = [line for line in table.splitlines() if line.startswith(running + " ")]
    assert "inventory-service-primary" in row.split() and "nap" in row.split(), table
    words = table.split()  # wrapped lines are fine; cut words are not
    for word in "(database-gateway-replica) task crashed TypeError: task() missing 1 required " \
                "positional argument: 'x'".split():
        assert word in words, table
