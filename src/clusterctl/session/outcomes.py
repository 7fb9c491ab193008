"""What came back from a node, as a value or a typed error; and why a stream broke.

See docs/how-it-works.md, section "A task's round trip".
"""

from __future__ import annotations

import pickle
import socket

from clusterctl import errors
from clusterctl.node import failures
from clusterctl.node import plain


def decode_result(node: str, head: dict | None, payload, error: errors.ClusterError | None,
                  plain_data: bool = False):
    """A call's reply as its value, or raise the error it carries. ``plain_data``: the
    node is a restricted host's, whose replies are plain data's JSON and never unpickled."""
    if error is not None:
        raise error
    if head.get("op") == "error":  # the node could not take the request (an unknown op)
        raise errors.ProtocolError(node, str(head.get("message") or "the node refused the request"))
    if plain_data:
        if head.get("ok"):
            try:
                return plain.loads(payload)
            except plain.PlainDataError as exc:
                raise errors.ProtocolError(node, f"a restricted node's result is not plain data: {exc}")
        raise remote_error(head.get("error") or {}, b"", node)
    if head.get("ok"):
        try:
            return pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001
            raise errors.SerializationError(
                f"{node}: the result could not be unpickled here: {type(exc).__name__}: {exc}",
                hint="return plain data, or make the result's module importable on the controller")
    raise remote_error(head.get("error") or {}, payload, node)


# a spawned process's request that failed, by the kind the node gave


def remote_error(info: dict, payload=b"", node: str = "?") -> errors.ClusterError:
    """The error a node described, as a typed exception."""
    node = info.get("node", node)
    kind = info.get("kind")
    if kind == "cancelled":
        return errors.Cancelled(f"{node}: {info.get('message', 'cancelled')}")
    if kind == "refused":
        return errors.Refused(node, str(info.get("message", "refused")))
    if kind in failures.KINDS:  # (one table, the node's: a program and a process agree)
        return failures.process_error(kind, str(info.get("message", kind)))
    cls = {"crashed": errors.WorkerCrashed, "unpicklable": errors.UnpicklableResult}.get(kind, errors.RemoteError)
    original = None
    if payload:
        try:
            original = pickle.loads(payload)
        except Exception:  # noqa: BLE001 - the type may not exist here; the text still does
            original = None
    error = cls(node, info.get("type", "Error"), info.get("message", ""),
                info.get("traceback", ""), exception=original)
    if kind == "unpicklable":
        error.hint = info.get("hint")
    if kind == "import":
        error.hint = "the module must be importable on the node and define that function"
        error.remote_traceback = ""
    return error


def stream_failure(exc: BaseException) -> str:
    """A few words on why a read or write failed, for the message of the error it becomes."""
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, EOFError):
        return "connection closed"
    return str(exc) or type(exc).__name__
