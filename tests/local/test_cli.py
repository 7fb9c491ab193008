"""The real ``clusterctl`` command, run in subprocesses: output, exit codes and errors.

Every error must reach the user as one readable line on stderr (plus the remote
traceback for a remote exception) with its documented exit code, never a traceback of
clusterctl's own code; with ``--json`` stdout carries JSON and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from clusterctl import Cluster
from clusterctl.cli.main import cli

from helpers import end_process, interruptible_cli, wait_for

TWO_NODES = "# two local nodes\nlocal name=n1 slots=1\nlocal name=n2 slots=1\n"


def proc_parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else int(fields[1])


def children(pid: int) -> set[int]:
    return {int(e) for e in os.listdir("/proc") if e.isdigit() and proc_parent(int(e)) == pid}


def sleeping(pid: int) -> bool:
    """The process is blocked in a sleep (``time.sleep``), seen from /proc."""
    try:
        with open(f"/proc/{pid}/wchan") as fh:
            if "nanosleep" in fh.read():
                return True
        with open(f"/proc/{pid}/syscall") as fh:
            number = fh.read().split()[0]
    except (OSError, IndexError):
        return False
    return number in ("35", "230")  # x86-64 nanosleep, clock_nanosleep


def assert_clean_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """One error line (no traceback of ours) with the expected exit code."""
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr


@pytest.fixture
def local_hosts_file(env):
    """./hosts naming local nodes n1, n2 (its path), brought down after: for a test of commands."""
    path = env.hosts_file(TWO_NODES)
    yield path
    with Cluster(str(path)) as closer:
        closer.down()


def world_pids(env) -> dict[str, int]:
    result = env.cli("--json", "world")
    assert result.returncode == 0, result.stderr
    return {row["node"]: row["pid"] for row in json.loads(result.stdout)}


# -- world ----------------------------------------------------------------------------------

WIDE = {"COLUMNS": "200"}  # tables are laid out for the terminal width; keep rows on one line


def test_world_table(env, local_hosts_file):
    result = env.cli("world", env=WIDE)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["node", "host", "status", "python", "slots", "load", "avg", "rtt"]
    assert [r.split()[0] for r in rows] == ["n1", "n2"]
    for row in rows:
        cells = row.split()
        assert cells[1:5] == ["localhost", "pong", "%d.%d.%d" % sys.version_info[:3], "1"]
        assert cells[-1] in ("µs", "ms")
    assert result.stderr == ""


def test_world_of_several_local_nodes(env):
    path = env.hosts_file("local name=a slots=1\nlocal name=b slots=2\nlocal name=c slots=1 idle=60\n",
                          name="many.hosts")
    try:
        result = env.cli("--hosts", str(path), "--json", "world")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        assert [(r["node"], r["status"], r["slots"]) for r in rows] == [
            ("a", "pong", 1), ("b", "pong", 2), ("c", "pong", 1)]
        assert len({r["pid"] for r in rows}) == 3
        assert len(env.node_processes()) == 3 + 4
    finally:
        assert env.cli("--hosts", str(path), "down").returncode == 0
    assert env.node_processes() == []


def test_world_with_an_unstartable_node_exits_3(env):
    env.hosts_file("local name=n1 slots=1\nlocal name=bad slots=1 python=/nonexistent/python3\n")
    try:
        result = env.cli("--json", "world")
        assert result.returncode == 3
        rows = {r["node"]: r for r in json.loads(result.stdout)}
        assert rows["n1"]["status"] == "pong"
        assert rows["bad"]["status"] == "pang" and "no Python" in rows["bad"]["reason"]
    finally:
        env.cli("down")


def test_world_of_many_failing_hosts_at_80_columns(env):
    """Forty SSH hosts that refuse the connection (a loopback port bound but not listening)
    are one row, named as a range, and one message below the table; nothing is cut."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        failing = "".join(f"127.0.0.1:{port} name=h{i}\n" for i in range(1, 41))
        env.hosts_file("local name=n1 slots=1\n" + failing)
        (env.root / "ssh_config").write_text("")
        try:
            result = env.cli("--ssh-config", str(env.root / "ssh_config"), "--known-hosts",
                             str(env.root / "known_hosts"), "world", env={"COLUMNS": "80"})
        finally:
            env.cli("down", "--nodes", "n1")
            env.cli("hub", "--stop")  # the SSH hosts went through the hub
    assert result.returncode == 3, result.stderr
    assert "…" not in result.stdout and result.stderr == ""
    table, details = result.stdout.split("\n\n")
    header, pong, pang = table.splitlines()
    assert pong.split()[:3] == ["n1", "localhost", "pong"]
    assert pang.split() == ["h1-h40", f"127.0.0.1:{port}", "pang:", "connection", "refused",
                            "-", "-", "-", "-"]
    assert " ".join(details.split()) == (
        f"h1-h40 (40 nodes): cannot connect to 127.0.0.1:{port}: Connection refused")
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


