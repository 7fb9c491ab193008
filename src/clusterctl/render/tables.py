"""Rendering: everything the CLI shows, as rich renderables or JSON-ready data.

Kept apart from the CLI so it can be tested by rendering into a string, and so the
API never prints. rich honours NO_COLOR, TERM=dumb and non-terminal output itself.
Every cell is a ``Text``, never a markup string: host names like ``[fe80::1]`` and
error messages must show as they are, not be read as rich markup.
"""

from __future__ import annotations

import textwrap
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clusterctl import errors
from clusterctl.api.results import NodeInfo
from clusterctl.config import names
from clusterctl.render.fit import console_for
# the plain text and JSON, for the callers that render tables too
from clusterctl.render.plain import (dump_json, error_json, error_text, fmt_load, fmt_rtt, fmt_size,  # noqa: F401
                                     jsonable, outcome_json, short_error, value_text, world_json)


def stdout_console() -> Console:
    return console_for()


def stderr_console() -> Console:
    return console_for(stderr=True)


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


def world_table(infos: Iterable[NodeInfo]) -> "WorldTable":
    """One line per node, or per cause of failure (the nodes as ranges: ``h1-h100``);
    the failures' whole messages are ``world_failures``, shown below it."""
    return WorldTable(world_rows(infos))


WORLD_COLUMNS = ("node", "host", "status", "python", "slots", "load avg", "rtt")
RIGHT_ALIGNED = ("slots", "rtt")


class WorldTable:
    """The world table, laid out for the console it is printed on: columns two spaces
    apart, as ps or kubectl, so 80 columns hold a line per node. Narrower than the table
    would be, it shows the 1-minute load only, and folds long names if it must.

    A table that fits is written as plain lines, its widths counted here: rich's Table
    measures every cell several times, which took a third of a second for 100 nodes.
    """

    def __init__(self, rows: list[list[NodeInfo]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options):
        for full_load in (True, False):
            cells = _world_cells(self.rows, full_load=full_load)
            widths = [max(c.cell_len for c in column) for column in zip(*cells)]
            if sum(widths) + 2 * (len(widths) - 1) <= options.max_width:
                yield _aligned_lines(cells, widths)
                return
        yield _folding_table(cells)


def _world_cells(rows: list[list[NodeInfo]], *, full_load: bool) -> list[list[Text]]:
    """The header and a row of cells per table row."""
    header = [Text(c if full_load or c != "load avg" else "load", style="bold") for c in WORLD_COLUMNS]
    cells = [header]
    for row in rows:
        info = row[0]
        if info.ok:
            load = fmt_load(info.load if full_load or not info.load else info.load[:1])
            status = Text("pong", style="green")
            if info.restricted is not None:
                status.append(f" restricted {info.version or '?'}, allows {info.restricted}", style="yellow")
            cells.append([Text(info.name), Text(info.host), status,
                          Text(info.python or "-"), Text(str(info.slots) if info.slots else "-"),
                          Text(load), Text(fmt_rtt(info.rtt))])
            continue
        hosts = {i.host for i in row}
        host = info.host if len(hosts) == 1 else f"{len(hosts)} hosts"
        cells.append([Text(names.compress(i.name for i in row)), Text(host),
                      Text(f"pang: {info.summary}", style="red"), Text("-"), Text("-"), Text("-"),
                      Text("-")])
    return cells


def _aligned_lines(cells: list[list[Text]], widths: list[int]) -> Text:
    lines = []
    for row in cells:
        line = Text()
        for i, (cell, width) in enumerate(zip(row, widths)):
            pad = " " * (width - cell.cell_len)
            if i:
                line.append("  ")
            if WORLD_COLUMNS[i] in RIGHT_ALIGNED:
                line.append(pad)
                line.append_text(cell)
            else:
                line.append_text(cell)
                if i < len(row) - 1:
                    line.append(pad)
        lines.append(line)
    return Text("\n", no_wrap=True).join(lines)


def _folding_table(cells: list[list[Text]]) -> Table:
    """Too wide even with the short load: rich's Table, which folds the long cells."""
    table = Table(title=None, box=None, pad_edge=False, header_style="bold")
    for header in cells[0]:
        column = WORLD_COLUMNS[len(table.columns)]
        table.add_column(header.plain, justify="right" if column in RIGHT_ALIGNED else "left",
                         overflow="fold", no_wrap=column in ("status", "python", "rtt"))
    for row in cells[1:]:
        table.add_row(*row)
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
    console.print(world_table(infos))
    failures = world_failures(infos, console.width)
    if failures:
        console.print()
    for line in failures:
        console.print(Text(line), soft_wrap=True)


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


def other_worlds_text(others: list) -> str:
    """The nodes of other worlds (``OtherNode``s) in one line: "n1, n2 on this machine;
    h1, web (alice@10.0.0.5, lost) over SSH" (an SSH node's destination where it is not
    its name; "lost" where the hub has no contact with it)."""
    local = [o.name for o in others if not o.through_hub]
    remote = []
    for o in others:
        if o.through_hub:
            notes = ([o.where] if o.where != o.name else []) + (["lost"] if o.state == "lost" else [])
            remote.append(o.name + (f" ({', '.join(notes)})" if notes else ""))
    parts = [", ".join(local) + " on this machine"] if local else []
    parts += [", ".join(remote) + " over SSH"] if remote else []
    return "; ".join(parts)


def env_table(outcomes: dict[str, Any], removed: bool = False) -> Table:
    """``clusterctl env``: per node, each package its host holds (or, ``removed``, what
    was removed), with its size and when a worker last used it."""
    import time

    table = Table(show_edge=False, header_style="bold")
    for column in ("node", "package", "version", "size", "last used" if not removed else "removed"):
        table.add_column(column, justify="right" if column == "size" else "left")
    now = time.time()
    for node, packages in outcomes.items():
        if isinstance(packages, errors.ClusterError):
            table.add_row(Text(node), Text("error: " + short_error(packages), style="red"), "", "", "")
            continue
        if not packages:
            table.add_row(Text(node), Text("nothing", style="dim"), "", "", "")
        for package in packages:
            used = package.get("used")
            when = "never" if used is None else _ago(now - used)
            table.add_row(Text(node), Text(package.get("name") or "?"), Text(package.get("version") or ""),
                          Text(fmt_size(package.get("size") or 0)),
                          Text("yes" if removed else when))
    return table


def _ago(seconds: float) -> str:
    if seconds < 120:
        return "just now"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
