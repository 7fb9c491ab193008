"""A call as a message, and its reply as a value: what rpc and multicall share."""

from __future__ import annotations

from typing import Any, Callable

from clusterctl import errors
from clusterctl.api.pickling import dumps
from clusterctl.node import plain
from clusterctl.session.connection import NodeConnection
from clusterctl.session.outcomes import decode_result, remote_error


def function_message(fn: str | Callable) -> tuple[dict, Callable | None]:
    """The head naming a function, and the function itself if it travels by value.

    ``"mod.fun"`` (split at the last dot) or ``"mod:attr.path"`` name a function that the
    node imports; a callable travels pickled by value.
    """
    if isinstance(fn, str):
        if ":" in fn:
            mod, _, fun = fn.partition(":")
        else:
            mod, _, fun = fn.rpartition(".")
        if not mod or not fun:
            raise errors.UsageError(f"{fn!r} does not name a function",
                                    hint="write module.function, e.g. math.pow or os.getloadavg")
        return {"op": "call", "mod": mod, "fun": fun}, None
    if not callable(fn):
        raise errors.UsageError(f"{fn!r} is neither a function nor a 'module.function' name")
    return {"op": "call"}, fn


def call_message(fn: str | Callable, args: tuple, kwargs: dict) -> tuple[dict, bytes]:
    """The head and payload of a call of ``fn(*args, **kwargs)``."""
    head, by_value = function_message(fn)
    return head, dumps((by_value, args, kwargs), "function and its arguments")


def plain_call_message(node: str, fn: str | Callable, args: tuple, kwargs: dict) -> tuple[dict, bytes]:
    """The head and payload of a call of ``fn(*args, **kwargs)`` on the restricted node
    ``node``: ``fn`` by name, the arguments as plain data. Refused here, before anything
    is sent, if it cannot be that (the node would refuse it too)."""
    mod, fun = restricted_name(node, fn)
    try:
        payload = b"[%s,%s]" % (plain.dumps(list(args), "the arguments", depth=1),
                                plain.dumps(kwargs, "the keyword arguments", depth=1))
    except plain.PlainDataError as exc:
        raise errors.SerializationError(
            f"{node} is a restricted host and takes only plain data: {exc}",
            hint="pass JSON values (numbers, strings, lists, dicts), tuples or bytes")
    return {"op": "call", "mod": mod, "fun": fun, "enc": "json"}, payload


def restricted_name(node: str, fn: str | Callable) -> tuple[str, str]:
    """``fn`` as (module, function) for a restricted node; Refused if it is a function
    object (it would travel pickled) or names an attribute path."""
    if not isinstance(fn, str):
        name = getattr(fn, "__qualname__", type(fn).__name__)
        raise errors.Refused(node, f"a restricted host takes no pickled code, and {name} would "
                                   "travel pickled; name an allowed function instead, as 'module.function'")
    head, _ = function_message(fn)
    if "." in head["fun"]:
        raise errors.Refused(node, f"{fn!r} names an attribute path; a restricted host calls "
                                   "functions named 'module.function' only")
    return head["mod"], head["fun"]


def message_for(conn: NodeConnection, fn: str | Callable, args: tuple, kwargs: dict,
                pickled: tuple[dict, bytes]) -> tuple[dict, bytes]:
    """The call's message for this connection's node: ``pickled`` (``call_message``'s,
    made once for every ordinary node) or, for a restricted node, the plain form."""
    if conn.restricted:
        return plain_call_message(conn.node, fn, args, kwargs)
    return pickled


def await_result(conn: NodeConnection, head: dict, pending, timeout: float | None) -> Any:
    """The value of a call sent as ``head`` on ``conn``, or its error raised.

    A timeout or Ctrl-C cancels the call on the node; a lost node makes the outcome
    unknown, and the error says so (the function may or may not have run)."""
    try:
        finished = pending.wait(timeout)
    except KeyboardInterrupt:
        conn.cancel(head["id"])
        raise
    if not finished:
        conn.cancel(head["id"])
        conn.forget(head["id"])
        raise errors.CallTimeout(conn.node, f"no result within {timeout:g} s; the call was cancelled",
                                 hint="raise --timeout if the call needs longer")
    if isinstance(pending.error, errors.NodeLost):
        raise errors.NodeLost(conn.node, f"{pending.error.reason}; the outcome of the call is "
                              "unknown (the function may or may not have run)")
    return decode_result(conn.node, pending.head, pending.payload, pending.error, conn.restricted)


def answer_of(conn: NodeConnection, pending, timeout: float | None, waited: str = "") -> dict:
    """The node's answer to a request that is not a call (``ps``, ``spawn``, ``envput``,
    ...): its head, or its error raised (``CallTimeout`` after ``timeout`` seconds, the
    connection's error, a failed result, or an ``error`` for a request the node does not
    know). ``waited`` says what took too long."""
    if not pending.wait(timeout):
        raise errors.CallTimeout(conn.node, f"{waited or 'no answer'} within {timeout:g} s")
    if pending.error is not None:
        raise pending.error
    head = pending.head
    if head.get("op") == "result" and not head.get("ok"):
        raise remote_error(head.get("error") or {}, pending.payload, conn.node)
    if head.get("op") == "error":
        raise errors.ProtocolError(conn.node, str(head.get("message") or "refused"))
    return head
