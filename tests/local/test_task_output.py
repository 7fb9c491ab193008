"""What tasks print reaches the person who ran them: each line on the command's stderr,
prefixed with its node and item, in order, bounded, and never mixed into the results."""

from __future__ import annotations

import re
import sys
import time

import pytest

from helpers import lines, script


class Shown:
    """Collects what a cluster's ``task_output`` shows: (when, where, line)."""

    def __init__(self, cluster) -> None:
        self.lines: list[tuple[float, str, str]] = []
        cluster.task_output.write = lambda where, line: self.lines.append(
            (time.monotonic(), where, line))

    def of(self, where_pattern: str) -> list[str]:
        return [line for _, where, line in self.lines if re.fullmatch(where_pattern, where)]


def chatty(x):
    import sys

    print("item", x, "out")
    print("item", x, "err", file=sys.stderr)
    return x * x


def test_every_printed_line_reaches_the_controller_once_named_by_node_and_item(cluster):
    shown = Shown(cluster)
    # (speculation off: an item run twice, on two slots, prints twice)
    assert list(cluster.pmap(chatty, range(40), speculate=False)) == [x * x for x in range(40)]
    by_item: dict[int, list[str]] = {}
    for _, where, line in shown.lines:
        node, item = re.fullmatch(r"(n[12])\[(\d+)\]", where).groups()
        by_item.setdefault(int(item), []).append(line)
    assert sorted(by_item) == list(range(40))
    for item, got in by_item.items():  # each once, stdout's and stderr's, in its order
        assert got == [f"item {item} out", f"item {item} err"], got
    assert cluster.rpc("n2", print, "from", "a", "call") is None
    assert shown.of("n2")[-1:] == ["from a call"]


def late_printer(seconds):
    import time

    print("started", flush=True)
    time.sleep(seconds)
    print("ended", end="")  # (no newline: the task's end sends it)
    return "done"


def test_a_line_is_seen_while_its_task_still_runs_and_before_its_result(cluster):
    shown = Shown(cluster)
    cluster.rpc("n1", late_printer, 0.01)  # (warm: the node and the function are there)
    shown.lines.clear()
    asked = time.monotonic()
    assert cluster.rpc("n1", late_printer, 1.5) == "done"
    answered = time.monotonic()
    assert [line for _, _, line in shown.lines] == ["started", "ended"]
    started_at = shown.lines[0][0]
    assert started_at - asked < 1.0, "the first line waited for its task to end"
    assert shown.lines[1][0] <= answered


def flood(x):
    for k in range(3000):
        print(x, k)
    return x


@pytest.mark.local_only  # (the same code on any transport)
def test_a_chatty_function_is_bounded_and_what_was_dropped_is_counted(cluster):
    shown = Shown(cluster)
    started = time.monotonic()
    assert list(cluster.pmap(flood, range(4), chunksize=1)) == [0, 1, 2, 3]
    assert time.monotonic() - started < 30
    output = cluster.task_output
    assert 0 < len(shown.lines) < 4 * 3000
    assert output.dropped_on_nodes > 0
    assert len(shown.lines) + output.dropped_on_nodes + output.dropped == 4 * 3000
    note = output.summary()
    assert f"{output.dropped_on_nodes:,} lines on the nodes" in note
    cluster.close()  # says it once, at the end
    assert shown.lines[-1][1:] == ("clusterctl", note)
    assert output.summary() is None


def escapes(x):
    print("\x1b[2J\x1b]0;owned\x07cleared?")
    return x


@pytest.mark.local_only  # (the same code on any transport)
def test_control_characters_from_a_node_never_reach_the_terminal(cluster):
    shown = Shown(cluster)
    cluster.rpc("n1", escapes, 1)
    assert [line for _, _, line in shown.lines] == ["?[2J?]0;owned?cleared?"]


def forks_a_printer(x):
    import os
    import sys

    pid = os.fork()
    if pid == 0:  # a child printing on what it inherited: not the worker's channel
        print("from the child " * 50)
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    print("from the task", x)
    return x


@pytest.mark.local_only
def test_a_child_the_task_forks_cannot_write_into_the_channel(local_cluster):
    shown = Shown(local_cluster)
    assert [local_cluster.rpc("n1", forks_a_printer, i) for i in range(3)] == [0, 1, 2]
    assert list(local_cluster.pmap(chatty, range(8))) == [x * x for x in range(8)]
    assert shown.of("n1") == [f"from the task {i}" for i in range(3)]


def test_quiet_tasks_shows_nothing(make_local_cluster):
    cluster = make_local_cluster(quiet_tasks=True)
    shown = Shown(cluster)
    assert list(cluster.pmap(chatty, range(10))) == [x * x for x in range(10)]
    assert shown.lines == []


def test_the_command_line_shows_prints_on_stderr_and_keeps_stdout_for_results(local_hosts_env):
    env = local_hosts_env
    path = script(env, """
        import sys

        def inputs():
            return range(6)

        def task(x):
            print("working on", x)
            print("careful with", x, file=sys.stderr)
            return x + 100
    """)
    result = env.cli("pmap", path, "--no-summary")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [x + 100 for x in range(6)]
    printed = sorted(result.stderr.splitlines())
    expected = sorted([f"{node}[{x}]: working on {x}" for x in range(6) for node in ("n1", "n2")]
                      + [f"{node}[{x}]: careful with {x}" for x in range(6) for node in ("n1", "n2")])
    assert len(printed) == 12 and all(line in expected for line in printed), result.stderr
    for x in range(6):  # each item's two lines, from the one node that ran it
        assert len({line.split("[")[0] for line in printed if line.split(":")[0].endswith(f"[{x}]")}) == 1
    quiet = env.cli("--quiet-tasks", "pmap", path, "--no-summary")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    piped = env.cli("pipeline", script(env, """
        def inputs():
            return range(3)

        def first(x):
            print("first saw", x)
            return x

        stages = [first, str]
    """, "pipe.py"), "--no-summary")
    assert piped.returncode == 0, piped.stderr
    assert sorted(re.sub(r"^n[12]", "n", line) for line in piped.stderr.splitlines()) == \
        [f"n[{x}]: first saw {x}" for x in range(3)]
    rpc = env.cli("rpc", "n1", "builtins", "print", "hello", "there")
    assert rpc.returncode == 0 and rpc.stderr == "n1: hello there\n", rpc.stderr
