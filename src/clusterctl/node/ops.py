"""One table of the message kinds and their fields: the one place where a head's fields
are checked, by type and size, before anything acts on them.

It ships to remote hosts with the agent, so it imports only the standard library.

Every wire is a ``Channel``: the controller and a node, the hub and a node, a node and
its workers, a node and its spawned processes, two nodes inside relayed frames, a
command and the hub. Each kind is declared once, by the end that sends it, with its
fields; a receiver dispatches with one ``Dispatch`` whose handlers must match what the
other end sends, and one rule for a kind it does not know. ``NODE_TAKES`` is what a node
accepts from a controller after the handshake (the hub's watch included), ``HANDSHAKE``
before it, ``CONTROLLER_TAKES`` what a client accepts during it. A field listed is
checked when present (and must be present when required), by ``check``, on the wires
that cross a trust boundary; a field not listed is ignored, so a newer peer may add one.
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
MAX_ENV = 1000  # packages one call may name
ENV_ID = Field(lambda v: type(v) is str and len(v) == 16 and _hex(v) is not None,
               "a package id (16 lower-case hex digits)")
ENV_IDS = Field(lambda v: type(v) is list and len(v) <= MAX_ENV and all(ENV_ID.test(i) for i in v),
                "a list of at most %d package ids (16 lower-case hex digits each)" % MAX_ENV)
TIME = Field(_number(-1e12, 1e12), "a time (a number of seconds since 1970)")


class Op:
    """One message kind: its fields, each ``name: (Field, required)``."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str, /, **fields: tuple[Field, bool]) -> None:
        self.name, self.fields = name, fields


REQUIRED, OPTIONAL = True, False


def _table(*ops: Op) -> dict[str, Op]:
    return {op.name: op for op in ops}


# -- the channels ----------------------------------------------------------------------------
#
# One table per wire, each kind declared once, by the end that sends it. A receiver's
# handlers are checked against what the other end sends (``Channel.takes``): a kind
# with no handler, or a handler for a kind not declared, is a test failure
# (tests/unit/test_wire_tables.py), as is code that sends a kind no table declares.


class Channel:
    """One wire between two ends: every kind each end sends, with its fields, and what
    the receiving end does with a kind it does not know (``unknown``, in words: the
    rule its dispatch keeps)."""

    __slots__ = ("name", "ends", "sends", "unknown")

    def __init__(self, name: str, ends: tuple[str, str], sends: dict[str, tuple[Op, ...]],
                 unknown: dict[str, str]) -> None:
        self.name, self.ends = name, ends
        self.sends = {end: _table(*kinds) for end, kinds in sends.items()}
        self.unknown = unknown  # receiving end -> its rule for a kind it does not know

    def takes(self, end: str) -> dict[str, Op]:
        """What ``end`` takes: every kind the other end sends."""
        other = self.ends[1] if end == self.ends[0] else self.ends[0]
        return self.sends[other]


_REQUEST = dict(id=(REQUEST_ID, REQUIRED))
_RELAYED = dict(node=(TEXT, REQUIRED), src=(TEXT, REQUIRED), s=(TEXT, REQUIRED))
_TASK = dict(id=(REQUEST_ID, REQUIRED), fk=(KEY, OPTIONAL), mod=(TEXT, OPTIONAL),
             fun=(TEXT, OPTIONAL), enc=(TEXT, OPTIONAL), env=(ENV_IDS, OPTIONAL),
             at=(COUNT, OPTIONAL))  # at: a map's first item (what its prints are named by)

# before the handshake, what a node (or the hub) takes from a client
HANDSHAKE = _table(
    Op("auth", nonce=(NONCE, REQUIRED), mac=(MAC, REQUIRED), proto=(COUNT, OPTIONAL),
       heartbeat=(SECONDS, OPTIONAL), watch=(FLAG, OPTIONAL)),
    Op("splice"),  # a boot script passing an SSH channel's descriptors
)

