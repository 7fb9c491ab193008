"""Rendering: everything the CLI shows, as rich renderables or JSON-ready data.

Kept apart from the CLI so it can be tested by rendering into a string, and so the
API never prints. rich honours NO_COLOR, TERM=dumb and non-terminal output itself.
Every cell is a ``Text``, never a markup string: host names like ``[fe80::1]`` and
error messages must show as they are, not be read as rich markup.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clusterctl import errors
from clusterctl.api.results import NodeInfo


def stdout_console() -> Console:
    return Console(soft_wrap=False)


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=False)


def fmt_rtt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_load(load) -> str:
    if not load:
        return "-"
    return " ".join(f"{x:.2f}" for x in load)


class WorldProgress:
    """A transient "n/total nodes answered" line on stderr while ``world`` runs.

    Shown only when stderr is a terminal; the table goes to stdout afterwards.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.console = stderr_console()
        self._progress = None
        self._task = None

    def __enter__(self) -> "WorldProgress":
        if self.console.is_terminal and self.total > 1:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("nodes answering"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.description}"), console=self.console,
                                      transient=True, redirect_stdout=False, redirect_stderr=False)
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def advance(self, info: NodeInfo) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=f"{info.name}: {info.status}")

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()


def world_table(infos: Iterable[NodeInfo]) -> Table:
    table = Table(title=None, show_edge=False, header_style="bold")
    for column in ("node", "host", "status", "python", "slots", "load avg", "rtt"):
        table.add_column(column, justify="right" if column in ("slots", "rtt") else "left")
    for info in infos:
        if info.ok:
            status = Text("pong", style="green")
        else:
            status = Text(f"pang: {info.reason}", style="red")
        table.add_row(Text(info.name), Text(info.host), status, Text(info.python or "-"),
                      Text(str(info.slots) if info.slots else "-"), Text(fmt_load(info.load)),
                      Text(fmt_rtt(info.rtt)))
    return table


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
    from rich.pretty import pretty_repr

    if isinstance(value, str):
        return value
    return pretty_repr(value)


def multicall_table(outcomes: dict[str, Any]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("node")
    table.add_column("result")
    for node, value in outcomes.items():
        if isinstance(value, errors.ClusterError):
            table.add_row(Text(node), Text("error: " + short_error(value), style="red"))
        else:
            table.add_row(Text(node), Text(value_text(value)))
    return table


def down_table(outcomes: dict[str, Any]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("node")
    table.add_column("result")
    for node, value in outcomes.items():
        if isinstance(value, errors.ClusterError):
            table.add_row(Text(node), Text("error: " + short_error(value), style="red"))
        else:
            table.add_row(Text(node), Text(value))
    return table


# -- JSON ----------------------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A value as JSON can carry it: containers recursed, anything else as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


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
             "python": i.python, "slots": i.slots, "load": list(i.load) if i.load else None,
             "rtt": i.rtt, "pid": i.pid, "version": i.version} for i in infos]


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