# -- rpc ------------------------------------------------------------------------------------

def test_rpc_prints_the_result(env, local_hosts_file):
    result = env.cli("rpc", "n1", "math", "pow", "2", "10")
    assert (result.returncode, result.stdout, result.stderr) == (0, "1024.0\n", "")


@pytest.mark.parametrize("args, printed", [
    (["builtins", "repr", "'a'"], "'a'"),
    (["builtins", "repr", "hello"], "'hello'"),
    (["builtins", "repr", "[1, 2]"], "[1, 2]"),
    (["builtins", "len", "{'k': 1, 'j': 2}"], "2"),
    (["builtins", "abs", "-5"], "5"),
    (["builtins", "repr", "1e3"], "1000.0"),
    (["builtins", "repr", "None"], "None"),
    (["builtins", "repr", "os.getpid()"], "'os.getpid()'"),  # never evaluated
    (["os.path", "join", "a", "b c"], "a/b c"),
])
def test_rpc_arguments_are_literals_or_strings(env, local_hosts_file, args, printed):
    result = env.cli("rpc", "n1", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed + "\n"


def test_rpc_json(env, local_hosts_file):
    result = env.cli("--json", "rpc", "n2", "builtins", "divmod", "7", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"node": "n2", "result": [3, 1]}


def test_unknown_node_is_a_usage_error(env, local_hosts_file):
    result = env.cli("rpc", "n9", "os", "getpid")
    assert_clean_error(result, 2, "no node named 'n9' (2 nodes: n1-n2; hosts file ")
    assert result.stdout == ""
    assert "did you mean" not in result.stderr
    result = env.cli("rpc", "N2", "os", "getpid")
    assert_clean_error(result, 2, "no node named 'N2'; did you mean 'n2'? (2 nodes: n1-n2; ")
    as_json = env.cli("--json", "rpc", "n9", "os", "getpid")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["type"] == "UnknownNodeError"


def test_remote_exception_shows_node_and_remote_traceback(env, local_hosts_file):
    result = env.cli("rpc", "n1", "json", "loads", "{bad")
    assert result.returncode == 1
    note, first, *rest = result.stderr.splitlines()
    assert note == "note: {bad is not a Python literal ('{' was never closed): it is sent as a string"
    assert first.startswith("error: n1: json.decoder.JSONDecodeError: Expecting property name")
    assert rest[0] == "remote traceback (node n1):"
    assert any("json/decoder.py" in line for line in rest)
    assert "clusterctl" not in "\n".join(rest)  # only the user's side of the call
    as_json = json.loads(env.cli("--json", "rpc", "n1", "json", "loads", "{bad").stdout)
    assert as_json["error"]["node"] == "n1"
    assert as_json["error"]["remote_type"] == "json.decoder.JSONDecodeError"
    assert "json/decoder.py" in as_json["error"]["remote_traceback"]


def test_missing_module_and_function(env, local_hosts_file):
    result = env.cli("rpc", "n1", "no_such_module_xyz", "f")
    assert_clean_error(result, 1, "n1: ModuleNotFoundError", "importable on the node")
    result = env.cli("rpc", "n1", "math", "no_such_function")
    assert_clean_error(result, 1, "n1: AttributeError", "no_such_function")


def test_worker_crash_through_the_cli(env, local_hosts_file):
    result = env.cli("rpc", "n1", "os", "abort")
    assert_clean_error(result, 1, "n1:", "SIGABRT", "replaced")
    assert env.cli("rpc", "n1", "operator", "add", "1", "2").stdout == "3\n"


def test_timeout_cancels(env, local_hosts_file):
    result = env.cli("--timeout", "0.5", "rpc", "n1", "time", "sleep", "30")
    assert_clean_error(result, 1, "no result within 0.5 s", "--timeout")
    assert env.cli("rpc", "n1", "operator", "add", "1", "2").stdout == "3\n"


def test_a_generator_result_is_one_line_without_our_frames(env, local_hosts_file):
    result = env.cli("rpc", "n1", "os", "walk", ".")  # os.walk returns a generator
    assert_clean_error(result, 1, "n1: the result could not be pickled: the function returned a "
                                  "generator (return a list instead: list(...) of it)")
    assert "clusterctl" not in result.stderr and "cloudpickle" not in result.stderr


def test_options_after_the_arguments_are_options(env, local_hosts_file):
    result = env.cli("rpc", "n1", "time", "sleep", "30", "--timeout", "0.5")
    assert_clean_error(result, 1, "no result within 0.5 s")
    result = env.cli("multicall", "time", "sleep", "30", "--timeout", "0.5", "--nodes", "n2", env=WIDE)
    assert result.returncode == 3 and "error: no result within" in result.stdout
    assert result.stdout.count("no result") == 1  # n2 only


def test_an_argument_that_starts_with_two_dashes_follows_a_double_dash(env, local_hosts_file):
    result = env.cli("rpc", "n1", "builtins", "repr", "--", "--timeout")
    assert (result.returncode, result.stdout, result.stderr) == (0, "'--timeout'\n", "")
    result = env.cli("multicall", "--nodes", "n1", "operator", "add", "--", "--a", "-b", env=WIDE)
    assert result.returncode == 0 and "--a-b" in result.stdout
    result = env.cli("rpc", "n1", "builtins", "repr", "--timout", "1")  # a typo is not an argument
    assert result.returncode == 2 and result.stdout == ""
    assert "no such option: --timout" in result.stderr and "-- --timout" in result.stderr


# -- multicall and down ---------------------------------------------------------------------

def test_multicall_table_and_json(env, local_hosts_file):
    result = env.cli("multicall", "operator", "mul", "6", "7", env=WIDE)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert rows == [["n1", "│", "42"], ["n2", "│", "42"]]
    as_json = env.cli("--json", "multicall", "operator", "mul", "6", "7")
    assert json.loads(as_json.stdout) == {"n1": {"ok": True, "result": 42},
                                          "n2": {"ok": True, "result": 42}}


def test_multicall_with_a_failing_node_exits_3(env):
    env.hosts_file("local name=n1 slots=1\nlocal name=bad slots=1 python=/nonexistent/python3\n")
    try:
        result = env.cli("multicall", "os", "getpid", env=WIDE)
        assert result.returncode == 3, result.stderr
        assert "error: no Python at '/nonexistent/python3'" in result.stdout
        as_json = json.loads(env.cli("--json", "multicall", "os", "getpid").stdout)
        assert as_json["n1"]["ok"] is True and isinstance(as_json["n1"]["result"], int)
        assert as_json["bad"] == {"ok": False, "error": {
            "type": "NodeStartError", "message": "bad: no Python at '/nonexistent/python3'",
            "hint": "fix python= for this node in the hosts file (./hosts:2)", "node": "bad"}}
    finally:
        env.cli("down")


def test_multicall_where_every_node_raises(env, local_hosts_file):
    result = env.cli("--json", "multicall", "operator", "truediv", "1", "0")
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert {n: d["error"]["remote_type"] for n, d in data.items()} == {
        "n1": "ZeroDivisionError", "n2": "ZeroDivisionError"}


def test_down_leaves_no_process(env, local_hosts_file):
    assert world_pids(env).keys() == {"n1", "n2"}
    result = env.cli("--json", "down")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"n1": "stopped", "n2": "stopped"}
    assert env.node_processes() == []
    again = env.cli("down")
    assert again.returncode == 0 and "not running" in again.stdout