# during the handshake, what a client takes from a node (or the hub)
CONTROLLER_TAKES = _table(
    Op("hello", proto=(COUNT, REQUIRED), nonce=(NONCE, REQUIRED), version=(TEXT, OPTIONAL),
       code=(TEXT, OPTIONAL), python=(TEXT, OPTIONAL), executable=(TEXT, OPTIONAL),
       pid=(COUNT, OPTIONAL), slots=(COUNT, OPTIONAL), node=(TEXT, OPTIONAL),
       host=(TEXT, OPTIONAL), restricted=(COUNT, OPTIONAL), machine=(TEXT, OPTIONAL),
       libc=(TEXT, OPTIONAL)),
    Op("welcome", mac=(MAC, REQUIRED)),
    Op("refused", reason=(TEXT, OPTIONAL)),
)

CONTROLLER_NODE = Channel(
    "a controller (a command, a program, the hub) and a node", ("controller", "node"), {
        "controller": (
            *HANDSHAKE.values(),
            Op("call", **_TASK),
            Op("map", **_TASK),
            Op("defn", key=(KEY, REQUIRED), env=(ENV_IDS, OPTIONAL)),
            Op("ping", id=(REQUEST_ID, OPTIONAL), t=(TIME, OPTIONAL)),
            Op("cancel", **_REQUEST),
            Op("stop", id=(REQUEST_ID, OPTIONAL)),
            Op("trace", id=(REQUEST_ID, OPTIONAL), start=(FLAG, OPTIONAL), stop=(FLAG, OPTIONAL),
               capacity=(COUNT, OPTIONAL), processes=(FLAG, OPTIONAL)),
            # spawned processes (processes/requests.py)
            Op("spawn", id=(REQUEST_ID, REQUIRED), mod=(TEXT, OPTIONAL), fun=(TEXT, OPTIONAL),
               name=(TEXT, OPTIONAL), restart=(TEXT, OPTIONAL), intensity=(COUNT, OPTIONAL),
               period=(SECONDS, OPTIONAL), mailbox=(COUNT, OPTIONAL), label=(TEXT, OPTIONAL),
               env=(ENV_IDS, OPTIONAL)),
            Op("send", id=(REQUEST_ID, REQUIRED), to=(ADDRESS, REQUIRED), call=(FLAG, OPTIONAL)),
            Op("whereis", id=(REQUEST_ID, REQUIRED), name=(TEXT, REQUIRED)),
            Op("kill", id=(REQUEST_ID, REQUIRED), to=(ADDRESS, REQUIRED)),
            Op("ps", **_REQUEST),
            Op("monitor", id=(REQUEST_ID, REQUIRED), to=(ADDRESS, REQUIRED)),
            Op("logs", id=(REQUEST_ID, REQUIRED), to=(ADDRESS, REQUIRED), lines=(COUNT, OPTIONAL),
               follow=(FLAG, OPTIONAL), tag=(TEXT, OPTIONAL)),
            # where this connection's tasks run: JSON {"cwd": DIR, "env": {NAME: VALUE}} (no answer)
            Op("situate"),
            # the environment that travels (workers/envs.py)
            Op("envcheck", id=(REQUEST_ID, REQUIRED), ids=(ENV_IDS, REQUIRED)),
            Op("envput", id=(REQUEST_ID, REQUIRED), env=(ENV_ID, REQUIRED), name=(TEXT, OPTIONAL)),
            Op("envlist", **_REQUEST),
            Op("envdrop", id=(REQUEST_ID, REQUIRED), ids=(ENV_IDS, REQUIRED)),
            Op("envgiven", want=(COUNT, REQUIRED), ids=(ENV_IDS, REQUIRED), error=(TEXT, OPTIONAL)),
        ),
        "node": (
            *CONTROLLER_TAKES.values(),
            Op("result", id=(REQUEST_ID, OPTIONAL), ok=(FLAG, REQUIRED)),
            Op("error", id=(REQUEST_ID, OPTIONAL), message=(TEXT, OPTIONAL)),
            Op("pong", id=(REQUEST_ID, OPTIONAL), time=(TIME, OPTIONAL)),
            Op("traced", id=(REQUEST_ID, OPTIONAL), dropped=(COUNT, OPTIONAL)),
            Op("stopping", id=(REQUEST_ID, OPTIONAL), pid=(COUNT, OPTIONAL)),
            Op("spawned", id=(REQUEST_ID, REQUIRED), pid=(ADDRESS, REQUIRED)),
            Op("sent", **_REQUEST),
            Op("where", id=(REQUEST_ID, REQUIRED), pid=(ADDRESS, OPTIONAL)),
            Op("killed", id=(REQUEST_ID, REQUIRED), pid=(ADDRESS, REQUIRED)),
            Op("procs", **_REQUEST),
            Op("down", id=(REQUEST_ID, REQUIRED), who=(ADDRESS, REQUIRED), reason=(TEXT, OPTIONAL)),
            Op("envmissing", id=(REQUEST_ID, REQUIRED), missing=(ENV_IDS, REQUIRED)),
            Op("envstored", id=(REQUEST_ID, REQUIRED)),
            Op("envlisted", **_REQUEST),
            Op("envdropped", id=(REQUEST_ID, REQUIRED), dropped=(ENV_IDS, REQUIRED)),
            # a running task imports what its host lacks: no request's answer (no id)
            Op("envwant", want=(COUNT, REQUIRED), module=(TEXT, REQUIRED)),
            # what a running task printed: lines as JSON [[item, stream, text], ...]; or,
            # tagged, a followed process's (and, ``ended``, its end: see ``logs``)
            Op("taskout", dropped=(COUNT, OPTIONAL), tag=(TEXT, OPTIONAL), ended=(TEXT, OPTIONAL)),
            Op("logged", id=(REQUEST_ID, REQUIRED), pid=(ADDRESS, REQUIRED),
               running=(FLAG, OPTIONAL), dropped=(COUNT, OPTIONAL)),
        ),
    }, {
        "node": "answered {op: error, message: unknown operation ...}; the connection goes on",
        "controller": "matched to its request by id, whatever its kind: the request's reader "
                      "says what it expected",
    })

