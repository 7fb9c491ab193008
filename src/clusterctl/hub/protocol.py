"""How a command talks to the hub: the node's frames and handshake (the hub greets and
checks the cookie as a node does), then one request and its reply, both pickled. Only a
process holding the user's cookie gets that far, in a 0700 directory.

An ``open`` that succeeds turns the connection into the node's byte stream.
"""

from __future__ import annotations

import importlib
import pickle

from clusterctl import errors
from clusterctl.node import wire

OPS = ("open", "world", "unknown_host_key", "trust", "wait_stopped", "status", "watched",
       "stop")


def request(op: str, args: dict) -> bytes:
    return wire.encode({"op": "request", "what": op}, pickle.dumps(args))


def reply(result=None, error: errors.ClusterError | None = None) -> bytes:
    if error is not None:
        return wire.encode({"op": "reply", "ok": False}, pickle.dumps(error_state(error)))
    return wire.encode({"op": "reply", "ok": True}, pickle.dumps(result))


def read_reply(sock, max_payload: int = 1 << 24):
    """The hub's reply: its result, or raise the ClusterError it sent."""
    head, payload = wire.read_message(sock, max_payload=max_payload)
    if head.get("op") != "reply":
        raise errors.ProtocolError("hub", f"expected a reply, got {str(head.get('op'))[:64]!r}")
    data = pickle.loads(payload)
    if head.get("ok"):
        return data
    raise restore_error(data)


def error_state(error: BaseException) -> tuple:
    """An error as (module, class name, args, attributes): rebuilt without calling its
    ``__init__``, whose arguments differ from class to class."""
    cls = type(error)
    state = {k: v for k, v in vars(error).items() if _plain(v)}
    return cls.__module__, cls.__qualname__, error.args, state


def restore_error(state) -> errors.ClusterError:
    module, name, args, attributes = state
    cls = None
    if module.startswith("clusterctl."):
        cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ClusterError)):
        cls = errors.ClusterError
    error = errors.restore_error(cls, args, attributes)
    if not hasattr(error, "message"):
        error.message = str(args[0]) if args else name
    return error


def _plain(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, bytes, tuple, list, dict))