def test_nodes_outlive_the_cli_and_are_reused(env, local_hosts_file):
    first = world_pids(env)
    assert all(proc_parent(pid) is not None for pid in first.values())
    assert env.cli("rpc", "n2", "os", "getppid").stdout == f"{first['n2']}\n"
    assert world_pids(env) == first


# -- bad input -------------------------------------------------------------------------------

def test_malformed_hosts_file_names_file_and_line(env):
    env.hosts_file("local name=n1\n\n# fine so far\nlocal name=n2 slots=zero\n")
    result = env.cli("world")
    assert_clean_error(result, 1, "hosts:4:", "slots")
    as_json = env.cli("--json", "world")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["type"] == "HostsFileError"
    assert env.node_processes() == []


def test_missing_hosts_file(env):
    result = env.cli("--hosts", "nowhere.txt", "world")
    assert_clean_error(result, 1, "nowhere.txt: no such file")
    assert env.node_processes() == []


def test_cookie_readable_by_others_is_refused(env, local_hosts_file):
    assert env.cli("rpc", "n1", "os", "getpid").returncode == 0
    cookie = env.config / "clusterctl" / "cookie"
    cookie.chmod(0o644)
    result = env.cli("rpc", "n1", "os", "getpid")
    assert_clean_error(result, 1, "readable by others", f"chmod 400 {cookie}")
    cookie.chmod(0o400)


