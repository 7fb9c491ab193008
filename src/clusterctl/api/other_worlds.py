"""The user's other worlds on this machine: nodes that run beside a cluster's own, started
by commands with other hosts files. Local nodes are found in the run directory, SSH nodes
in what the hub knows. ``down`` names them (a plain ``down`` stops only its own world) and
``down --all`` stops them as well."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable

from clusterctl import errors
from clusterctl.config.hosts import LOCAL, HostSpec


@dataclass(frozen=True)
class OtherNode:
    """A node of another world: its hosts-file line, the SSH options the hub reaches it
    with (none for a local node) and its ``state``: "running" for a local node, else the
    hub's: "up" (watched), "lost" (watched, no contact, but the node may run),
    "connecting", or "reached" (a command's stream reached it; the hub does not watch it)."""

    spec: HostSpec
    ssh: dict = field(default_factory=dict)
    state: str = "running"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def where(self) -> str:
        """"local", or the SSH destination."""
        return LOCAL if self.spec.is_local else self.spec.target

    @property
    def through_hub(self) -> bool:
        return not self.spec.is_local


def other_nodes(own: Iterable[HostSpec], hub, timeout: float) -> list[OtherNode]:
    """The nodes of this user's other worlds that run on this machine (local) or that the
    ``hub`` (a HubClient, or None) knows and did not see stop: local ones first, by name.
    A node is another world's when no node of ``own`` has its name and kind (local, or
    reached by SSH). No hub is started to ask; a hub that does not answer counts as none."""
    from clusterctl.transport.local import running_local_nodes  # (subprocess: only for down)

    own = list(own)
    local_names = {s.name for s in own if s.is_local}
    remote_names = {s.name for s in own if not s.is_local}
    found = [OtherNode(HostSpec(name=name, target=LOCAL, source="<the run directory>"))
             for name in running_local_nodes() if name not in local_names]
    if hub is None:
        return found
    try:
        known = hub.watched(timeout)
    except errors.ClusterError:
        known = []
    return found + [OtherNode(entry["spec"], dict(entry["ssh"]), entry["state"]) for entry in known
                    if not entry["spec"].is_local  # (found above, if it runs)
                    and entry["spec"].name not in remote_names and entry["state"] != "stopped"]


def stop_other_nodes(others: list[OtherNode], world: Callable[[list[HostSpec], dict], object],
                     taken: Iterable[str] = ()) -> dict:
    """Stop ``others``: one world (``world(specs, ssh_options)``, a Cluster) for each set of
    SSH options, its nodes stopped in parallel; node -> "stopped", "not running" or the
    error. A name in ``taken`` (the caller's own outcomes) is told apart by where the
    node is: ``"n1 (local)"``."""
    groups: dict[str, list[OtherNode]] = {}
    for node in others:
        groups.setdefault(json.dumps(node.ssh, sort_keys=True, default=str), []).append(node)
    outcomes: dict = {}
    taken = set(taken)
    for nodes in groups.values():
        with world([n.spec for n in nodes], nodes[0].ssh) as cluster:
            stopped = cluster.down([n.name for n in nodes])
        for node in nodes:
            key = node.name if node.name not in taken else f"{node.name} ({node.where})"
            taken.add(key)
            outcomes[key] = stopped[node.name]
    return outcomes
