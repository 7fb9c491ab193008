"""How spawned processes are addressed: an id ``NODE.NUMBER`` (``n2.17``), or a name
registered in the world (``kvs``). Shared by the node and the controller, so both say
the same about a bad name. Ships to hosts: the standard library only.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,127}").fullmatch
MAX_ADDRESS = 4096  # (a head's text field)


def is_id(to: str) -> bool:
    """``to`` has the form of a process id, ``NODE.NUMBER``."""
    node, _, num = to.rpartition(".")
    return bool(node) and num.isdigit()


def node_of(to: str) -> str | None:
    """The node part of a process id; None for a name."""
    return to.rpartition(".")[0] if is_id(to) else None


def name_problem(name) -> str | None:
    """Why ``name`` cannot be registered (one line), or None."""
    if type(name) is not str or not NAME(name):
        return ("a process name is a letter or _ then letters, digits, _ or - (at most 128), "
                "not %r" % (name,))
    return None


def address_problem(to) -> str | None:
    """Why ``to`` is neither a process id nor a name (one line), or None."""
    if type(to) is str and 0 < len(to) <= MAX_ADDRESS and (is_id(to) or NAME(to)):
        return None
    return "send to a process id (like n2.17) or a registered name, not %r" % (to,)
