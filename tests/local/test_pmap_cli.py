"""``clusterctl pmap SCRIPT.py`` as users run it: a real process, real nodes, JSON lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import end_process, interruptible_cli, lines, script, wait_for

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "examples")


def test_script_function_inputs_helpers_and_imports(local_hosts_env):
    # the helper module and the script exist only here: both travel with the function
    (local_hosts_env.cwd / "helper.py").write_text("def cube(x):\n    return x ** 3\n")
    path = script(local_hosts_env, """
        import math
        from helper import cube

        OFFSET = 1

        def task(x):
            return cube(x) + math.floor(math.sqrt(x)) + OFFSET

        def inputs():
            yield from range(500)

        if __name__ == "__main__":
            raise SystemExit("the main block must not run")
    """)
    result = local_hosts_env.cli("pmap", path)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [x ** 3 + int(x ** 0.5) + 1 for x in range(500)]
    assert "500 items in" in result.stderr
    for column in ("node", "items", "busy", "failures", "retries", "requeued"):
        assert column in result.stderr
    assert "n1" in result.stderr and "n2" in result.stderr


def test_inputs_from_stdin_and_from_a_file_and_output_to_a_file(local_hosts_env):
    path = script(local_hosts_env, "def task(item):\n    return {'got': item}\n")
    items = [1, "two", [3], {"four": 4}, None]
    text = "".join(json.dumps(i) + "\n" for i in items) + "\n"
    piped = local_hosts_env.cli("pmap", path, input=text)
    assert piped.returncode == 0, piped.stderr
    assert lines(piped.stdout) == [{"got": i} for i in items]
    (local_hosts_env.cwd / "items.jsonl").write_text(text)
    filed = local_hosts_env.cli("pmap", path, "--input", "items.jsonl", "--output", "out.jsonl", "--no-summary")
    assert filed.returncode == 0, filed.stderr
    assert filed.stdout == "" and filed.stderr == ""
    assert lines((local_hosts_env.cwd / "out.jsonl").read_text()) == [{"got": i} for i in items]
    one_node = local_hosts_env.cli("pmap", path, "-i", "items.jsonl", "--nodes", "n2")
    assert lines(one_node.stdout) == [{"got": i} for i in items]
    assert " n2 " in one_node.stderr and " n1 " not in one_node.stderr


def test_unordered_indexed_limit_and_fn(local_hosts_env):
    path = script(local_hosts_env, """
        import itertools, time

        def slow_square(x):
            time.sleep(0.001 * (x % 5))
            return x * x

        def inputs():
            return itertools.count()
    """)
    result = local_hosts_env.cli("pmap", path, "--fn", "slow_square", "--unordered", "--indexed",
                       "--limit", "300")
    assert result.returncode == 0, result.stderr
    pairs = lines(result.stdout)
    assert sorted(p["index"] for p in pairs) == list(range(300))
    assert all(p["result"] == p["index"] ** 2 for p in pairs)


def test_the_examples_run(local_hosts_env):
    primes = local_hosts_env.cli("pmap", os.path.join(EXAMPLES, "primes.py"), "--limit", "10")
    assert primes.returncode == 0, primes.stderr
    assert sum(lines(primes.stdout)) == 5_133  # primes below 50,000
    words = local_hosts_env.cli("pmap", os.path.join(EXAMPLES, "wordstats.py"),
                      input='"the quick brown fox"\n')
    assert words.returncode == 0, words.stderr
    assert lines(words.stdout) == [{"words": 4, "longest": "quick", "vowels": 5}]
    erf = local_hosts_env.cli("pmap", os.path.join(EXAMPLES, "erf.py"), "--limit", "4")
    assert erf.returncode == 0, erf.stderr
    assert lines(erf.stdout)[0] == 0.0 and len(lines(erf.stdout)) == 4


def test_first_error_stops_with_item_node_and_remote_traceback(local_hosts_env):
    path = script(local_hosts_env, """
        def task(x):
            if x == 3:
                raise ValueError("three is bad")
            return x

        def inputs():
            return range(100)
    """)
    result = local_hosts_env.cli("pmap", path)
    assert result.returncode == 1
    assert lines(result.stdout) == [0, 1, 2]
    assert "error: item 3 failed on n" in result.stderr
    assert "ValueError: three is bad" in result.stderr
    assert "remote traceback" in result.stderr and "in task" in result.stderr
    assert "Traceback" not in result.stderr.split("remote traceback")[0]  # none of ours


def test_on_error_collect_and_skip(local_hosts_env):
    path = script(local_hosts_env, """
        def task(x):
            if x % 10 == 7:
                raise KeyError(x)
            return x

        def inputs():
            return range(50)
    """)
    collected = local_hosts_env.cli("pmap", path, "--on-error", "collect")
    assert collected.returncode == 3
    assert lines(collected.stdout) == [x for x in range(50) if x % 10 != 7]
    assert "5 items failed" in collected.stderr
    for index in (7, 17, 27, 37, 47):
        assert f" {index} " in collected.stderr
    skipped = local_hosts_env.cli("pmap", path, "--on-error", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert lines(skipped.stdout) == [x for x in range(50) if x % 10 != 7]
    assert "5 failed" in skipped.stderr


def test_retries_on_the_command_line(local_hosts_env):
    marks = local_hosts_env.root / "marks"
    marks.mkdir()
    path = script(local_hosts_env, f"""
        import os

        def task(x):
            mark = os.path.join({str(marks)!r}, str(x))
            if not os.path.exists(mark):
                open(mark, "w").close()
                raise ConnectionError("try again")
            return x

        def inputs():
            return range(20)
    """)
    # (no speculation: a backup copy of an item could run after the first attempt marked
    # it, and then that item would need no retry)
    result = local_hosts_env.cli("pmap", path, "--retries", "1", "--no-speculate")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == list(range(20))
    assert "20 retried" in result.stderr


def test_item_timeout_on_the_command_line(local_hosts_env):
    path = script(local_hosts_env, """
        import time

        def task(x):
            if x == 2:
                time.sleep(3600)
            return x

        def inputs():
            return range(10)
    """)
    result = local_hosts_env.cli("pmap", path, "--item-timeout", "0.5", "--on-error", "collect")
    assert result.returncode == 3, result.stderr
    assert lines(result.stdout) == [x for x in range(10) if x != 2]
    assert "1 item failed" in result.stderr
    assert "ItemTimeout" in result.stderr and "item timeout of 0.5 s" in result.stderr
    bad = local_hosts_env.cli("pmap", path, "--item-timeout", "0")
    assert bad.returncode == 2 and "--item-timeout" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("args, stdin, code, message", [
    (["--fn", "nope"], None, 2, "defines no function 'nope'"),
    ([], "1\n{oops\n", 2, "<stdin>:2: not a JSON value"),
    (["--input", "missing.jsonl"], None, 2, "cannot read --input missing.jsonl"),
])
def test_usage_errors(local_hosts_env, args, stdin, code, message):
    path = script(local_hosts_env, "def task(x):\n    return x\n")
    result = local_hosts_env.cli("pmap", path, *args, input=stdin)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_script_that_fails_to_load_shows_its_own_traceback(env):
    path = script(env, "import math\n\ndef helper():\n    return 1 / 0\n\nhelper()\n")
    result = env.cli("pmap", path)
    assert result.returncode == 1
    assert "raised while loading: ZeroDivisionError" in result.stderr
    assert "in helper" in result.stderr and "runpy" not in result.stderr


def test_an_empty_stdin_is_an_empty_input(local_hosts_env):
    path = script(local_hosts_env, "def task(x):\n    return x\n")
    proc = subprocess.run([sys.executable, "-m", "clusterctl", "pmap", path], cwd=local_hosts_env.cwd,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "0 items in" in proc.stderr


def test_ctrl_c_cancels_remote_work_prints_the_summary_and_exits_130(local_hosts_env):
    log = local_hosts_env.root / "started.log"
    path = script(local_hosts_env, f"""
        import time

        def task(x):
            with open({str(log)!r}, "a") as fh:
                fh.write(f"{{x}}\\n")
            time.sleep(0.2)
            return x

        def inputs():
            return range(10_000)
    """)
    proc = interruptible_cli(["pmap", path], local_hosts_env.cwd)
    try:
        wait_for(lambda: log.exists() and len(log.read_text().split()) >= 8, 30,
                 message="items to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "of 10,000 items in" in err and "n1" in err
    assert len(lines(out)) < 100
    # the command waited for the nodes to confirm the cancel: nothing of it runs any more
    started = len(log.read_text().split())
    time.sleep(0.6)
    assert len(log.read_text().split()) == started
    assert len(local_hosts_env.node_processes()) == 6  # the nodes and their workers, idle, for the next command


def test_call_maps_a_module_function_by_name_with_plain_data(local_hosts_env):
    items = [1, 4, 9, 16]
    text = "".join(json.dumps(i) + "\n" for i in items)
    run = local_hosts_env.cli("pmap", "--call", "math.sqrt", input=text)
    assert run.returncode == 0, run.stderr
    assert lines(run.stdout) == [1.0, 2.0, 3.0, 4.0]
    (local_hosts_env.cwd / "items.jsonl").write_text('[1, 2]\n"x"\n4\n')
    failed = local_hosts_env.cli("pmap", "--call", "math.sqrt", "-i", "items.jsonl", "--on-error", "collect")
    assert failed.returncode == 3 and lines(failed.stdout) == [2.0]
    assert "TypeError" in failed.stderr and "Traceback" not in failed.stderr.split("TypeError")[0]
    neither = local_hosts_env.cli("pmap")
    assert neither.returncode == 2 and "give a SCRIPT.py, or --call MODULE.FUNCTION" in neither.stderr
    both = local_hosts_env.cli("pmap", script(local_hosts_env, "def task(x):\n    return x\n"),
                               "--call", "math.sqrt", input="1\n")
    assert both.returncode == 2 and "not both" in both.stderr
    no_items = local_hosts_env.cli("pmap", "--call", "math.sqrt", "-i", "missing.jsonl")
    assert no_items.returncode == 2 and "cannot read --input missing.jsonl" in no_items.stderr


NUMPY_RESULTS = """
    import math

    import numpy as np

    def inputs():
        return range(6)

    def task(i):
        return {"i": np.int64(i), "mean": np.float32(i / 2), "row": np.arange(3) * i,
                "ratio": math.nan if i == 0 else 1 / i, "raw": bytes([i, 255])}