HUB_NODE = Channel(
    "the hub and a node, on the hub's watch connection (spawned processes across nodes)",
    ("hub", "node"), {
        "hub": (
            Op("relay", q=(COUNT, REQUIRED), **_RELAYED,
               **{"as": (TEXT, OPTIONAL), "aq": (COUNT, OPTIONAL)}),
            Op("ack", q=(COUNT, REQUIRED), **_RELAYED),
            Op("reset", **_RELAYED),
            Op("claimed", name=(TEXT, REQUIRED), pid=(TEXT, REQUIRED), ok=(FLAG, REQUIRED),
               holder=(TEXT, OPTIONAL)),
            Op("names", reset=(FLAG, OPTIONAL)),
            Op("nodedown", node=(TEXT, REQUIRED), reason=(TEXT, OPTIONAL)),
            Op("nodeup", node=(TEXT, REQUIRED)),
            Op("adopt", name=(TEXT, OPTIONAL), restart=(TEXT, OPTIONAL), intensity=(COUNT, OPTIONAL),
               period=(SECONDS, OPTIONAL), mailbox=(COUNT, OPTIONAL), label=(TEXT, OPTIONAL),
               restarts=(COUNT, OPTIONAL)),
            Op("evict", pid=(TEXT, REQUIRED), reason=(TEXT, OPTIONAL)),
        ),
        "node": (
            Op("relay", q=(COUNT, REQUIRED), **_RELAYED),
            Op("ack", q=(COUNT, REQUIRED), **_RELAYED),
            Op("reset", **_RELAYED),
            Op("claim", name=(TEXT, REQUIRED), pid=(TEXT, REQUIRED)),
            Op("release", name=(TEXT, REQUIRED), pid=(TEXT, REQUIRED)),
            Op("keep", pid=(TEXT, REQUIRED), name=(TEXT, OPTIONAL), label=(TEXT, OPTIONAL)),
            Op("drop", pid=(TEXT, REQUIRED)),
            Op("sync", processes=(COUNT, OPTIONAL)),
            Op("busy", processes=(COUNT, OPTIONAL)),
            Op("bye"),
        ),
    }, {
        "node": "a kind the node does not know is answered as any controller's (error)",
        "hub": "dropped (a node of a newer version may send more)",
    })

