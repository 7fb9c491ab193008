"""Text and JSON for the command line that need no rich: a command that prints one
value (``rpc``) or only JSON imports nothing heavier. ``tables`` re-exports these."""

from __future__ import annotations

import json
from typing import Any, Iterable

from clusterctl import errors
from clusterctl.api.pickling import is_plain
from clusterctl.api.results import NodeInfo
from clusterctl.render.jsonvalues import jsonable

def fmt_rtt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_size(size: int) -> str:
    """Bytes as a person reads them: 812 B, 3.4 KB, 57.4 MB, 1.2 GB."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def fmt_load(load) -> str:
    if not load:
        return "-"
    return " ".join(f"{x:.2f}" for x in load)


def error_text(exc: errors.ClusterError) -> str:
    """An error's one line (plus, for a remote exception, the remote traceback)."""
    text = exc.one_line()
    if isinstance(exc, errors.RemoteError) and exc.remote_traceback:
        text += "\nremote traceback (node %s):\n%s" % (exc.node, exc.remote_traceback.rstrip())
    return text


def short_error(exc: errors.ClusterError) -> str:
    """An error in one line, without the node prefix (for a node -> error table)."""
    if isinstance(exc, errors.NodeError):
        text = exc.reason
        return f"{text} ({exc.hint})" if exc.hint else text
    return exc.one_line()


def value_text(value: Any) -> str:
    """A result as the CLI prints it: a string as it is, a small plain value as its repr,
    anything else as rich's pretty repr (indented when it does not fit 80 columns)."""
    if isinstance(value, str):
        return value
    if is_plain(value):  # (rich's pretty repr of plain data on one line is its repr)
        text = repr(value)
        if len(text) <= 80:
            return text
    from rich.pretty import pretty_repr

    return pretty_repr(value)


# -- JSON ----------------------------------------------------------------------------------

def error_json(exc: errors.ClusterError) -> dict:
    data = {"type": type(exc).__name__, "message": exc.message}
    if exc.hint:
        data["hint"] = exc.hint
    if isinstance(exc, errors.NodeError):
        data["node"] = exc.node
    if isinstance(exc, errors.RemoteError):
        data["remote_type"] = exc.remote_type
        data["remote_traceback"] = exc.remote_traceback
    return data


def outcome_json(value: Any) -> dict:
    if isinstance(value, errors.ClusterError):
        return {"ok": False, "error": error_json(value)}
    return {"ok": True, "result": jsonable(value)}


def world_json(infos: Iterable[NodeInfo]) -> list[dict]:
    return [{"node": i.name, "host": i.host, "status": i.status, "reason": i.reason,
             "summary": i.summary, "python": i.python, "slots": i.slots, "load": list(i.load) if i.load else None,
             "rtt": i.rtt, "pid": i.pid, "version": i.version, "restricted": i.restricted}
            for i in infos]


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
