"""The agent's code as a content-addressed bundle, ready to ship to a host.

A node runs from this bundle, never from an installed clusterctl: the same bytes run
on the local host and on remote ones, so a host needs nothing but ``python3``. The
bundle is the ``clusterctl.node`` package with its sub-packages (renamed ``clusterctl_node``, so it imports
without the controller's dependencies) plus cloudpickle's pure-Python source. Its id
is a hash of the contents, so a host that has the id in its cache needs nothing sent,
and a node running other code is recognised at the handshake and replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from clusterctl.node import boot

PACKAGE = "clusterctl_node"


@dataclass(frozen=True)
class Bundle:
    """The files to ship (relative path -> bytes) and their content id."""

    files: tuple[tuple[str, bytes], ...]
    code_id: str

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.files)

    def install(self, cache_root: str | os.PathLike) -> Path:
        """Make ``cache_root/code/<id>`` hold this bundle; return that directory.

        The same checks and the same install as the boot script's on a remote host
        (``boot.code_ok``, ``boot.install_code``): a directory that is there counts only
        if it holds exactly these files; a damaged one is replaced; the cache must be
        ours and not writable by others (RuntimeError otherwise); files are written
        under a unique staging name and renamed into place, so a concurrent start or a
        crash half-way never leaves a partial bundle under the final name.
        """
        target = Path(cache_root) / "code" / self.code_id
        if not boot.code_ok(str(target), self.code_id):
            boot.install_code(str(target), self.code_id, self.files)
        return target


@lru_cache(maxsize=1)
def agent_bundle() -> Bundle:
    """The bundle of this clusterctl's agent code and the cloudpickle it pickles with.

    cloudpickle is found, not imported: a command that pickles only plain data never
    pays its import (about 40 ms)."""
    import importlib.util

    spec = importlib.util.find_spec("cloudpickle")
    if spec is None or not spec.origin:
        raise ImportError("cloudpickle is not installed")
    files: list[tuple[str, bytes]] = []
    node_dir = Path(boot.__file__).parent
    for path in node_modules(node_dir):
        files.append((f"{PACKAGE}/{path.relative_to(node_dir).as_posix()}", path.read_bytes()))
    cp_dir = Path(spec.origin).parent
    for path in sorted(cp_dir.glob("*.py")):
        files.append((f"cloudpickle/{path.name}", path.read_bytes()))
    return Bundle(tuple(files), boot.code_digest(files))


def node_modules(node_dir: Path) -> list[Path]:
    """Every module of the node's tree, its sub-packages' included, in a fixed order."""
    return sorted(p for p in node_dir.rglob("*.py") if "__pycache__" not in p.parts)


def launch_code(code_dir: str) -> str:
    """The one line a host's Python runs to start a node from an installed bundle."""
    return boot.launch_line(code_dir)