NODE_WORKER = Channel(
    "a node and one of its worker processes (tasks, on a socketpair with a sequence number "
    "per frame)", ("node", "worker"), {
        "node": (Op("call", **_TASK), Op("map", **_TASK),
                 Op("defn", key=(KEY, REQUIRED), env=(ENV_IDS, OPTIONAL)),
                 Op("forget", key=(KEY, REQUIRED)), Op("situate"),
                 Op("envgiven", ids=(ENV_IDS, REQUIRED), error=(TEXT, OPTIONAL))),
        "worker": (Op("result", id=(REQUEST_ID, OPTIONAL), ok=(FLAG, REQUIRED)),
                   Op("envwant", module=(TEXT, REQUIRED)),
                   Op("taskout", dropped=(COUNT, OPTIONAL))),
    }, {
        "worker": "answered as a failed result of kind protocol",
        "node": "(a worker sends results, each matched to its task by sequence number, and "
                "envwant and taskout under a sequence number of their own, WANT_SEQ)",
    })

NODE_PROCESS = Channel(
    "a node and one of its spawned processes (on a socketpair)", ("node", "process"), {
        "node": (
            # at its start, read before anything else: who it is, then what it runs
            Op("start", pid=(ADDRESS, REQUIRED), limit=(COUNT, OPTIONAL)),
            Op("spawn", mod=(TEXT, OPTIONAL), fun=(TEXT, OPTIONAL), env=(ENV_IDS, OPTIONAL)),
            Op("send", ref=(TEXT, OPTIONAL)),
            Op("reply", ref=(TEXT, REQUIRED)),
            Op("failed", ref=(TEXT, REQUIRED), kind=(TEXT, OPTIONAL), reason=(TEXT, OPTIONAL)),
            Op("answer", id=(COUNT, OPTIONAL), ok=(FLAG, REQUIRED)),
            Op("down", ref=(TEXT, REQUIRED), who=(ADDRESS, REQUIRED), reason=(TEXT, OPTIONAL)),
            Op("exit", who=(ADDRESS, REQUIRED), reason=(TEXT, OPTIONAL)),
            Op("refused", kind=(TEXT, OPTIONAL), reason=(TEXT, OPTIONAL)),
        ),
        "process": (
            Op("send", to=(ADDRESS, REQUIRED), ref=(TEXT, OPTIONAL), **{"from": (ADDRESS, OPTIONAL)}),
            Op("reply", ref=(TEXT, REQUIRED)),
            Op("took", bytes=(COUNT, REQUIRED)),
            Op("forget", ref=(TEXT, REQUIRED)),
            Op("started"),
            Op("exiting", kind=(TEXT, REQUIRED), reason=(TEXT, OPTIONAL), type=(TEXT, OPTIONAL)),
            Op("taskout", dropped=(COUNT, OPTIONAL)),  # what it printed (kept for ``logs``)
            # requests, each answered by an ``answer`` of the same id
            Op("spawn", id=(COUNT, OPTIONAL)),
            Op("register", id=(COUNT, OPTIONAL), name=(TEXT, REQUIRED)),
            Op("whereis", id=(COUNT, OPTIONAL), name=(TEXT, REQUIRED)),
            Op("link", id=(COUNT, OPTIONAL), to=(ADDRESS, REQUIRED)),
            Op("unlink", id=(COUNT, OPTIONAL), to=(ADDRESS, REQUIRED)),
            Op("monitor", id=(COUNT, OPTIONAL), to=(ADDRESS, REQUIRED)),
            Op("demonitor", id=(COUNT, OPTIONAL), ref=(TEXT, REQUIRED)),
            Op("trap", id=(COUNT, OPTIONAL), on=(FLAG, OPTIONAL)),
            Op("kill", id=(COUNT, OPTIONAL), to=(ADDRESS, REQUIRED)),
        ),
    }, {
        "node": "answered {op: answer, ok: false, kind: usage, message: unknown request ...}",
        "process": "ignored (the process's node is of its own version: this is a bug)",
    })

