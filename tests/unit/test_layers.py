"""The layers hold: the import contracts in pyproject.toml, the node's standard-library-only
rule, and a ``--help`` that loads neither paramiko nor rich.

Each check is also run on a copy of the package with one forbidden import added, so it
is known to fail when the rule is broken.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import importlinter  # noqa: F401 - the [test] extras have it; the checks below run it
import pytest

import clusterctl
from clusterctl.config import dirs

PACKAGE = Path(clusterctl.__file__).resolve().parent
SRC = PACKAGE.parent
ROOT = SRC.parent
PYPROJECT = ROOT / "pyproject.toml"

# Run in a fresh interpreter: check that it found the tree it was meant to lint, then lint.
LINT = """
import importlib.util, sys
origin = importlib.util.find_spec("clusterctl").origin
if not origin.startswith(sys.argv[1]):
    sys.exit("linted the wrong tree: " + origin)
sys.argv[1:] = sys.argv[2:]
from importlinter.cli import lint_imports_command
lint_imports_command()
"""


def lint(src: Path) -> subprocess.CompletedProcess:
    """import-linter over the package under ``src``, with this project's contracts."""
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.run([sys.executable, "-c", LINT, str(src), "--no-cache", "--config",
                           str(PYPROJECT)], cwd=src, env=env, capture_output=True, text=True,
                          timeout=60)


