"""The versions that must agree: clusterctl's own, which a node must match, and Python's
major.minor between the controller and its nodes, because functions travel pickled."""

from __future__ import annotations

import sys

from clusterctl import errors

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