NODE_NODE = Channel(
    "a node and another, inside relayed frames (a process's messages, calls, monitors and "
    "links that cross nodes)", ("sender", "receiver"), {
        "sender": (
            Op("send", to=(ADDRESS, REQUIRED), ref=(TEXT, OPTIONAL)),
            Op("reply", ref=(TEXT, REQUIRED)),
            Op("failed", to=(ADDRESS, REQUIRED), ref=(TEXT, REQUIRED), reason=(TEXT, REQUIRED)),
            Op("down", to=(ADDRESS, REQUIRED), ref=(TEXT, REQUIRED), who=(ADDRESS, REQUIRED)),
            Op("refused", to=(ADDRESS, REQUIRED)),
            Op("exit", to=(ADDRESS, REQUIRED), who=(ADDRESS, REQUIRED), reason=(TEXT, REQUIRED)),
            Op("monitor", to=(ADDRESS, REQUIRED), ref=(TEXT, REQUIRED), watcher=(ADDRESS, REQUIRED)),
            Op("demonitor", to=(ADDRESS, REQUIRED), ref=(TEXT, REQUIRED)),
            Op("link", to=(ADDRESS, REQUIRED), **{"from": (ADDRESS, REQUIRED)}),
            Op("unlink", to=(ADDRESS, REQUIRED), **{"from": (ADDRESS, REQUIRED)}),
        ),
        "receiver": (),
    }, {
        "receiver": "dropped (a node of a newer version may send more)",
        "sender": "(nothing comes back on this channel: answers are frames of their own)",
    })

COMMAND_HUB = Channel(
    "a command and the hub (the handshake of a node, then one request and its reply; "
    "``open`` turns the connection into a node's byte stream)", ("command", "hub"), {
        # ``what``: one of hub/protocol.py's OPS; the request's arguments, pickled
        "command": (HANDSHAKE["auth"], Op("request", what=(TEXT, REQUIRED))),
        "hub": (*CONTROLLER_TAKES.values(), Op("reply", ok=(FLAG, REQUIRED))),
    }, {
        "hub": "answered with a reply carrying a ProtocolError (no such request); the "
               "command's connection then ends",
        "command": "a ProtocolError naming what came instead of the reply",
    })

CHANNELS = (CONTROLLER_NODE, HUB_NODE, NODE_WORKER, NODE_PROCESS, NODE_NODE, COMMAND_HUB)

# after the handshake, what a node takes from a controller, the hub's watch included
NODE_TAKES = {kind: op for kind, op in {**CONTROLLER_NODE.takes("node"),
                                        **HUB_NODE.takes("node")}.items()
              if kind not in HANDSHAKE}


class Dispatch:
    """One receiver's dispatch on one channel: a message to the handler of its kind, and
    a kind with no handler to ``unknown`` (the channel's rule for it). ``guard``, if any,
    sees a message of a known kind first and may stop it (it answered it then). Every
    handler must be of a kind the table declares (checked when built)."""

    __slots__ = ("handlers", "unknown", "guard")

    def __init__(self, table: dict[str, Op], handlers: dict, unknown, guard=None) -> None:
        stray = sorted(set(handlers) - set(table))
        if stray:
            raise ValueError("handlers for kinds no table declares: %s" % ", ".join(stray))
        self.handlers, self.unknown, self.guard = handlers, unknown, guard

    def __call__(self, op: str, *args):
        handler = self.handlers.get(op)
        if handler is None:
            return self.unknown(op, *args)
        if self.guard is not None and not self.guard(*args):
            return None
        return handler(*args)


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
