"""The names user code and pickles give clusterctl's node-side modules, made to work on
a host that has no clusterctl installed.

A node runs from the shipped bundle, whose package is ``clusterctl_node``. User code is
taught one way to reach what runs inside a spawned process::

    from clusterctl.actor import receive, reply, Down, Exit, NoProcess

and pickles made on the controller name the same module ``clusterctl.node.processes.runtime``. So in
a node's workers and spawned processes both names are the bundle's ``actor`` module (the
one that holds the process's channel), and the packages above them, ``clusterctl`` and
``clusterctl.node`` and ``clusterctl.node.processes``, are importable: if the host has a clusterctl installed for other
reasons, that one is imported as usual (nothing of it is shadowed but these two module
names); if not, an empty package stands in, found after every other finder has looked.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

RUNTIME = "clusterctl.node.processes.runtime"  # the name pickles give the module
ACTOR_NAMES = ("clusterctl.actor", RUNTIME)
PACKAGES = ("clusterctl", "clusterctl.node", "clusterctl.node.processes")


class _StandInPackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty packages above ``RUNTIME`` where no other finder has them."""

    def find_spec(self, name, path=None, target=None):
        if name not in PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        return None  # the default: an empty module

    def exec_module(self, module) -> None:
        module.__path__ = []
        module.__doc__ = "stands in for clusterctl, which this host does not have installed"


def install(actor_module) -> None:
    """Make ``clusterctl.actor`` and ``RUNTIME`` be ``actor_module`` in this
    process, and their packages importable. Idempotent."""
    for name in ACTOR_NAMES:
        sys.modules[name] = actor_module
    if not any(isinstance(finder, _StandInPackages) for finder in sys.meta_path):
        sys.meta_path.append(_StandInPackages())
