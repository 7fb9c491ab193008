"""A trace's analysis in the terminal: the nodes and their slots, each map's service
time and stragglers, each pipeline's stages, what failed, and a timeline with a lane
per node, so a run can be read without opening Perfetto."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from clusterctl.api.trace.analysis import Analysis
from clusterctl.render.fit import Column, FittedTable, console_for
from clusterctl.render.pipeline import fmt_replicas, fmt_rho, fmt_seconds
from clusterctl.render.pmap import fmt_duration, fmt_percent

BLOCKS = " ▁▂▃▄▅▆▇█"


def fmt_us(us: float | None) -> str:
    return fmt_seconds(None if us is None else us / 1e6)


def lane(shares: list[float]) -> str:
    """One character per bucket, its height the busy share."""
    return "".join(BLOCKS[min(len(BLOCKS) - 1, round(s * (len(BLOCKS) - 1)))] for s in shares)


def print_report(a: Analysis) -> None:
    """The report on stdout, fitted to the terminal (off one, lines kept whole)."""
    console_for().print(report(a))


def report(a: Analysis) -> RenderableType:
    parts: list[RenderableType] = [Text(f"run of {fmt_duration(a.duration_us / 1e6)}"
                                        + (f": {' '.join(a.command)}" if a.command else ""),
                                        style="bold")]
    parts.append(_nodes(a))
    parts.append(_timeline(a))
    if a.runs:
        parts.append(_runs(a))
    for pipeline in a.pipelines:
        parts.append(_pipeline(pipeline))
    if a.processes:
        parts.append(_processes(a))
    parts.append(_troubles(a))
    return Group(*parts)


def _nodes(a: Analysis) -> FittedTable:
    """A row per node; at narrow widths the offset, dropped events, MB moved, queue wait,
    rtt, tasks, MB/s and slots are left out in turn."""
    columns = [Column("node", "left"), Column("slots", drop=8), Column("tasks", drop=6),
               Column("items"), Column("busy"), Column("queue wait", drop=4),
               Column("rtt", drop=5), Column("MB moved", drop=3), Column("MB/s", drop=7),
               Column("offset ± bound", drop=1), Column("dropped", drop=2), Column("state", "left", prose=True)]
    rows = []
    for n in a.nodes:
        offset = "-" if n.offset_us is None else f"{fmt_us(n.offset_us)} ± {fmt_us(n.offset_error_us)}"
        rows.append([n.name, str(n.slots), f"{n.tasks:,}", f"{n.items:,}", fmt_percent(n.busy),
                     fmt_us(n.queue_wait_us), fmt_us(n.rtt_us),
                     f"{(n.bytes_in + n.bytes_out) / 1e6:.1f}", f"{n.mb_per_s:.1f}", offset,
                     f"{n.dropped:,}",
                     Text(n.state, style="green" if n.state == "running" else "red")])
    return FittedTable(columns, rows, title="nodes", title_justify="left")


def _timeline(a: Analysis) -> Table:
    table = Table(show_edge=False, header_style="bold", title="busy over time (a lane per node)",
                  title_justify="left")
    table.add_column("node")
    table.add_column(f"0 … {fmt_duration(a.duration_us / 1e6)}", no_wrap=True)
    for n in a.nodes:
        table.add_row(n.name, Text(lane(n.timeline), style="cyan"))
    return table


def _runs(a: Analysis) -> Group:
    """A row per map, and below it each map's slowest items (stragglers), wrapped."""
    columns = [Column("run", "left"), Column("tasks", drop=2), Column("items"),
               Column("per item"), Column("median", drop=1)]
    rows = [[r.label, f"{r.tasks:,}", f"{r.items:,}", fmt_us(r.per_item_us),
             fmt_us(r.median_item_us)] for r in a.runs]
    parts: list[RenderableType] = [FittedTable(columns, rows, title="maps", title_justify="left")]
    for r in a.runs:
        if r.stragglers:
            parts.append(Text(f"stragglers of {r.label}: " + ", ".join(
                f"items {s['items'][0]}+{s['items'][1]} on {s['node']} "
                f"({fmt_us(s['per_item_us'])})" for s in r.stragglers[:3])))
    return Group(*parts)


def _pipeline(p: dict) -> Group:
    columns = [Column("stage", "left"), Column("in"), Column("out"), Column("failed", drop=1),
               Column("replicas", drop=3), Column("T_S"), Column("T_A", drop=2), Column("ρ")]
    rows = []
    for s in p["stages"]:
        name = Text(f"{s['index'] + 1} {s['name']}")
        if s["index"] == p.get("bottleneck"):
            name.append(" ◀ bottleneck", style="bold red")
        rows.append([name, f"{s['items_in']:,}", f"{s['items_out']:,}", f"{s['failed']:,}",
                     fmt_replicas(s["replicas"]), fmt_seconds(s["t_s"]), fmt_seconds(s["t_a"]),
                     fmt_rho(s["rho"])])
    return Group(FittedTable(columns, rows, title="pipeline stages", title_justify="left"),
                 Text("bottleneck: " + p.get("why", ""), style="bold"))


def _processes(a: Analysis) -> FittedTable:
    """A row per spawned process; at narrow widths the bytes in, the message counts, the
    node, the function and the life are left out in turn."""
    columns = [Column("process", "left"), Column("name", "left"), Column("node", "left", drop=3),
               Column("function", "left", drop=4), Column("life", drop=5),
               Column("messages in", drop=2), Column("bytes in", drop=1),
               Column("messages out", drop=2), Column("ended", "left", prose=True)]
    rows = [[str(p["id"]), p["name"] or "-", p["node"], str(p["function"]),
             fmt_duration((p["life_us"] or 0) / 1e6), f"{p['messages_in']:,}",
             f"{p['bytes_in']:,}", f"{p['messages_out']:,}", p["exit"] or "(running)"]
            for p in a.processes]
    return FittedTable(columns, rows, title="spawned processes", title_justify="left")


def _troubles(a: Analysis) -> Text:
    lines = ["load imbalance (busiest node over the mean): "
             + ("-" if a.imbalance is None else f"{a.imbalance:.2f}")]
    lines.append(f"failed attempts: {len(a.failed_attempts)} ({a.retries} retried after an error "
                 f"or crash, {a.requeued_items} items requeued from lost nodes)")
    for name, why in a.lost_nodes.items():
        lines.append(f"node {name}: {why}")
    if a.dropped:
        lines.append(f"{a.dropped:,} events dropped (the nodes' rings were full): "
                     "the figures above miss them")
    return Text("\n".join(lines))
