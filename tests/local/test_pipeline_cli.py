"""``clusterctl pipeline SCRIPT.py`` as users run it: a real process, real local nodes,
JSON lines on stdout, the per-stage table and the bottleneck on stderr."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections import Counter

import pytest

from helpers import end_process, interruptible_cli, lines, script, wait_for

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "examples")

# Three stages, and what their composition gives, for the tests that check results.
THREE = """
    import time

    def inc(x):
        return x + 1

    def double(x):
        time.sleep(0.0005 * (x % 7))  # items finish out of order
        return x * 2

    def minus3(x):
        return x - 3

    stages = [inc, double, minus3]
"""


def three(more: str = "") -> str:
    """The three stages' script, with ``more`` (the items, a fold) after them."""
    return textwrap.dedent(THREE) + textwrap.dedent(more)


def with_range(n: int) -> str:
    return three(f"\ndef inputs():\n    return range({n})\n")


def composed(x):
    return (x + 1) * 2 - 3


def json_lines(items) -> str:
    return "".join(json.dumps(i) + "\n" for i in items)


def stage_rows(stderr: str) -> dict[str, dict[str, str]]:
    """The summary's table: stage name -> {column: cell}, the bottleneck mark dropped."""
    header = None
    rows = {}
    for line in stderr.splitlines():
        if "┃" in line:
            header = [c.strip() for c in line.split("┃")]
        elif header is not None and "│" in line:
            cells = [c.strip() for c in line.split("│")]
            name = cells[0].replace("◀ bottleneck", "").split(maxsplit=1)[1].strip()
            rows[name] = dict(zip(header, cells))
    return rows


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- results -----------------------------------------------------------------------------

def test_three_stages_give_the_composition_in_input_order(local_hosts_env):
    path = script(local_hosts_env, with_range(300))
    result = local_hosts_env.cli("pipeline", path)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [composed(x) for x in range(300)]
    assert "300 items in" in result.stderr and "through 3 stages" in result.stderr
    rows = stage_rows(result.stderr)
    assert list(rows) == ["inc", "double", "minus3"]
    for column in ("in", "out", "queue max", "failed", "retries", "replicas", "T_S", "T_A", "ρ"):
        assert column in rows["inc"], rows
    assert all(row["in"] == row["out"] == "300" and row["failed"] == "0" for row in rows.values())
    assert "Traceback" not in result.stderr


def test_unordered_gives_the_same_multiset(local_hosts_env):
    path = script(local_hosts_env, with_range(300))
    result = local_hosts_env.cli("pipeline", path, "--unordered", "--no-summary")
    assert result.returncode == 0, result.stderr
    assert Counter(lines(result.stdout)) == Counter(composed(x) for x in range(300))
    assert result.stderr == ""


def test_limit_reads_only_the_first_items_of_an_endless_input(local_hosts_env):
    path = script(local_hosts_env, three("""
        import itertools

        def inputs():
            return itertools.count()
    """))
    result = local_hosts_env.cli("pipeline", path, "--limit", "25")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [composed(x) for x in range(25)]
    assert "25 items in" in result.stderr


def test_items_from_a_file_from_dash_and_from_piped_stdin(local_hosts_env):
    path = script(local_hosts_env, three())  # no inputs(): the items come from outside
    items = [5, 0, -4, 11, 2]
    text = json_lines(items) + "\n"  # a blank line is no item
    (local_hosts_env.cwd / "items.jsonl").write_text(text)
    want = [composed(x) for x in items]
    filed = local_hosts_env.cli("pipeline", path, "--input", "items.jsonl")
    assert filed.returncode == 0, filed.stderr
    assert lines(filed.stdout) == want
    dashed = local_hosts_env.cli("pipeline", path, "--input", "-", input=text)
    assert dashed.returncode == 0, dashed.stderr
    assert lines(dashed.stdout) == want
    piped = local_hosts_env.cli("pipeline", path, "-i", "-", "--output", "out.jsonl", "--no-summary",
                      input=text)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "" and piped.stderr == ""
    assert lines((local_hosts_env.cwd / "out.jsonl").read_text()) == want
    bare = local_hosts_env.cli("pipeline", path, input=text)
    assert bare.returncode == 0, bare.stderr
    assert lines(bare.stdout) == want


def test_the_input_file_wins_over_the_scripts_inputs(local_hosts_env):
    path = script(local_hosts_env, with_range(1000))
    (local_hosts_env.cwd / "items.jsonl").write_text("7\n8\n")
    result = local_hosts_env.cli("pipeline", path, "-i", "items.jsonl")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [composed(7), composed(8)]


# -- fold --------------------------------------------------------------------------------