"""


def strict_lines(text: str) -> list:
    """JSON lines as a strict reader takes them (bare NaN or Infinity refused)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


def test_numpy_results_are_numbers_nan_is_null_and_the_user_is_told_once(local_hosts_env):
    path = script(local_hosts_env, NUMPY_RESULTS)
    result = local_hosts_env.cli("pmap", path, "--no-summary")
    assert result.returncode == 0, result.stderr
    got = strict_lines(result.stdout)
    assert [r["i"] for r in got] == list(range(6))
    assert [r["mean"] for r in got] == [i / 2 for i in range(6)]
    assert got[2]["row"] == [0, 2, 4] and got[0]["ratio"] is None and got[4]["ratio"] == 0.25
    assert got[3]["raw"] == "A/8="  # base64 of bytes([3, 255])
    notes = [line for line in result.stderr.splitlines() if "converted for JSON" in line]
    assert len(notes) == 1, result.stderr
    for told in ("numpy.ndarray → list (6)", "NaN/Infinity → null (1)", "bytes → base64 text (6)",
                 "--format pickle"):
        assert told in result.stderr.replace("\n", " "), result.stderr
    plain = local_hosts_env.cli("pmap", script(local_hosts_env, "def task(x):\n    return [x, 0.5]\n",
                                               "plain.py"), "--no-summary", input="1\n2\n")
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr  # nothing converted: no note


