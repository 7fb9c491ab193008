"""One table of the message kinds and their fields: the one place where a head's fields
are checked, by type and size, before anything acts on them.

It ships to remote hosts with the agent, so it imports only the standard library.

``NODE_TAKES`` lists what a node accepts from a controller, ``HANDSHAKE`` what a node
accepts before the handshake, ``CONTROLLER_TAKES`` what a controller accepts from a node
during the handshake. A field listed is checked when present (and must be present
when required); a field not listed is ignored, so a newer peer may add one. ``check``
gives the reason a head is malformed, or None.
"""

from __future__ import annotations

import re

MAX_ID = (1 << 63) - 1  # request numbers
MAX_TEXT = 4096  # names, versions, reasons
MAX_KEY = 256  # a function key
MAX_SECONDS = 1e9
DEFAULT_CAPACITY = 200_000  # trace events a connection's ring holds, unless ``trace`` asks another

_hex = re.compile("[0-9a-f]{1,64}").fullmatch


class Field:
    """A kind of field value: a test of it and what it must be (said when it is not)."""

    __slots__ = ("test", "what")

    def __init__(self, test, what: str) -> None:
        self.test, self.what = test, what


REQUEST_ID = Field(lambda v: type(v) is int and 0 <= v <= MAX_ID,
                   "a request number (an integer from 0 to 2**63-1)")
KEY = Field(lambda v: type(v) is str and 0 < len(v) <= MAX_KEY,
            "a function key (a string of 1 to %d characters)" % MAX_KEY)
TEXT = Field(lambda v: type(v) is str and len(v) <= MAX_TEXT,
             "a string of at most %d characters" % MAX_TEXT)
NONCE = Field(lambda v: type(v) is str and _hex(v) is not None,
              "a nonce (1 to 64 lower-case hex digits)")
MAC = Field(lambda v: type(v) is str and _hex(v) is not None,
            "a MAC (1 to 64 lower-case hex digits)")
COUNT = Field(lambda v: type(v) is int and 0 <= v <= MAX_ID, "a count (a non-negative integer)")
FLAG = Field(lambda v: type(v) is bool, "true or false")
ADDRESS = Field(lambda v: type(v) is str and 0 < len(v) <= MAX_TEXT,
                "a process id or name (a string of 1 to %d characters)" % MAX_TEXT)


def _number(low: float, high: float):
    """A test for an int or float from ``low`` to ``high`` (compared exactly, so an int
    too big for a float, or a NaN, is simply out of range)."""
    return lambda v: type(v) in (int, float) and low <= v <= high


SECONDS = Field(_number(0, MAX_SECONDS), "a number of seconds (from 0 to %g)" % MAX_SECONDS)
TIME = Field(_number(-1e12, 1e12), "a time (a number of seconds since 1970)")


