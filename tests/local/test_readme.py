"""The README runs as written: its first command block and its Python snippet, on the
built-in default world (no hosts file), from a directory holding the examples, as a
newcomer runs them after the set-up."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
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
