"""The README runs as written: its first command block and its Python snippet, on the
built-in default world (no hosts file), from a directory holding the examples, as a
newcomer runs them after the set-up."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def blocks(language: str) -> list[str]:
    """The README's fenced blocks of ``language`` ("" for plain), in order."""
    text = (REPO / "README.md").read_text()
    return re.findall(r"^```%s\n(.*?)^```" % re.escape(language), text, re.M | re.S)


def commands(block: str) -> list[list[str]]:
    """Each line's commands (``a && b`` is two), comments dropped."""
    found = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            found.append(words[:cut])
            words = words[cut + 1:]
    return found


def test_the_first_command_block_runs_as_written_on_the_default_world(env):
    shutil.copytree(REPO / "examples", env.cwd / "examples")
    block = blocks("")[0]
    ran = []
    try:
        for words in commands(block):
            assert words[0] == "clusterctl", words
            result = env.cli(*words[1:], timeout=120)
            assert result.returncode == 0, f"{' '.join(words)}:\n{result.stdout}\n{result.stderr}"
            ran.append(words[1])
    finally:
        env.cli("down")
    assert ran == ["world", "rpc", "multicall", "pmap", "pipeline", "--trace", "trace", "spawn",
                   "call", "ps", "down"]


def test_the_python_snippet_runs_as_written_on_the_default_world(env):
    [snippet] = [b for b in blocks("python") if "from clusterctl import Cluster" in b][:1]
    (env.cwd / "snippet.py").write_text(snippet)
    try:
        result = subprocess.run([sys.executable, "snippet.py"], cwd=env.cwd, capture_output=True,
                                text=True, timeout=120)
    finally:
        env.cli("down")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:3] == ["1024.0", "42"] and lines[-1] == "True 1", result.stdout


def help_examples() -> dict[str, list[str]]:
    """Each command's ``Example: clusterctl ...`` line from its --help, as words."""
    import click

    from clusterctl.cli.main import cli

    ctx = click.Context(cli)
    found = {}
    for name in cli.list_commands(ctx):
        for line in (cli.get_command(ctx, name).help or "").splitlines():
            match = re.search(r"Example: (clusterctl .*)$", line)
            if match:
                found[name] = shlex.split(match.group(1))
    return found


def test_every_example_in_the_help_runs_as_written_on_the_default_world(env):
    """What --help shows as an example runs on the default world from a directory holding
    the examples; `logs -f` follows the process until it is killed, then ends."""
    shutil.copytree(REPO / "examples", env.cwd / "examples")
    examples = help_examples()
    assert {"spawn", "call", "logs", "rpc", "multicall", "pmap", "pipeline"} <= set(examples)
    order = ["spawn"] + sorted(set(examples) - {"spawn", "logs"})
    try:
        for name in order:
            result = env.cli(*examples[name][1:], timeout=120)
            assert result.returncode == 0, f"{examples[name]}:\n{result.stdout}\n{result.stderr}"
        follow = subprocess.Popen([sys.executable, "-m", "clusterctl", *examples["logs"][1:]],
                                  cwd=env.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            assert follow.poll() is None  # following
            assert env.cli("kill", "kvs").returncode == 0
            out, err = follow.communicate(timeout=30)
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.communicate()
        assert follow.returncode == 0 and "ended" in err, err
    finally:
        env.cli("down")
