"""The committed shell completion scripts load what the installed clusterctl generates, so
they hold for every click version the project accepts, and they complete for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMPLETIONS = Path(__file__).parents[2] / "completions"


def clusterctl_on_path(tmp_path: Path) -> dict:
    """An environment whose PATH has a ``clusterctl`` that runs this interpreter's."""
    bin_dir = tmp_path / "on-path"
    bin_dir.mkdir()
    script = bin_dir / "clusterctl"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m clusterctl "$@"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_script_loads_the_installed_clusterctls_own(shell):
    text = (COMPLETIONS / f"clusterctl.{shell}").read_text()
    assert f"_CLUSTERCTL_COMPLETE={shell}_source clusterctl" in text
    generated = subprocess.run([sys.executable, "-m", "clusterctl"], capture_output=True, text=True,
                               env={**os.environ, "_CLUSTERCTL_COMPLETE": f"{shell}_source"}, timeout=30)
    assert generated.returncode == 0, generated.stderr
    assert f"{shell}_complete" in generated.stdout  # the script calls back into clusterctl


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_bash_script_completes_commands_and_node_names(env, tmp_path):
    env.hosts_file("local name=alpha\nlocal name=beta\n")
    shell_env = clusterctl_on_path(tmp_path)
    complete = """
        source {script}
        COMP_WORDS=({words}); COMP_CWORD={cword}
        _clusterctl_completion clusterctl
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """

    def offered(words: str, cword: int) -> list[str]:
        out = subprocess.run(["bash", "-c", complete.format(script=COMPLETIONS / "clusterctl.bash",
                                                            words=words, cword=cword)],
                             capture_output=True, text=True, cwd=env.cwd, env=shell_env,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert "multicall" in offered("clusterctl mu", 1)
    names = offered("clusterctl rpc a", 2)
    assert "alpha" in names and "beta" not in names


def test_node_names_complete_from_the_hosts_file(env):
    env.hosts_file("local name=alpha\nlocal name=beta\n")
    out = subprocess.run([sys.executable, "-m", "clusterctl"], capture_output=True, text=True, cwd=env.cwd,
                         env={**os.environ, "_CLUSTERCTL_COMPLETE": "bash_complete",
                              "COMP_WORDS": "clusterctl rpc a", "COMP_CWORD": "2"}, timeout=30)
    assert "alpha" in out.stdout and "beta" not in out.stdout
