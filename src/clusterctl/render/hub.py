"""The hub's state, for ``clusterctl hub``."""

from __future__ import annotations

import time

from rich.console import Console
from rich.text import Text

from clusterctl.render.fit import Column, FittedTable


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def fmt_uptime(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def show(console: Console, status: dict) -> None:
    streams = status["streams"]
    finished = status["finished"]
    up = sum(s["up"] for s in streams) + finished["up"]
    down = sum(s["down"] for s in streams) + finished["down"]
    console.print(f"hub pid {status['pid']}, up {fmt_uptime(status['uptime'])}, "
                  f"clusterctl {status['version']}; {len(streams)} open streams "
                  f"({finished['streams']} ended), {status['requests']} requests; "
                  f"traffic {fmt_bytes(up)} to nodes, {fmt_bytes(down)} back; "
                  f"exits after {status['idle_exit']:g} s idle")
    per_host: dict[str, int] = {}
    for s in streams:
        per_host[s["node"]] = per_host.get(s["node"], 0) + 1
    rows = [[str(h["host"]), str(h["port"]), str(h["user"] or ""), str(h["jump"] or ""),
             "up" if h["active"] else "down"] for pool in status["pools"] for h in pool["hosts"]]
    if rows:
        console.print(FittedTable([Column("host", "left"), Column("port", drop=2),
                                   Column("user", "left", drop=1), Column("via", "left", drop=3),
                                   Column("ssh", "left")], rows, box=None))
    else:
        console.print("no SSH connections held")
    if per_host:
        console.print("streams by node: " + ", ".join(f"{n} {k}" for n, k in sorted(per_host.items())))
    show_nodes(console, status.get("nodes", []))
    routing = status.get("routing")
    if routing and (routing["names"] or routing["forwarded"] or any(routing["kept"].values())):
        console.print(Text(
            f"spawned processes: {routing['forwarded']} frames forwarded between nodes; "
            f"{len(routing['names'])} names ({', '.join(sorted(routing['names'])[:10]) or '-'}); "
            f"{sum(routing['kept'].values())} processes to restart elsewhere if their node is lost"))


STATE_STYLES = {"up": "green", "lost": "red", "connecting": "yellow"}


def show_nodes(console: Console, nodes: list[dict]) -> None:
    """The nodes the hub watches (by heartbeat): a line each, with how long they have
    been so and, for a lost one, why."""
    if not nodes:
        return
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n["state"]] = counts.get(n["state"], 0) + 1
    console.print("nodes watched: " + ", ".join(f"{k} {s}" for s, k in sorted(counts.items())))
    now = time.time()
    rows = [[n["node"], n["target"], Text(n["state"], style=STATE_STYLES.get(n["state"], "")),
             fmt_uptime(max(0.0, now - n["since"])),
             "-" if n["rtt"] is None else f"{n['rtt'] * 1e3:.1f} ms", n["reason"] or ""]
            for n in nodes]
    console.print(FittedTable([Column("node", "left"), Column("host", "left", drop=2),
                               Column("state", "left"), Column("for", drop=1),
                               Column("rtt", drop=3), Column("reason", "left", prose=True)],
                              rows, box=None))
