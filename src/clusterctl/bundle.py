"""The agent's code as a content-addressed bundle, ready to ship to a host.

A node runs from this bundle, never from an installed clusterctl: the same bytes run
on the local host and on remote ones, so a host needs nothing but ``python3``. The
bundle is the ``clusterctl.node`` package (renamed ``clusterctl_node``, so it imports
without the controller's dependencies) plus cloudpickle's pure-Python source. Its id
is a hash of the contents, so a host that has the id in its cache needs nothing sent,
and a node running other code is recognised at the handshake and replaced.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE = "clusterctl_node"
AGENT_MODULE = PACKAGE + ".agent"


@dataclass(frozen=True)
class Bundle:
    """The files to ship (relative path -> bytes) and their content id."""

    files: tuple[tuple[str, bytes], ...]
    code_id: str

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.files)

    def install(self, cache_root: str | os.PathLike) -> Path:
        """Unpack into ``cache_root/code/<id>`` unless it is there; return that directory.

        Written to a temporary directory and renamed into place, so a concurrent start
        or a crash half-way never leaves a partial bundle under the final name.
        """
        target = Path(cache_root) / "code" / self.code_id
        if (target / PACKAGE / "agent.py").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=target.parent))
        for rel, data in self.files:
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.rename(staging, target)
        except OSError:  # another starter won the race: theirs is identical
            _remove_tree(staging)
        return target


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


@lru_cache(maxsize=1)
def agent_bundle() -> Bundle:
    """The bundle of this clusterctl's agent code and the cloudpickle it pickles with."""
    import cloudpickle

    files: list[tuple[str, bytes]] = []
    node_dir = Path(__file__).parent / "node"
    for path in sorted(node_dir.glob("*.py")):
        files.append((f"{PACKAGE}/{path.name}", path.read_bytes()))
    cp_dir = Path(cloudpickle.__file__).parent
    for path in sorted(cp_dir.glob("*.py")):
        files.append((f"cloudpickle/{path.name}", path.read_bytes()))
    digest = hashlib.sha256()
    for rel, data in files:
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return Bundle(tuple(files), digest.hexdigest()[:16])


def launch_code(code_dir: str) -> str:
    """The one line a host's Python runs to start a node from an installed bundle."""
    return ("import sys; sys.path.insert(0, %r); from %s import main; main()"
            % (code_dir, AGENT_MODULE))
