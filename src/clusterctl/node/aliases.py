"""The names user code and pickles give clusterctl's node-side modules, made to work on
a host that has no clusterctl installed.

A node runs from the shipped bundle, whose package is ``clusterctl_node``. User code is
taught one way to reach what runs inside a spawned process::

    from clusterctl.actor import receive, reply, Down, Exit, NoProcess

and pickles made on the controller name the modules whose objects travel (the process
runtime, the process errors, the notices) by the controller's names,
``clusterctl.node.processes.runtime`` and so on. So in a node's workers and spawned
processes those names are the bundle's modules (``clusterctl.actor`` is the runtime,
the one that holds the process's channel), what is pickled there names them as the
controller does, and the packages above them are importable: if the host has a
clusterctl installed for other reasons, that one is imported as usual (nothing of it is
shadowed but these module names); if not, an empty package stands in, found after every
other finder has looked.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys

CONTROLLER = "clusterctl.node"  # the node package's name on the controller
TRAVELLING = ("processes.runtime", "failures", "notices")  # modules whose objects travel pickled
RUNTIME = CONTROLLER + ".processes.runtime"
PACKAGES = ("clusterctl", "clusterctl.node", "clusterctl.node.processes")


class _StandInPackages:
    """Empty packages above the travelling modules' names where no other finder has them.
    (A finder and loader by the protocol alone: importlib.abc would import
    importlib.resources, a tenth of a node's start.)"""

    def find_spec(self, name, path=None, target=None):
        if name not in PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        return None  # the default: an empty module

    def exec_module(self, module) -> None:
        module.__path__ = []
        module.__doc__ = "stands in for clusterctl, which this host does not have installed"


def install() -> None:
    """Give this process the controller's names for the travelling modules (and
    ``clusterctl.actor`` for the runtime), name their classes so in pickles, and make the
    packages above them importable. Idempotent."""
    own = __package__
    for relative in TRAVELLING:
        module = importlib.import_module(own + "." + relative)
        name = CONTROLLER + "." + relative
        sys.modules[name] = module
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                value.__module__ = name  # what pickles made here name: a controller has it
    sys.modules["clusterctl.actor"] = sys.modules[RUNTIME]
    if not any(isinstance(finder, _StandInPackages) for finder in sys.meta_path):
        sys.meta_path.append(_StandInPackages())
