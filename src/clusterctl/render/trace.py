"""A trace's analysis in the terminal: the nodes and their slots, each map's service
time and stragglers, each pipeline's stages, what failed, and a timeline with a lane
per node, so a run can be read without opening Perfetto."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from clusterctl.api.trace.analysis import Analysis
from clusterctl.render.pipeline import fmt_rho, fmt_seconds
from clusterctl.render.pmap import fmt_duration, fmt_percent

BLOCKS = " ▁▂▃▄▅▆▇█"


def fmt_us(us: float | None) -> str:
    return fmt_seconds(None if us is None else us / 1e6)


def lane(shares: list[float]) -> str:
    """One character per bucket, its height the busy share."""
    return "".join(BLOCKS[min(len(BLOCKS) - 1, round(s * (len(BLOCKS) - 1)))] for s in shares)


def print_report(a: Analysis) -> None:
    """The report on stdout (140 columns wide when stdout is not a terminal)."""
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=140)
    console.print(report(a))


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


def _nodes(a: Analysis) -> Table:
    table = Table(show_edge=False, header_style="bold", title="nodes", title_justify="left")
    for column in ("node", "slots", "tasks", "items", "busy", "queue wait", "rtt", "MB moved",
                   "MB/s", "offset ± bound", "dropped", "state"):
        table.add_column(column, justify="left" if column in ("node", "state") else "right")
    for n in a.nodes:
        offset = "-" if n.offset_us is None else f"{fmt_us(n.offset_us)} ± {fmt_us(n.offset_error_us)}"
        table.add_row(n.name, str(n.slots), f"{n.tasks:,}", f"{n.items:,}", fmt_percent(n.busy),
                      fmt_us(n.queue_wait_us), fmt_us(n.rtt_us),
                      f"{(n.bytes_in + n.bytes_out) / 1e6:.1f}", f"{n.mb_per_s:.1f}", offset,
                      f"{n.dropped:,}", Text(n.state, style="green" if n.state == "running" else "red"))
    return table


def _timeline(a: Analysis) -> Table:
    table = Table(show_edge=False, header_style="bold", title="busy over time (a lane per node)",
                  title_justify="left")
    table.add_column("node")
    table.add_column(f"0 … {fmt_duration(a.duration_us / 1e6)}", no_wrap=True)
    for n in a.nodes:
        table.add_row(n.name, Text(lane(n.timeline), style="cyan"))
    return table


def _runs(a: Analysis) -> Table:
    table = Table(show_edge=False, header_style="bold", title="maps", title_justify="left")
    for column in ("run", "tasks", "items", "per item", "median", "stragglers"):
        table.add_column(column, justify="left" if column in ("run", "stragglers") else "right")
    for r in a.runs:
        worst = ", ".join(f"items {s['items'][0]}+{s['items'][1]} on {s['node']} "
                          f"({fmt_us(s['per_item_us'])})" for s in r.stragglers[:3]) or "-"
        table.add_row(r.label, f"{r.tasks:,}", f"{r.items:,}", fmt_us(r.per_item_us),
                      fmt_us(r.median_item_us), worst)
    return table


def _pipeline(p: dict) -> Group:
    table = Table(show_edge=False, header_style="bold", title="pipeline stages", title_justify="left")
    for column in ("stage", "in", "out", "failed", "replicas", "T_S", "T_A", "ρ"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for s in p["stages"]:
        name = Text(f"{s['index'] + 1} {s['name']}")
        if s["index"] == p.get("bottleneck"):
            name.append(" ◀ bottleneck", style="bold red")
        replicas = "-" if s["replicas"] is None else f"{s['replicas']:.1f}"
        table.add_row(name, f"{s['items_in']:,}", f"{s['items_out']:,}", f"{s['failed']:,}",
                      replicas, fmt_seconds(s["t_s"]), fmt_seconds(s["t_a"]), fmt_rho(s["rho"]))
    return Group(table, Text("bottleneck: " + p.get("why", ""), style="bold"))


def _processes(a: Analysis) -> Table:
    table = Table(show_edge=False, header_style="bold", title="spawned processes",
                  title_justify="left")
    for column in ("process", "name", "node", "function", "life", "messages in", "bytes in",
                   "messages out", "ended"):
        table.add_column(column, justify="right" if column.startswith(("messages", "bytes", "life"))
                         else "left")
    for p in a.processes:
        table.add_row(Text(str(p["id"])), Text(p["name"] or "-"), Text(p["node"]),
                      Text(str(p["function"])), fmt_duration((p["life_us"] or 0) / 1e6),
                      f"{p['messages_in']:,}", f"{p['bytes_in']:,}", f"{p['messages_out']:,}",
                      Text(p["exit"] or "(running)"))
    return table


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
