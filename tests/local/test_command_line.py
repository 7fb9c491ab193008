"""The command line as people type it, run as users run it (a real process, local
nodes): global options after the command, durations with units, --timeout where it
means nothing refused, and a function named MODULE.FUNCTION or MODULE FUNCTION."""

from __future__ import annotations

import json
import os

from actor_programs import alive
from helpers import script


def test_global_options_may_follow_the_command(local_hosts_env):
    env = local_hosts_env
    (env.cwd / "other_hosts").write_text("local name=solo slots=1\n")
    world = env.cli("world", "--json", "--hosts", "other_hosts")
    assert world.returncode == 0, world.stderr
    assert [row["node"] for row in json.loads(world.stdout)] == ["solo"]
    ps = env.cli("ps", "--json", "--hosts", "other_hosts")
    assert ps.returncode == 0, ps.stderr
    assert json.loads(ps.stdout)["processes"] == []
    called = env.cli("rpc", "n1", "math.pow", "2", "10", "--json")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"node": "n1", "result": 1024.0}
    # after --, an argument of the function, as before
    passed = env.cli("rpc", "n1", "builtins.repr", "--", "--json")
    assert passed.returncode == 0 and passed.stdout.strip() == "'--json'", passed.stderr
    env.cli("--hosts", "other_hosts", "down")


def test_a_function_is_named_dotted_or_in_two_words(local_hosts_env):
    env = local_hosts_env
    for words in (["math.pow", "2", "10"], ["math", "pow", "2", "10"]):
        result = env.cli("rpc", "n1", *words)
        assert result.returncode == 0 and result.stdout.strip() == "1024.0", result.stderr
    joined = env.cli("rpc", "n2", "os.path", "join", "/tmp", "x")  # os.path: a module
    assert joined.stdout.strip() == "/tmp/x", joined.stderr
    joined = env.cli("rpc", "n2", "os.path.join", "/tmp", "x")
    assert joined.stdout.strip() == "/tmp/x", joined.stderr
    loads = env.cli("multicall", "os.getloadavg", "--json")
    assert loads.returncode == 0, loads.stderr
    assert set(json.loads(loads.stdout)) == {"n1", "n2"}
    alone = env.cli("rpc", "n1", "math")
    assert alone.returncode == 2
    assert "math names a module: which of its functions? (write math.FUNCTION, or math " \
           "FUNCTION)" in alone.stderr, alone.stderr


def test_durations_take_units_and_a_wrong_one_is_said_in_words(local_hosts_env):
    env = local_hosts_env
    slow = env.cli("rpc", "n1", "time.sleep", "5", "--timeout", "500ms")
    assert slow.returncode != 0 and "0.5" in slow.stderr and "time" in slow.stderr, slow.stderr
    wrong = env.cli("--timeout", "abc", "world")
    assert wrong.returncode == 2
    assert "not a number of seconds: 'abc' (write 30, 2.5, 500ms, 5s, 2m or 1h)" in wrong.stderr
    assert "float range" not in wrong.stderr


def test_the_call_timeout_is_refused_by_a_map_and_a_pipeline_naming_item_timeout(local_hosts_env):
    env = local_hosts_env
    path = script(env, "def task(x):\n    return x\n\ndef inputs():\n    return range(3)\n\n"
                       "stages = [task]\n")
    for command in ("pmap", "pipeline"):
        for typed in (["--timeout", "1", command, path], [command, path, "--timeout", "1s"]):
            refused = env.cli(*typed)
            assert refused.returncode == 2, refused.stderr
            assert f"--timeout gives up on one call; {command} runs many and takes " \
                   "--item-timeout SECONDS instead" in refused.stderr, refused.stderr
    timed = env.cli("pmap", path, "--item-timeout", "2m", "--no-summary")
    assert timed.returncode == 0 and timed.stdout.split() == ["0", "1", "2"], timed.stderr


def test_a_run_directory_that_is_not_there_is_said_not_passed_over(local_hosts_env, tmp_path):
    env = local_hosts_env
    wrong = str(tmp_path / "no" / "such" / "run")
    result = env.cli("down", env={"XDG_RUNTIME_DIR": wrong})  # (starts nothing there)
    assert result.returncode == 0, result.stderr
    assert (f"note: XDG_RUNTIME_DIR={wrong} is no directory: nodes and the hub keep their "
            f"sockets and logs in /tmp/clusterctl-{os.getuid()}") in result.stderr
    assert "not running" in result.stdout


def test_down_names_the_nodes_of_other_hosts_files_and_down_all_stops_them(local_hosts_env):
    env = local_hosts_env
    (env.cwd / "other_hosts").write_text("local name=solo slots=1\n")
    assert env.cli("--hosts", "other_hosts", "world").returncode == 0
    assert env.cli("world").returncode == 0  # ./hosts: n1, n2
    solo = env.node_pid("solo")
    # a plain down stops its own world, and says what else runs and how to stop it
    own = env.cli("--hosts", "other_hosts", "down")
    assert own.returncode == 0, own.stderr
    assert "solo" in own.stdout and "stopped" in own.stdout
    assert "note: nodes of other hosts files still run: n1, n2 on this machine; `clusterctl down " \
           "--all` stops them too" in own.stderr, own.stderr
    assert (env.run_dir / "n1.sock").exists() and (env.run_dir / "n2.sock").exists()
    assert not alive(solo)
    env.cli("--hosts", "other_hosts", "world")
    n1, n2 = env.node_pid("n1"), env.node_pid("n2")
    # --all, from a world that has none of them running: every one is stopped, and named
    everything = env.cli("--hosts", "other_hosts", "down", "--all", "--json")
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout) == {"solo": "stopped", "n1": "stopped", "n2": "stopped"}
    assert not any(alive(pid) for pid in (n1, n2))
    assert env.node_processes() == []
    alone = env.cli("down")  # nothing else runs: nothing to say
    assert alone.returncode == 0 and alone.stderr == "", alone.stderr
    refused = env.cli("down", "--all", "--nodes", "n1")
    assert refused.returncode == 2 and "--all stops every node: give it no --nodes" in refused.stderr



def test_items_may_be_plain_text_lines_and_a_pipeline_writes_their_indexes(local_hosts_env):
    env = local_hosts_env
    path = script(env, """
        stages = [str.upper, len]

        def task(line):
            return line[::-1]

        def inputs():
            return ["not", "these"]
    """, "words.py")
    (env.cwd / "words.txt").write_bytes("a b\r\n\nccc\nété".encode())
    mapped = env.cli("pmap", path, "--lines", "-i", "words.txt", "--no-summary")
    assert mapped.returncode == 0, mapped.stderr
    assert [json.loads(line) for line in mapped.stdout.splitlines()] == ["b a", "ccc", "été"]
    # from stdin (--lines reads it even though the script defines inputs()), with indexes
    piped = env.cli("pipeline", path, "--lines", "--indexed", "--unordered", "--no-summary",
                    input="x\nyyy\n")
    assert piped.returncode == 0, piped.stderr
    found = sorted((json.loads(line) for line in piped.stdout.splitlines()), key=lambda r: r["index"])
    assert found == [{"index": 0, "result": 1}, {"index": 1, "result": 3}]
    (env.cwd / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    bad = env.cli("pmap", path, "--lines", "-i", "bad.txt")
    assert bad.returncode == 2 and "bad.txt: not UTF-8 text" in bad.stderr, bad.stderr
    as_json = env.cli("pmap", path, "-i", "words.txt")
    assert as_json.returncode == 2
    assert "words.txt:1: not a JSON value" in as_json.stderr and "--lines for plain text" in as_json.stderr
