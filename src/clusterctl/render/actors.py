"""Spawned processes as the CLI shows them: ``clusterctl ps``."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from clusterctl.render.hub import fmt_bytes, fmt_uptime
from clusterctl.render.plain import short_error

COLUMNS = ("id", "name", "node", "function", "state", "uptime", "mailbox", "restarts", "memory")
PS_JSON_KEYS = ("id", "name", "node", "function", "state", "uptime", "mailbox", "restarts",
                "restart", "memory", "pid", "reason")


def ps_table(rows: list[dict]) -> Table:
    """One line a process (why one stays down is ``down_reasons``', under the table)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("uptime", "mailbox", "restarts",
                                                                "memory") else "left")
    for row in rows:
        failed = row.get("state") == "failed"
        table.add_row(
            Text(row["id"]), Text(row.get("name") or "-"), Text(row.get("node", "?")),
            Text(str(row.get("function", "?"))),
            Text(row.get("state", "?"), style="red" if failed else None),
            Text("-" if failed else fmt_uptime(row.get("uptime") or 0)),
            Text(fmt_bytes(row.get("mailbox") or 0)),
            Text(str(row.get("restarts", 0))),
            Text("-" if row.get("memory") is None else fmt_bytes(row["memory"])))
    return table


def down_reasons(rows: list[dict]) -> list[str]:
    """Why each process that stays down does, a whole line each (never cut to a column)."""
    return [f"{row['id']}{' (' + row['name'] + ')' if row.get('name') else ''}: {row['reason']}"
            for row in rows if row.get("state") == "failed" and row.get("reason")]


def ps_json(rows: list[dict], failures: dict) -> dict:
    return {"processes": [{k: row.get(k) for k in PS_JSON_KEYS} for row in rows],
            "errors": {node: short_error(exc) for node, exc in failures.items()}}


def node_failures(failures: dict) -> list[str]:
    """The nodes ``ps`` could not ask, one line each."""
    return [f"{node}: {short_error(exc)}" for node, exc in failures.items()]