@pytest.mark.parametrize("fold", [
    "def fold(total, result):\n    return total + result\n\ninitial = 1000\n",
    "import operator\n\nfold = (operator.add, 1000)\n",
], ids=["function-and-initial", "pair"])
def test_a_fold_prints_only_its_value_and_the_results_go_to_the_output(local_hosts_env, fold):
    path = script(local_hosts_env, with_range(200) + "\n" + fold)
    want = [composed(x) for x in range(200)]
    result = local_hosts_env.cli("pipeline", path)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [1000 + sum(want)]
    assert "200 items in" in result.stderr
    teed = local_hosts_env.cli("pipeline", path, "--output", "out.jsonl", "--no-summary")
    assert teed.returncode == 0, teed.stderr
    assert lines(teed.stdout) == [1000 + sum(want)]
    assert lines((local_hosts_env.cwd / "out.jsonl").read_text()) == want


def test_a_fold_with_no_initial_starts_from_none(local_hosts_env):
    path = script(local_hosts_env, three("""
        def inputs():
            return range(10)

        def fold(seen, result):
            return (seen or []) + [result]
    """))
    result = local_hosts_env.cli("pipeline", path, "--no-summary")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [[composed(x) for x in range(10)]]


def test_a_fold_that_raises_shows_the_users_traceback(local_hosts_env):
    path = script(local_hosts_env, three("""
        def inputs():
            return range(10)

        def fold(total, result):
            if result > 10:
                raise OverflowError("too big")
            return total + result

        initial = 0
    """))
    result = local_hosts_env.cli("pipeline", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "error: fold raised on a result: OverflowError: too big" in result.stderr
    assert "in fold" in result.stderr and "clusterctl" not in result.stderr.split("Traceback")[1]


# -- failed items ------------------------------------------------------------------------

FAILING = """
    def inc(x):
        return x + 1

    def parse(x):
        if x % 10 == 4:
            raise ValueError(f"bad record {x}")
        return x * 2

    def minus3(x):
        return x - 3

    stages = [inc, parse, minus3]

    def inputs():
        return range(50)
"""
GOOD = [composed(x) for x in range(50) if x % 10 != 3]


def test_a_failed_item_stops_the_run_with_one_line_naming_item_and_stage(local_hosts_env):
    path = script(local_hosts_env, FAILING)
    result = local_hosts_env.cli("pipeline", path)
    assert result.returncode == 1, result.stderr
    assert lines(result.stdout) == [composed(x) for x in range(3)]
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: item 3 failed in stage 2 (parse) on n"), errors
    assert errors[0].endswith("ValueError: bad record 4"), errors
    assert "in parse" in result.stderr.split("remote traceback")[1]
    assert "Traceback" not in result.stderr.split("remote traceback")[0]  # none of ours
    assert stage_rows(result.stderr)["parse"]["failed"] == "1"


def test_on_error_skip_leaves_the_failed_items_out(local_hosts_env):
    path = script(local_hosts_env, FAILING)
    result = local_hosts_env.cli("pipeline", path, "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == GOOD
    assert "50 items in" in result.stderr and "5 failed" in result.stderr
    rows = stage_rows(result.stderr)
    assert [rows[name]["failed"] for name in ("inc", "parse", "minus3")] == ["0", "5", "0"]
    assert rows["parse"]["in"] == "50" and rows["parse"]["out"] == "45"
    assert rows["minus3"]["in"] == "45" and rows["minus3"]["out"] == "45"


def test_on_error_collect_exits_3_with_the_table_of_failed_items(local_hosts_env):
    path = script(local_hosts_env, FAILING)
    result = local_hosts_env.cli("pipeline", path, "--on-error", "collect")
    assert result.returncode == 3, result.stderr
    assert lines(result.stdout) == GOOD
    assert "5 items failed" in result.stderr
    for index in (3, 13, 23, 33, 43):
        assert f" {index} " in result.stderr
        assert f"ValueError: bad record {index + 1}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_table_of_failed_items_names_the_stage_they_failed_in(local_hosts_env):
    path = script(local_hosts_env, FAILING)
    result = local_hosts_env.cli("pipeline", path, "--on-error", "collect")
    assert result.returncode == 3, result.stderr
    failed = result.stderr.split("5 items failed")[1].split("items in")[0]
    assert "parse" in failed, failed


@pytest.mark.parametrize("order", ["ordered", "unordered"])
@pytest.mark.parametrize("layout", ["fused", "own-farm"])
def test_the_error_names_the_stage_in_either_order_and_layout(local_hosts_env, order, layout):
    option = "" if layout == "fused" else ", {'replicas': 2}"
    path = script(local_hosts_env, FAILING.replace("[inc, parse, minus3]", f"[inc, (parse{option}), minus3]"))
    args = ["--unordered"] if order == "unordered" else []
    result = local_hosts_env.cli("pipeline", path, *args)
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert " failed in stage 2 (parse) on n" in errors[0], errors
    # the run stops at the first failed item; another may fail before it has stopped
    # (unordered, on a farm of its own): the table and the headline count the same
    failed = stage_rows(result.stderr)["parse"]["failed"]
    assert int(failed) >= 1 and f"; {failed} failed" in result.stderr, result.stderr


def test_a_fold_under_on_error_collect_prints_the_fold_of_the_other_items(local_hosts_env):
    path = script(local_hosts_env, textwrap.dedent(FAILING) + "\nfold = (lambda total, r: total + r, 0)\n")
    result = local_hosts_env.cli("pipeline", path, "--on-error", "collect")
    assert result.returncode == 3, result.stderr
    assert "5 items failed" in result.stderr
    assert lines(result.stdout) == [sum(GOOD)]


def test_retries_make_a_stage_that_fails_once_succeed(local_hosts_env):
    marks = local_hosts_env.root / "marks"
    marks.mkdir()
    path = script(local_hosts_env, f"""
        import os

        def inc(x):
            return x + 1

        def flaky(x):
            mark = os.path.join({str(marks)!r}, str(x))
            if not os.path.exists(mark):
                open(mark, "w").close()
                raise ConnectionError("try again")
            return x * 2

        def minus3(x):
            return x - 3

        stages = [inc, flaky, minus3]

        def inputs():
            return range(20)
    """)
    result = local_hosts_env.cli("pipeline", path, "--retries", "1")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [composed(x) for x in range(20)]
    assert len(os.listdir(marks)) == 20
    rows = stage_rows(result.stderr)
    assert rows["flaky"]["retries"] == "20" and rows["flaky"]["failed"] == "0"
    assert rows["inc"]["retries"] == "0" and rows["minus3"]["retries"] == "0"
    for name in os.listdir(marks):
        os.unlink(marks / name)
    unretried = local_hosts_env.cli("pipeline", path)
    assert unretried.returncode == 1
    assert "failed in stage 2 (flaky)" in error_lines(unretried.stderr)[0]


# -- the summary -------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["fused", "own-farm"])
def test_the_summary_names_the_slow_stage_as_the_bottleneck(local_hosts_env, layout):
    option = "" if layout == "fused" else ", {'replicas': 2}"
    path = script(local_hosts_env, f"""
        import time

        def quick(x):
            return x + 1

        def sleepy(x):
            time.sleep(0.02)
            return x

        def brisk(x):
            return x * 2

        stages = [quick, (sleepy{option}), brisk]

        def inputs():
            return range(100)
    """)
    result = local_hosts_env.cli("pipeline", path)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [(x + 1) * 2 for x in range(100)]
    verdict = [line for line in result.stderr.splitlines() if line.startswith("bottleneck:")]
    assert len(verdict) == 1, result.stderr
    assert verdict[0].startswith("bottleneck: stage 2 (sleepy): ρ "), verdict
    marked = [line for line in result.stderr.splitlines() if "◀ bottleneck" in line]
    assert len(marked) == 1 and "sleepy" in marked[0], result.stderr
    rows = stage_rows(result.stderr)
    assert rows["sleepy"]["T_S"].endswith(" ms") and float(rows["sleepy"]["T_S"].split()[0]) >= 19
    assert rows["quick"]["T_S"].endswith("µs") and rows["brisk"]["T_S"].endswith("µs")
    assert float(rows["sleepy"]["ρ"]) >= 0.6


def test_no_summary_prints_nothing_on_stderr(local_hosts_env):
    path = script(local_hosts_env, with_range(50))
    result = local_hosts_env.cli("pipeline", path, "--no-summary")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert lines(result.stdout) == [composed(x) for x in range(50)]


# -- a pinned stage ----------------------------------------------------------------------

def test_a_pinned_stage_runs_only_on_its_node(local_hosts_env):
    path = script(local_hosts_env, """
        import os

        def first(x):
            return [x, os.getppid()]

        def pinned(pair):
            return pair + [os.getppid()]

        stages = [first, (pinned, {"nodes": ["n2"]})]

        def inputs():
            return range(40)
    """)
    result = local_hosts_env.cli("pipeline", path)
    assert result.returncode == 0, result.stderr
    triples = lines(result.stdout)
    assert [t[0] for t in triples] == list(range(40))
    n1, n2 = local_hosts_env.node_pid("n1"), local_hosts_env.node_pid("n2")
    assert {t[2] for t in triples} == {n2}
    assert {t[1] for t in triples} == {n1}  # the other stages keep off the pinned node


# -- what a tired user gets wrong --------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("def f(x):\n    return x\n", "job.py defines no stages"),
    ("stages = []\n", "a pipeline needs at least one stage"),
    ("def f(x):\n    return x\n\nstages = f\n", "stages must be a list of functions"),
    ("def f(x):\n    return x\n\nstages = [f, 'g']\n", "stage 2 is not a function: 'g'"),
    ("def f(x):\n    return x\n\nstages = [(f, {'replica': 2})]\n",
     "stage 1 has unknown option(s) replica"),
    ("def f(x):\n    return x\n\nstages = [(f, {'replicas': 0})]\n", "stage 1's replicas"),
    ("def f(x):\n    return x\n\nstages = [f, (f, {'nodes': ['gpu']})]\n",
     "stage 2 (f) is pinned to unknown node(s) gpu"),
    ("def f(x):\n    return x\n\nstages = [f]\nfold = 3\n", "job.py is an int, not a function"),
    ("def f(x):\n    return x\n\nstages = [f]\nfold = (3, 0)\n", "job.py is a pair whose first part is an int, not a function"),
], ids=["no-stages", "empty", "not-a-list", "not-a-function", "unknown-option", "zero-replicas",
        "unknown-node", "fold-not-callable", "fold-pair-not-callable"])
