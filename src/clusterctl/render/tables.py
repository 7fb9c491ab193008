"""Rendering: everything the CLI shows, as rich renderables or JSON-ready data.

Kept apart from the CLI so it can be tested by rendering into a string, and so the
API never prints. rich honours NO_COLOR, TERM=dumb and non-terminal output itself.
Every cell is a ``Text``, never a markup string: host names like ``[fe80::1]`` and
error messages must show as they are, not be read as rich markup.
"""

from __future__ import annotations

import io
import json
import textwrap
from typing import Any, Iterable

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from clusterctl import errors
from clusterctl.api.results import NodeInfo
from clusterctl.config import names


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


def world_rows(infos: Iterable[NodeInfo]) -> list[list[NodeInfo]]:
    """The nodes as the world table's rows, in hosts-file order: a row per pong, and a
    row per pang cause (``summary``), where every node that failed that way is listed."""
    infos = list(infos)
    failed: dict[str, list[NodeInfo]] = {}
    for info in infos:
        if not info.ok:
            failed.setdefault(info.summary, []).append(info)
    rows = []
    for info in infos:
        if info.ok:
            rows.append([info])
        elif failed.get(info.summary, [None])[0] is info:
            rows.append(failed[info.summary])
    return rows


def world_table(infos: Iterable[NodeInfo], width: int | None = None) -> Table:
    """One line per node, or per cause of failure (the nodes as ranges: ``h1-h100``);
    the failures' whole messages are ``world_failures``, shown below it. Narrower than
    the table would be, with ``width`` given, it shows the 1-minute load only."""
    rows = world_rows(infos)
    table = _world_table(rows, full_load=True)
    if width is not None and _natural_width(table) > width:
        table = _world_table(rows, full_load=False)
    return table


def _natural_width(table: Table) -> int:
    console = Console(width=10_000, file=io.StringIO())
    return Measurement.get(console, console.options, table).maximum


def _world_table(rows: list[list[NodeInfo]], *, full_load: bool) -> Table:
    # no rules: columns two spaces apart, as ps or kubectl, so 80 columns hold a line per node
    table = Table(title=None, box=None, pad_edge=False, header_style="bold")
    for column in ("node", "host", "status", "python", "slots", "load avg" if full_load else "load", "rtt"):
        table.add_column(column, justify="right" if column in ("slots", "rtt") else "left",
                         overflow="fold", no_wrap=column in ("status", "python", "rtt"))
    for row in rows:
        info = row[0]
        if info.ok:
            load = fmt_load(info.load if full_load or not info.load else info.load[:1])
            table.add_row(Text(info.name), Text(info.host), Text("pong", style="green"),
                          Text(info.python or "-"), Text(str(info.slots) if info.slots else "-"),
                          Text(load), Text(fmt_rtt(info.rtt)))
            continue
        hosts = {i.host for i in row}
        host = info.host if len(hosts) == 1 else f"{len(hosts)} hosts"
        table.add_row(Text(names.compress(i.name for i in row)), Text(host),
                      Text(f"pang: {info.summary}", style="red"), Text("-"), Text("-"), Text("-"),
                      Text("-"))
    return table


def world_failures(infos: Iterable[NodeInfo], width: int = 80) -> list[str]:
    """The whole message of each failure (once per cause), wrapped to ``width`` between
    words only, so no path or command is cut: plain lines to print below the table."""
    lines: list[str] = []
    for row in world_rows(infos):
        if row[0].ok:
            continue
        first = row[0]
        message, hint = _message_and_hint(first)
        if len(row) == 1:
            head = f"{first.name}: "
        elif len({_message_and_hint(i) for i in row}) == 1:
            head = f"{names.compress(i.name for i in row)} ({len(row)} nodes): "
        else:
            head = (f"{names.compress(i.name for i in row)} ({len(row)} nodes: {first.summary}), "
                    f"e.g. {first.name}: ")
        lines += _wrapped(head + message, width)
        if hint:
            lines += _wrapped("  fix: " + hint, width)
    return lines


def _message_and_hint(info: NodeInfo) -> tuple[str, str | None]:
    error = info.error
    if error is None:
        return info.reason or "failed", None
    return (error.reason if isinstance(error, errors.NodeError) else error.message), error.hint


def _wrapped(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=max(20, width - 1), subsequent_indent="    ",
                         break_long_words=False, break_on_hyphens=False)


def print_world(console: Console, infos: Iterable[NodeInfo]) -> None:
    """The world table, then the failures' whole messages as plain text."""
    infos = list(infos)
    console.print(world_table(infos, console.width))
    failures = world_failures(infos, console.width)
    if failures:
        console.print()
    for line in failures:
        console.print(Text(line), soft_wrap=True)


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
             "summary": i.summary, "python": i.python, "slots": i.slots, "load": list(i.load) if i.load else None,
             "rtt": i.rtt, "pid": i.pid, "version": i.version} for i in infos]


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
