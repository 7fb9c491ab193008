"""The versions that must agree: clusterctl's own, which a node must match; Python's
major.minor between the controller and its nodes, because functions travel pickled; and
the protocol of a restricted host's agent, installed there, which does not follow ours."""

from __future__ import annotations

import sys

from clusterctl import errors
from clusterctl.node import wire

__version__ = "0.1.0"


def require_same_python(node: str, theirs: str, *, where: str, source: str) -> None:
    """Raise HandshakeError unless Python ``theirs`` (as ``3.11.2``) has our major.minor.

    ``where`` says what runs it (``"the node"``, ``"host1 at '/usr/bin/python3'"``);
    ``source`` is the hosts file line the hint points to."""
    ours = "%d.%d" % sys.version_info[:2]
    if str(theirs).rsplit(".", 1)[0] == ours:
        return
    theirs_minor = ".".join(str(theirs).split(".")[:2])
    raise errors.HandshakeError(
        node, f"{where} runs Python {theirs}, the controller Python {sys.version.split()[0]}; "
        "functions only travel between equal major.minor versions",
        hint=f"set python= for this host to a Python {ours} ({source})",
        summary=f"python {theirs_minor}, need {ours}")


def check_agent_protocol(node: str, hello: dict, host: str) -> None:
    """A restricted node (an agent installed on its host, which does not change when the
    controller does) must speak a protocol from ``wire.OLDEST_PROTOCOL`` to
    ``wire.PROTOCOL_VERSION``; HandshakeError naming both versions and whom to ask if not.
    ``hello`` is the agent's answer at boot or its node's greeting (an agent of protocol 1
    said none at boot)."""
    theirs = hello.get("proto", 1)
    if type(theirs) is int and wire.OLDEST_PROTOCOL <= theirs <= wire.PROTOCOL_VERSION:
        return
    older = type(theirs) is not int or theirs < wire.OLDEST_PROTOCOL
    raise errors.HandshakeError(
        node, f"{host} runs the restricted agent of clusterctl {hello.get('version', '?')} (protocol "
              f"{theirs}); this controller is clusterctl {__version__} and speaks protocols "
              f"{wire.OLDEST_PROTOCOL} to {wire.PROTOCOL_VERSION}",
        hint=(f"ask the owner of {host} to upgrade the clusterctl installed there" if older
              else f"upgrade clusterctl here to the version installed on {host}"),
        summary=f"agent protocol {theirs}, need {wire.OLDEST_PROTOCOL}-{wire.PROTOCOL_VERSION}")
