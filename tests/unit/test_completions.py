"""The committed shell completion scripts are the ones the live CLI generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMPLETIONS = Path(__file__).parents[2] / "completions"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_committed_completion_script_is_current(shell):
    generated = subprocess.run([sys.executable, "-m", "clusterctl"], capture_output=True, text=True,
                               env={**os.environ, "_CLUSTERCTL_COMPLETE": f"{shell}_source"},
                               timeout=30)
    committed = (COMPLETIONS / f"clusterctl.{shell}").read_text()
    # the generated script names the program as invoked; the committed one as installed
    assert generated.stdout.replace("__main__.py", "clusterctl").strip() != ""
    assert committed.strip() == _normalise(generated.stdout).strip(), (
        f"completions/clusterctl.{shell} is stale: regenerate with "
        f"_CLUSTERCTL_COMPLETE={shell}_source clusterctl > completions/clusterctl.{shell}")


def _normalise(text: str) -> str:
    return text.replace("__main__.py", "clusterctl")


def test_node_names_complete_from_the_hosts_file(env):
    env.hosts_file("local name=alpha\nlocal name=beta\n")
    out = subprocess.run([sys.executable, "-m", "clusterctl"], capture_output=True, text=True, cwd=env.cwd,
                         env={**os.environ, "_CLUSTERCTL_COMPLETE": "bash_complete",
                              "COMP_WORDS": "clusterctl rpc a", "COMP_CWORD": "2"}, timeout=30)
    assert "alpha" in out.stdout and "beta" not in out.stdout