def test_a_bad_script_is_a_usage_error_in_one_line(local_hosts_env, text, message):
    path = script(local_hosts_env, text + "\ndef inputs():\n    return range(5)\n")
    result = local_hosts_env.cli("pipeline", path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, stdin, message", [
    (["--input", "missing.jsonl"], None, "cannot read --input missing.jsonl"),
    (["--input", "-"], "1\n{oops\n", "<stdin>:2: not a JSON value"),
    (["--item-timeout", "0"], None, "--item-timeout"),
    (["--on-error", "ignore"], None, "--on-error"),
    (["--nodes", "n9"], None, "n9"),
])
def test_bad_options_are_usage_errors(local_hosts_env, args, stdin, message):
    path = script(local_hosts_env, with_range(5))
    result = local_hosts_env.cli("pipeline", path, *args, input=stdin)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- Ctrl-C ------------------------------------------------------------------------------

def test_ctrl_c_stops_every_stage_prints_the_summary_and_exits_130(local_hosts_env):
    log = local_hosts_env.root / "started.log"
    path = script(local_hosts_env, f"""
        import time

        def note(x, stage):
            with open({str(log)!r}, "a") as fh:
                fh.write(f"{{stage}}:{{x}}\\n")

        def first(x):
            note(x, 1)
            time.sleep(0.1)
            return x

        def second(x):
            note(x, 2)
            time.sleep(0.2)
            return x

        stages = [first, (second, {{"replicas": 2}})]

        def inputs():
            return range(10_000)
    """)
    proc = interruptible_cli(["pipeline", path], local_hosts_env.cwd)
    try:
        wait_for(lambda: log.exists() and log.read_text().count("2:") >= 4, 30,
                 message="items to reach the second stage")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        end_process(proc)
    assert proc.returncode == 130, err
    headline = [line for line in err.splitlines() if "of 10,000 items in" in line]
    assert len(headline) == 1 and headline[0].endswith("through 2 stages; interrupted"), err
    assert set(stage_rows(err)) == {"first", "second"}
    assert "bottleneck:" in err
    assert "Traceback" not in err
    assert len(lines(out)) < 100
    # the command waited for the nodes to confirm the cancel: no stage runs any more
    started = log.read_text()
    time.sleep(0.6)
    assert log.read_text() == started
    assert len(local_hosts_env.node_processes()) == 6  # the nodes and their workers, idle, for the next command


# -- the examples ------------------------------------------------------------------------

def test_the_text_pipeline_example_folds_the_word_counts(local_hosts_env):
    result = local_hosts_env.cli("pipeline", os.path.join(EXAMPLES, "text_pipeline.py"))
    assert result.returncode == 0, result.stderr
    [totals] = lines(result.stdout)
    # 2000 lines, each of the four pangrams 500 times
    assert totals["the"] == 2000  # twice in the first pangram and twice in the fourth
    assert totals["quick"] == 1000 and totals["quickly"] == 500
    assert totals["dog"] == 1000 and totals["fox"] == 500 and totals["five"] == 1000
    assert totals["jump"] == 1000 and totals["jumps"] == 500
    assert "dog." not in totals and "The" not in totals  # normalised
    assert "2,000 items in" in result.stderr and "through 3 stages" in result.stderr
    piped = local_hosts_env.cli("pipeline", os.path.join(EXAMPLES, "text_pipeline.py"), "--input", "-",
                      input='"the quick brown fox"\n"The lazy dog!"\n')
    assert piped.returncode == 0, piped.stderr
    assert lines(piped.stdout) == [{"the": 2, "quick": 1, "brown": 1, "fox": 1, "lazy": 1,
                                    "dog": 1}]
