"""What every transport shares: the settings a node is started with, its command line,
its start-up reply, and the ``Transport`` protocol the cluster talks to.

Two kinds exist: ``local`` (a node on this machine, reached through its unix socket) and
``ssh`` (a node on a remote host, reached through an SSH exec channel). Both hand the
cluster a byte stream on which the node speaks first; the session above is the same for
both. See docs/how-it-works.md ("Transports").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from clusterctl import errors
from clusterctl.config.hosts import HostSpec
from clusterctl.node import wire
from clusterctl.transport.bundle import Bundle
from clusterctl.version import __version__


class Transport(Protocol):
    """How the cluster reaches one node, whatever the kind."""

    kind: str  # "local" or "ssh"

    @property
    def host_label(self) -> str:
        """Where the node runs, for people: ``localhost`` or the SSH destination."""

    def open(self, *, start: bool, deadline: float):
        """A connected byte stream on which the node speaks first, starting the node if
        ``start``; None if no node runs and ``start`` is false. Raises ClusterError."""

    def wait_stopped(self, pid, timeout: float) -> None:
        """After a ``stop`` request: return once node process ``pid`` is gone; raise
        NodeError if it did not go."""


@dataclass(frozen=True)
class NodeSettings:
    """What every transport needs to start and reach a node."""

    cookie: bytes
    bundle: Bundle
    version: str = __version__
    idle: float = wire.DEFAULT_IDLE
    max_payload: int = wire.DEFAULT_MAX_PAYLOAD


def agent_arguments(spec: HostSpec, settings: NodeSettings, run_dir: str | None = None) -> list[str]:
    """The command-line options of a node started for ``spec``."""
    args = ["--name", spec.name, "--slots", str(spec.slots or 0),
            "--idle", repr(spec.idle if spec.idle is not None else settings.idle),
            "--version", settings.version, "--code-id", settings.bundle.code_id,
            "--max-payload", str(settings.max_payload)]
    if run_dir:
        args += ["--run-dir", run_dir]
    return args


def parse_start_reply(node: str, out: str, err: str, how: str) -> None:
    """Understand what a node's start-up printed; raise NodeStartError if it failed."""
    line = out.strip().splitlines()[0] if out.strip() else ""
    if line.startswith("ready") or line == "running":
        return
    if line.startswith("error:"):
        raise errors.NodeStartError(node, line[len("error:"):].strip())
    detail = (err.strip().splitlines() or ["no output"])[-1]
    raise errors.NodeStartError(node, f"{how} did not start a node: {detail}")
