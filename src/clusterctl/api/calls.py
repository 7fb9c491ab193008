"""A call as a message, and its reply as a value: what rpc and multicall share."""

from __future__ import annotations

from typing import Any, Callable

from clusterctl import errors
from clusterctl.api.pickling import dumps
from clusterctl.session.connection import NodeConnection
from clusterctl.session.outcomes import decode_result


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
    return decode_result(conn.node, pending.head, pending.payload, pending.error)