class Op:
    """One message kind: its fields, each ``name: (Field, required)``."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str, /, **fields: tuple[Field, bool]) -> None:
        self.name, self.fields = name, fields


REQUIRED, OPTIONAL = True, False


def _table(*ops: Op) -> dict[str, Op]:
    return {op.name: op for op in ops}


# before the handshake, what a node takes from a client
HANDSHAKE = _table(
    Op("auth", nonce=(NONCE, REQUIRED), mac=(MAC, REQUIRED), proto=(COUNT, OPTIONAL),
       heartbeat=(SECONDS, OPTIONAL), watch=(FLAG, OPTIONAL)),
    Op("splice"),  # a boot script passing an SSH channel's descriptors
)

# after the handshake, what a node takes from its controller
NODE_TAKES = _table(
    Op("call", id=(REQUEST_ID, REQUIRED), fk=(KEY, OPTIONAL), mod=(TEXT, OPTIONAL),
       fun=(TEXT, OPTIONAL), enc=(TEXT, OPTIONAL)),
    Op("map", id=(REQUEST_ID, REQUIRED), fk=(KEY, OPTIONAL), mod=(TEXT, OPTIONAL),
       fun=(TEXT, OPTIONAL), enc=(TEXT, OPTIONAL)),
    Op("defn", key=(KEY, REQUIRED)),
    Op("ping", id=(REQUEST_ID, OPTIONAL), t=(TIME, OPTIONAL)),
    Op("cancel", id=(REQUEST_ID, REQUIRED)),
    Op("stop", id=(REQUEST_ID, OPTIONAL)),
    Op("trace", id=(REQUEST_ID, OPTIONAL), start=(FLAG, OPTIONAL), stop=(FLAG, OPTIONAL),
       capacity=(COUNT, OPTIONAL), processes=(FLAG, OPTIONAL)),
    # spawned processes (see processes/requests.py)
    Op("spawn", id=(REQUEST_ID, REQUIRED), mod=(TEXT, OPTIONAL), fun=(TEXT, OPTIONAL),
       name=(TEXT, OPTIONAL), restart=(TEXT, OPTIONAL), intensity=(COUNT, OPTIONAL),
       period=(SECONDS, OPTIONAL), mailbox=(COUNT, OPTIONAL), label=(TEXT, OPTIONAL)),
    Op("send", id=(REQUEST_ID, REQUIRED), to=(ADDRESS, REQUIRED), call=(FLAG, OPTIONAL)),
    Op("whereis", id=(REQUEST_ID, REQUIRED), name=(TEXT, REQUIRED)),
    Op("kill", id=(REQUEST_ID, REQUIRED), to=(ADDRESS, REQUIRED)),
    Op("ps", id=(REQUEST_ID, REQUIRED)),
    Op("monitor", id=(REQUEST_ID, REQUIRED), to=(ADDRESS, REQUIRED)),
    # from the hub, on its watch connection only (see processes/peers.py, processes/relay.py)
    Op("relay", node=(TEXT, REQUIRED), src=(TEXT, REQUIRED), s=(TEXT, REQUIRED), q=(COUNT, REQUIRED),
       **{"as": (TEXT, OPTIONAL), "aq": (COUNT, OPTIONAL)}),
    Op("ack", node=(TEXT, REQUIRED), src=(TEXT, REQUIRED), s=(TEXT, REQUIRED), q=(COUNT, REQUIRED)),
    Op("reset", node=(TEXT, REQUIRED), src=(TEXT, REQUIRED), s=(TEXT, REQUIRED)),
    Op("claimed", name=(TEXT, REQUIRED), pid=(TEXT, REQUIRED), ok=(FLAG, REQUIRED),
       holder=(TEXT, OPTIONAL)),
    Op("names", reset=(FLAG, OPTIONAL)),
    Op("nodedown", node=(TEXT, REQUIRED), reason=(TEXT, OPTIONAL)),
    Op("nodeup", node=(TEXT, REQUIRED)),
    Op("adopt", name=(TEXT, OPTIONAL), restart=(TEXT, OPTIONAL), intensity=(COUNT, OPTIONAL),
       period=(SECONDS, OPTIONAL), mailbox=(COUNT, OPTIONAL), label=(TEXT, OPTIONAL),
       restarts=(COUNT, OPTIONAL)),
    Op("evict", pid=(TEXT, REQUIRED), reason=(TEXT, OPTIONAL)),
)

# during the handshake, what a controller takes from a node
CONTROLLER_TAKES = _table(
    Op("hello", proto=(COUNT, REQUIRED), nonce=(NONCE, REQUIRED), version=(TEXT, OPTIONAL),
       code=(TEXT, OPTIONAL), python=(TEXT, OPTIONAL), executable=(TEXT, OPTIONAL),
       pid=(COUNT, OPTIONAL), slots=(COUNT, OPTIONAL), node=(TEXT, OPTIONAL),
       host=(TEXT, OPTIONAL), restricted=(COUNT, OPTIONAL)),
    Op("welcome", mac=(MAC, REQUIRED)),
    Op("refused", reason=(TEXT, OPTIONAL)),
)


def check(head: dict, table: dict[str, Op]) -> str | None:
    """Why ``head`` (a decoded head, with a string ``op``) is malformed for ``table``;
    None if it is well formed, or of a kind the table does not list."""
    op = table.get(head["op"])
    if op is None:
        return None
    for name, (field, required) in op.fields.items():
        if name in head:
            if not field.test(head[name]):
                return "malformed %r message: field %r must be %s" % (op.name, name, field.what)
        elif required:
            return "malformed %r message: field %r is missing" % (op.name, name)
    return None


def error_head(kind: str, request_id, error_type: str, message: str, node: str) -> dict:
    """A failed result: ``kind`` says what went wrong (protocol, cancelled, crashed, ...)."""
    return {"op": "result", "id": request_id, "ok": False, "error": {
        "type": error_type, "message": message, "traceback": "", "node": node, "kind": kind}}
