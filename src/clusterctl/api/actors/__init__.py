"""Spawned processes from the controller: spawning them, messages and calls to them,
names, ``ps``, killing, and where a new process goes. See docs/how-it-works.md,
section "Spawned processes"."""

from clusterctl.api.actors.operations import Down, ProcessOps
from clusterctl.api.actors.placement import least_loaded

__all__ = ["Down", "ProcessOps", "least_loaded"]
