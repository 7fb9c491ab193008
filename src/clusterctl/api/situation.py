"""Where a cluster's tasks run: their working directory and the variables set for
them. A task on a local node runs where the program runs, so ``open("data/a.txt")``
next to the script works as it would here; on another host in the node's directory (its
user's home), unless ``cwd`` says otherwise; ``setenv`` sets variables on every node.

Each connection is told once, before its first task (``situate``, no answer: the node
keeps it for that connection's tasks and sets it in a worker before them). A connection
that is not told runs its tasks where the node runs, in the node's environment. A
restricted host's node keeps its owner's: it is not told, and would not listen.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Mapping

from clusterctl import errors


class Situation:
    """``cwd`` and ``setenv`` of a cluster, told to each of its connections once."""

    def __init__(self, cwd: str | os.PathLike | None, setenv: Mapping[str, str] | None) -> None:
        self.cwd = None if cwd is None else os.fspath(cwd)
        self.setenv = dict(setenv or {})
        self.here = os.getcwd()  # (a local node's tasks run where the program started)
        self._told: weakref.WeakSet = weakref.WeakSet()

    def of(self, local: bool) -> dict | None:
        """What a node is told: local, this directory (or ``cwd``); else ``cwd`` if given;
        ``setenv`` on all. None: nothing to tell."""
        cwd = self.cwd if self.cwd is not None or not local else self.here
        if cwd is None and not self.setenv:
            return None
        return {"cwd": cwd, "env": self.setenv}

    def tell(self, conn, local: bool) -> None:
        if conn in self._told:
            return
        said = None if conn.restricted else self.of(local)
        if said is not None and local and not os.path.isdir(said["cwd"]):
            raise errors.UsageError(f"cannot run tasks in {said['cwd']}: no such directory here")
        self._told.add(conn)
        if said is not None:
            conn.send({"op": "situate"}, json.dumps(said).encode())
