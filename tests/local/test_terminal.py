"""What a person sees when results and live progress share one terminal: ``clusterctl``
runs on a real pseudo-terminal of 80 columns (stdout and stderr both on it, as the
README's first command has them), and a terminal emulator (pyte) replays what it wrote
into the screen a person would be looking at when it ends."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time

import pyte
import pytest

COLUMNS, ROWS = 80, 120

SLOW_SQUARES = """
import time

def inputs():
    return range(40)

def task(x):
    time.sleep(0.05)
    return 1000 * x + 7
"""

SLOW_PIPELINE = """
import time

def inputs():
    return range(24)

def slow(x):
    time.sleep(0.05)
    return x

def shifted(x):
    return 1000 * x + 7

stages = [slow, shifted]
"""


def on_a_terminal(args: list[str], cwd, timeout: float = 60) -> tuple[list[str], int]:
    """Run ``clusterctl ARGS`` on a pseudo-terminal of COLUMNS x ROWS; the screen's lines
    (trailing blanks dropped) when it exits, and its exit code."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pseudo-terminal is its stdin, stdout and stderr
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            os.chdir(cwd)
            os.execve(sys.executable, [sys.executable, "-m", "clusterctl", *args], env)
        finally:
            os._exit(127)
    data = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # (EIO: the child's side closed)
                break
            if not chunk:
                break
            data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"clusterctl {' '.join(args)} did not end in {timeout} s: {bytes(data[-2000:])!r}")
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    screen = pyte.Screen(COLUMNS, ROWS)
    pyte.ByteStream(screen).feed(bytes(data))
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines, os.waitstatus_to_exitcode(status)


def assert_each_result_whole_and_in_order(lines: list[str], expected: list[str]) -> None:
    shown = [line.strip() for line in lines]
    missing = [r for r in expected if r not in shown]
    assert not missing, "results not on the screen as lines of their own: %s\n%s" % (
        missing, "\n".join(lines))
    at = [shown.index(r) for r in expected]
    assert at == sorted(at), "\n".join(lines)


def test_pmap_results_stay_whole_above_the_live_progress_and_the_summary(local_hosts_env):
    env = local_hosts_env
    (env.cwd / "squares.py").write_text(SLOW_SQUARES)
    lines, code = on_a_terminal(["pmap", "squares.py"], env.cwd)
    assert code == 0, "\n".join(lines)
    expected = [str(1000 * x + 7) for x in range(40)]
    assert_each_result_whole_and_in_order(lines, expected)
    last_result = max(i for i, line in enumerate(lines) if line.strip() in expected)
    assert any("n1" in line for line in lines[last_result:]), "\n".join(lines)  # the summary, after


def test_pipeline_results_are_not_erased_under_its_live_table(local_hosts_env):
    env = local_hosts_env
    (env.cwd / "shifted.py").write_text(SLOW_PIPELINE)
    lines, code = on_a_terminal(["pipeline", "shifted.py"], env.cwd)
    assert code == 0, "\n".join(lines)
    assert_each_result_whole_and_in_order(lines, [str(1000 * x + 7) for x in range(24)])


def test_pickle_records_are_not_written_to_the_terminal(local_hosts_env):
    env = local_hosts_env
    (env.cwd / "squares.py").write_text(SLOW_SQUARES)
    lines, code = on_a_terminal(["pmap", "squares.py", "--format", "pickle"], env.cwd)
    assert code == 2, "\n".join(lines)
    screen = " ".join(lines)
    assert "--format pickle writes binary records, not for a terminal" in screen, screen
    assert "--output FILE" in screen, screen


PRINTING_SQUARES = """
import time

def inputs():
    return range(30)

def task(x):
    time.sleep(0.05)
    print("checking", x)
    return 1000 * x + 7
"""


def test_what_tasks_print_is_shown_whole_above_the_live_progress(local_hosts_env):
    env = local_hosts_env
    (env.cwd / "printing.py").write_text(PRINTING_SQUARES)
    lines, code = on_a_terminal(["pmap", "printing.py", "--no-speculate"], env.cwd)
    assert code == 0, "\n".join(lines)
    assert_each_result_whole_and_in_order(lines, [str(1000 * x + 7) for x in range(30)])
    printed = [line.strip() for line in lines if "checking" in line]
    for x in range(30):
        assert any(re.fullmatch(rf"n[12]\[{x}\]: checking {x}", line) for line in printed), \
            "\n".join(lines)
    assert len(printed) == 30, "\n".join(lines)


FOUR_STAGES = """
def inputs():
    return range(2000)

def read_the_record(x):
    return x

def normalise_the_fields(x):
    return x * 2

def count(x):
    return x + 1

def summarise(x):
    return x

stages = [read_the_record, normalise_the_fields, (count, {"replicas": 1}), summarise]
"""


def test_the_pipeline_summary_fits_80_columns_with_its_figures_whole(local_hosts_env):
    env = local_hosts_env
    (env.cwd / "four.py").write_text(FOUR_STAGES)
    lines, code = on_a_terminal(["pipeline", "four.py", "--output", "out.jsonl"], env.cwd)
    assert code == 0, "\n".join(lines)
    screen = "\n".join(lines)
    assert "…" not in screen and all(len(line) <= COLUMNS for line in lines), screen
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("stage"))
    for column in ("in", "out", "T_S", "ρ"):
        assert f" {column} " in lines[header] + " ", screen
    rows = lines[header + 2:header + 6]
    for number, name in enumerate(["read_the_record", "normalise_the_fields", "count", "summarise"], 1):
        row = next(r for r in rows if r.lstrip().startswith(f"{number} {name}"))
        cells = [c.strip() for c in row.split("│")]
        assert cells[1] == cells[2] == "2,000", screen  # in and out, whole
        assert re.fullmatch(r"\d\.\d\d", cells[-1]), screen  # ρ, whole
    assert any(line.startswith("bottleneck: ") for line in lines), screen
