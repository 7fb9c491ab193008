"""Modules a running task imports that its host lacks, asked of the task's controller
while the task waits (mitogen's way): what no reading of the code before the call could
find, a name computed at run time (``importlib.import_module(name)``), an import in a
module that travelled by reference.

A worker puts ``Wants`` last on ``sys.meta_path``: it is asked only after every other
finder said no. It asks once per task and name, through the worker (``envwant`` to the
node, which asks the task's controller); the controller ships what it has of that name
as any package (``envput``) and answers with the ids (``envgiven``). The worker puts them
first on its path and the import goes on as usual; an answer with nothing leaves the
ImportError as Python makes it, and one with an error (a compiled package that cannot
load here, say) raises ImportError with that line.

Ships to hosts: the standard library only. See docs/how-it-works.md, "The environment
that travels".
"""

from __future__ import annotations

import importlib.machinery
import sys

from . import envs


class Wants:
    """The finder of last resort of a worker: ``ask(name)`` gives ``(ids, error)``."""

    def __init__(self, ask) -> None:
        self.ask = ask
        self.asked: set[str] = set()  # names asked during this task (asked once each)
        self.on = False  # while a task runs (not while the worker reads or unpickles a result)

    def find_spec(self, name, path=None, target=None):  # noqa: ARG002 - the finder protocol
        if not self.on or path is not None or name in self.asked or not name.isidentifier():
            return None  # (a submodule is its package's to find; the package is here)
        self.asked.add(name)
        ids, error = self.ask(name)
        if error:
            raise ImportError(error, name=name)
        if not ids:
            return None
        envs.use(ids)
        return importlib.machinery.PathFinder.find_spec(name)

    def start_task(self) -> None:
        """A new task: every name may be asked again (the controller may differ)."""
        self.asked.clear()
        self.on = True

    def end_task(self) -> None:
        self.on = False


def install(ask) -> Wants:
    """Put a ``Wants`` asking with ``ask`` last on this process's ``sys.meta_path``."""
    wants = Wants(ask)
    sys.meta_path.append(wants)
    return wants
