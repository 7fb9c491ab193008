"""Spawned processes as the CLI shows them: ``clusterctl ps``."""

from __future__ import annotations

import textwrap
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clusterctl.render.hub import fmt_bytes, fmt_uptime
from clusterctl.render.plain import short_error

COLUMNS = ("id", "name", "node", "function", "state", "uptime", "mailbox", "restarts", "memory")
RIGHT_ALIGNED = ("uptime", "mailbox", "restarts", "memory")
# what a narrow terminal does without, in this order, before a name or a function is cut:
# the node (the id names it: n2.17 is on n2), then the figures
DROPPED_FIRST = ("node", "memory", "mailbox", "restarts", "uptime")
GAP = 2  # spaces between columns (rich's padding of one on each side)
INDENT = "    "  # before the wrapped rest of a line
PS_JSON_KEYS = ("id", "name", "node", "function", "state", "uptime", "mailbox", "restarts",
                "restart", "memory", "pid", "reason", "ended", "error", "traceback",
                "restarted_as")


class PsTable:
    """One line a process that runs (or stays down), laid out for the console it is
    printed on: every column where they fit; else without the node and the figures, one
    by one, so a name or a function is cut only when nothing is left to drop (and then
    folded onto the next line, never cut short). Why one stays down is
    ``down_reasons``', under the table."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options):
        rows = [dict(zip(COLUMNS, _cells(row))) for row in self.rows]
        widths = {column: max([len(column)] + [cells[column].cell_len for cells in rows])
                  for column in COLUMNS}
        shown = list(COLUMNS)
        for column in DROPPED_FIRST:
            if sum(widths[c] for c in shown) + GAP * (len(shown) - 1) <= options.max_width:
                break
            shown.remove(column)
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in shown:
            table.add_column(column, justify="right" if column in RIGHT_ALIGNED else "left",
                             overflow="fold", no_wrap=column not in ("name", "function"))
        for cells in rows:
            table.add_row(*(cells[column] for column in shown))
        yield table


def _cells(row: dict) -> list[Text]:
    failed = row.get("state") == "failed"
    return [Text(row["id"]), Text(row.get("name") or "-"), Text(row.get("node", "?")),
            Text(str(row.get("function", "?"))),
            Text(row.get("state", "?"), style="red" if failed else None),
            Text("-" if failed else fmt_uptime(row.get("uptime") or 0)),
            Text(fmt_bytes(row.get("mailbox") or 0)),
            Text(str(row.get("restarts", 0))),
            Text("-" if row.get("memory") is None else fmt_bytes(row["memory"]))]


def ps_table(rows: list[dict]) -> PsTable:
    return PsTable(rows)


def down_reasons(rows: list[dict], width: int | None = None) -> list[str]:
    """Why each process that stays down does, whole (never cut to a column): a line
    each, wrapped between words to ``width`` if given."""
    return _lines([f"{_who(row)}: {row['reason']}" for row in rows
                   if row.get("state") == "failed" and row.get("reason")], width)


def ended_lines(ended: list[dict], width: int | None = None, now: float | None = None) -> list[str]:
    """The processes that ended, one a line: who, its function, how (ended or crashed),
    how long ago, and why, wrapped between words to ``width`` if given."""
    now = time.time() if now is None else now
    return _lines([f"{_who(row)}  {row.get('function', '?')}  {row.get('state', 'ended')} "
                   f"{fmt_uptime(max(0.0, now - (row.get('ended') or now)))} ago: "
                   f"{row.get('reason') or '?'}" for row in ended], width)


def print_ps(console: Console, rows: list[dict], ended: list[dict]) -> None:
    """``ps``'s text: the processes that run (or stay down) as a table, why those stay
    down, then apart, the ones that ended lately; laid out for the console's width."""
    if not rows and not ended:
        console.print(Text("no processes"))
        return
    if rows:
        console.print(ps_table(rows))
        for line in down_reasons(rows, console.width):
            console.print(Text(line), soft_wrap=True)
    else:
        console.print(Text("no processes running"))
    if ended:
        console.print()
        console.print(Text("ended recently:"))
        for line in ended_lines(ended, console.width):
            console.print(Text(line), soft_wrap=True)


def _who(row: dict) -> str:
    return f"{row['id']} ({row['name']})" if row.get("name") else row["id"]


def _lines(texts: list[str], width: int | None) -> list[str]:
    """Each text a line, or, with ``width``, wrapped between words (a word longer than a
    line stays whole), the rest indented under it."""
    if width is None:
        return texts
    return [line for text in texts
            for line in textwrap.wrap(text, width=max(20, width), subsequent_indent=INDENT,
                                      break_long_words=False, break_on_hyphens=False)]


def ps_json(rows: list[dict], failures: dict, ended: list[dict] = ()) -> dict:
    """The processes that run or stay down, then the ones that ended (told apart by
    ``state``: "ended" or "crashed"), and the nodes that could not be asked."""
    return {"processes": [{k: row.get(k) for k in PS_JSON_KEYS} for row in [*rows, *ended]],
            "errors": {node: short_error(exc) for node, exc in failures.items()}}


def node_failures(failures: dict) -> list[str]:
    """The nodes ``ps`` could not ask, one line each."""
    return [f"{node}: {short_error(exc)}" for node, exc in failures.items()]
