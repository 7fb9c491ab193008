"""Spawned processes from the controller: spawning them, messages and calls to them,
names, ``ps``, killing, and where a new process goes; ``Processes`` is the part of
``Cluster`` its process methods delegate to. See docs/how-it-works.md, section
"Spawned processes"."""

from clusterctl.api.actors.operations import Down, Monitor, ProcessList, Processes, World
from clusterctl.api.actors.placement import least_loaded

__all__ = ["Down", "Monitor", "ProcessList", "Processes", "World", "least_loaded"]