def test_format_pickle_keeps_every_result_exactly_for_read_results(local_hosts_env):
    import numpy as np

    from clusterctl import read_results

    path = script(local_hosts_env, NUMPY_RESULTS)
    result = local_hosts_env.cli("pmap", path, "--format", "pickle", "-o", "out.pkl", "--indexed",
                                 "--unordered", "--no-summary")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    got = sorted(read_results(str(local_hosts_env.cwd / "out.pkl")), key=lambda pair: pair[0])
    assert [index for index, _ in got] == list(range(6))
    for index, value in got:
        assert type(value["i"]) is np.int64 and value["i"] == index
        assert isinstance(value["row"], np.ndarray) and value["row"].tolist() == [0, index, 2 * index]
        assert value["raw"] == bytes([index, 255])
    assert got[0][1]["ratio"] != got[0][1]["ratio"]  # NaN, kept
    piped = local_hosts_env.cli("pipeline", script(local_hosts_env, """
        import numpy as np

        def inputs():
            return range(5)

        def square(x):
            return np.int64(x) ** 2

        def as_array(x):
            return np.array([x, x])

        stages = [square, as_array]
    """, "pipe.py"), "--format", "pickle", "-o", "pipe.pkl", "--no-summary")
    assert piped.returncode == 0, piped.stderr
    arrays = list(read_results(str(local_hosts_env.cwd / "pipe.pkl")))
    assert [a.tolist() for a in arrays] == [[x * x, x * x] for x in range(5)]
    assert all(a.dtype == np.int64 for a in arrays)