def copy_of_package(tmp_path: Path) -> Path:
    """A copy of ``src/clusterctl`` under ``tmp_path/src``; returns that ``src``."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "clusterctl", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def add_line(path: Path, line: str) -> None:
    assert path.is_file(), f"no module {path} to add a line to"
    with path.open("a") as fh:
        fh.write("\n" + line + "\n")


# ------------------------------------------------------------------ the contracts

def test_the_import_contracts_hold():
    result = lint(SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("node/wire.py", "import clusterctl.cli.main", "The node code imports nothing from the controller"),
    ("errors.py", "from clusterctl import session", "Layers"),
    ("api/results.py", "from clusterctl import render", "Layers"),
    ("session/connection.py", "from clusterctl.api import cluster", "Layers"),
    ("config/hosts.py", "from clusterctl.transport import ssh", "Layers"),
    ("api/pmap/run.py", "from clusterctl.api.cluster import Cluster", "No import circles"),
    ("transport/local.py", "from clusterctl.node import daemon", "never its rooms"),
    ("api/cluster.py", "from clusterctl.node.workers import pool", "never its rooms"),
    ("config/cookie.py", "import click", "click only in the command line"),
    ("api/cluster.py", "import rich", "rich only in render"),
    ("session/connection.py", "import paramiko", "paramiko only in the SSH transport"),
])
def test_the_contracts_fail_when_a_forbidden_import_is_added(tmp_path, module, line, broken):
    src = copy_of_package(tmp_path)  # (which passes as it is: see the test below)
    add_line(src / "clusterctl" / module, line)
    result = lint(src)
    assert result.returncode != 0, result.stdout
    report = result.stdout[result.stdout.index("Broken contracts"):]
    assert broken in report, result.stdout


def test_a_copy_of_the_package_passes_as_it_is(tmp_path):
    """What the tests above break is a copy that passes before they add their line."""
    result = lint(copy_of_package(tmp_path))
    assert result.returncode == 0, result.stdout


def test_every_module_has_a_layer(tmp_path):
    """The layers contract is exhaustive: a new module must be given a layer."""
    src = copy_of_package(tmp_path)
    (src / "clusterctl" / "newcomer.py").write_text("X = 1\n")
    result = lint(src)
    assert result.returncode != 0 and "newcomer" in result.stdout, result.stdout


# ------------------------------------------------------- the node: standard library only

# Named in sys.stdlib_module_names of newer Pythons only (boot tries it first, then falls back).
NEWER_STDLIB = {"_sha2"}


CLOUDPICKLE_IN = {"workers/worker.py", "processes/runtime.py"}  # a worker's, a process's


def foreign_imports(node_dir: Path) -> list[str]:
    """Imports in the node's modules, its sub-packages' included, of anything but the
    standard library, cloudpickle (in a worker and a spawned process only) and the node's
    own modules: ``"file:line: name"`` each (``file`` relative to the node's folder)."""
    allowed = set(sys.stdlib_module_names) | NEWER_STDLIB
    found = []
    for path in sorted(p for p in node_dir.rglob("*.py") if "__pycache__" not in p.parts):
        where = path.relative_to(node_dir).as_posix()
        package = ["node", *path.relative_to(node_dir).parent.parts]  # (from the package's parent)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: the node's own, unless it climbs out of it
                    if node.level <= len(package):
                        continue
                    names = ["." * node.level + (node.module or "")]
                else:
                    names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in allowed or name == "clusterctl.node" or name.startswith("clusterctl.node."):
                    continue
                if top == "cloudpickle" and where in CLOUDPICKLE_IN:
                    continue
                found.append(f"{where}:{node.lineno}: {name}")
    return found


def test_the_node_imports_only_the_standard_library():
    assert foreign_imports(PACKAGE / "node") == []


@pytest.mark.parametrize("module, line", [
    ("wire.py", "import click"),
    ("ops.py", "from clusterctl import errors"),
    ("ops.py", "from .. import errors"),  # out of the node, relatively
    ("daemon/node.py", "from ... import cluster"),  # a module in a room: checked too
    ("daemon/sessions.py", "import cloudpickle"),
    ("restricted/policy.py", "import paramiko"),
])
def test_the_node_check_finds_a_foreign_import(tmp_path, module, line):
    src = copy_of_package(tmp_path)
    add_line(src / "clusterctl" / "node" / module, line)
    found = foreign_imports(src / "clusterctl" / "node")
    assert len(found) == 1 and found[0].startswith(module + ":"), found


# ------------------------------------------------------------- a light --help

HELP = """
import json, sys
import clusterctl.cli.main
for args in (["--help"], ["pmap", "--help"]):
    try:
        clusterctl.cli.main.cli.main(args, prog_name="clusterctl", standalone_mode=False)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("paramiko", "rich"))))
"""


def heavy_modules_after_help(src: Path) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    result = subprocess.run([sys.executable, "-c", HELP], env=env, cwd=src, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage: clusterctl" in result.stdout
    return json.loads(result.stdout.splitlines()[-1])


def test_help_imports_neither_paramiko_nor_rich():
    assert heavy_modules_after_help(SRC) == []


def test_the_help_check_sees_a_heavy_import(tmp_path):
    src = copy_of_package(tmp_path)
    add_line(src / "clusterctl" / "cli" / "common.py", "import rich.console")
    assert "rich" in heavy_modules_after_help(src)


# ------------------------------------------------------------- the config directory

@pytest.mark.parametrize("xdg", [None, "/somewhere/else"])
def test_the_config_dir_is_clicks_app_dir(monkeypatch, xdg):
    """Files written where click.get_app_dir pointed (cookie, hosts) are still found."""
    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    assert dirs.config_dir() == Path(click.get_app_dir("clusterctl"))


# ------------------------------------------------------------- the bundle ships the tree

def test_the_bundle_ships_every_module_of_the_node_tree(tmp_path):
    """The rooms' modules go to hosts too, and a module added to a room goes with them."""
    from clusterctl.transport.bundle import PACKAGE as SHIPPED, node_modules

    src = copy_of_package(tmp_path)
    node_dir = src / "clusterctl" / "node"
    (node_dir / "processes" / "added.py").write_text("ADDED = 1\n")
    shipped = {p.relative_to(node_dir).as_posix() for p in node_modules(node_dir)}
    assert {"wire.py", "daemon/node.py", "workers/worker.py", "processes/runtime.py",
            "restricted/policy.py", "processes/added.py", "processes/__init__.py"} <= shipped
    from clusterctl.transport.bundle import agent_bundle

    names = {name for name, _ in agent_bundle().files}
    assert f"{SHIPPED}/daemon/node.py" in names and f"{SHIPPED}/processes/__init__.py" in names