@pytest.mark.parametrize("args", [["rpc"], ["rpc", "n1", "os"], ["--timeout", "-1", "world"],
                                  ["--timeout", "abc", "world"], ["no-such-command"],
                                  ["multicall", "--nodes", ",", "os", "getpid"]])
def test_usage_errors_exit_2(env, args):
    result = env.cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_json_output_is_pure_json_everywhere(env, local_hosts_file):
    for args in (["world"], ["rpc", "n1", "os", "getpid"], ["multicall", "os", "getpid"],
                 ["rpc", "n1", "operator", "truediv", "1", "0"], ["down"]):
        result = env.cli("--json", *args)
        json.loads(result.stdout)  # nothing but JSON on stdout


# -- Ctrl-C ----------------------------------------------------------------------------------

def test_ctrl_c_cancels_the_remote_call(env, local_hosts_file):
    node = world_pids(env)["n1"]
    [worker] = children(node)
    proc = interruptible_cli(["rpc", "n1", "time", "sleep", "30"], env.cwd)
    try:
        wait_for(lambda: sleeping(worker), message="the remote sleep to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        end_process(proc)
    assert proc.returncode == 130
    assert err.strip() == "interrupted" and out == ""
    wait_for(lambda: worker not in children(node), timeout=5, message="the sleeping worker to go")
    wait_for(lambda: len(children(node)) == 1, message="a new worker")
    assert world_pids(env)["n1"] == node  # the node itself stays up


@pytest.mark.slow
def test_ctrl_c_during_multicall_cancels_the_remote_calls(env, local_hosts_file):
    pids = world_pids(env)
    proc = interruptible_cli(["multicall", "time", "sleep", "60"], env.cwd)
    try:
        wait_for(lambda: all(any(sleeping(w) for w in children(pid)) for pid in pids.values()),
                 message="the remote sleeps on every node")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # far less than the 60 s sleep
    finally:
        end_process(proc)
    assert proc.returncode == 130 and err.strip() == "interrupted"
    # the nodes killed the sleeping workers and stay up
    wait_for(lambda: not any(sleeping(w) for pid in pids.values() for w in children(pid)),
             message="the remote sleeps to be cancelled")
    assert world_pids(env) == pids


# -- help ------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [None, *sorted(cli.commands)])
def test_help_of_every_command(env, command):
    result = env.cli(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ")
    assert result.stderr == ""
