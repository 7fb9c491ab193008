"""How a pipeline looks: a live table of its stages (items in and out, queue, replicas,
T_S, T_A, ρ, the bottleneck marked), and at the end the same table with failures and
retries, and one line naming the bottleneck and why. All on stderr: stdout carries the
results."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.text import Text

from clusterctl.api.pipeline import PipelineStats, StageFigures, bottleneck, figures
from clusterctl.render.fit import Column, FittedTable
from clusterctl.render.pmap import LiveView, fmt_count, fmt_duration, fmt_rate


def fmt_seconds(seconds: float | None) -> str:
    """A service or inter-arrival time: µs, ms or s (below 1 µs with a decimal: a stage
    that took 0.4 µs an item is not shown as taking none)."""
    if seconds is None:
        return "-"
    if seconds < 1e-6:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_rho(rho: float | None) -> str:
    return "-" if rho is None else f"{rho:.2f}"


def fmt_replicas(replicas: float | None) -> str:
    """Slots: ``2``, ``1.3``, and a share of one slot to two figures (``0.53``, ``0.004``):
    a fused stage that takes little of its farm's time still had some of it, not none,
    and its ρ can be worked out again from the table."""
    if replicas is None:
        return "-"
    if replicas < 0.95:
        return f"{replicas:.2g}"
    return f"{replicas:.0f}" if abs(replicas - round(replicas)) < 0.05 else f"{replicas:.1f}"


def stage_table(rows: list[StageFigures], neck: StageFigures | None, final: bool) -> FittedTable:
    """A row per stage. Narrower than the terminal, it leaves out the columns that are
    all zero, then retries, the queue, T_A, replicas and failed, in that order: the
    stage, its items in and out, T_S and ρ always stay whole."""
    columns = [Column("stage", "left"), Column("in"), Column("out"),
               Column("queue max" if final else "queue", drop=2)]
    if final:
        columns += [Column("failed", drop=5), Column("retries", drop=1)]
    columns += [Column("replicas", drop=4), Column("T_S"), Column("T_A", drop=3), Column("ρ")]
    cells = []
    for row in rows:
        name = Text(f"{row.index + 1} {row.name}")
        if row is neck:
            name.append(" ◀ bottleneck", style="bold red")
        line = [name, fmt_count(row.items_in), fmt_count(row.items_out),
                fmt_count(row.queue_max if final else row.queue)]
        if final:
            line += [fmt_count(row.failed), fmt_count(row.retries)]
        line += [fmt_replicas(row.replicas), fmt_seconds(row.t_s), fmt_seconds(row.t_a),
                 Text(fmt_rho(row.rho), style="bold red" if row is neck else "")]
        cells.append(line)
    return FittedTable(columns, cells)


def headline(stats: PipelineStats, interrupted: bool = False) -> Text:
    """``1,000 items in 2.3 s (435/s) through 3 stages``, and what went wrong."""
    of = f" of {stats.total:,}" if stats.total is not None and stats.total != stats.done else ""
    n = len(stats.stages)
    items = "item" if (stats.total if of else stats.done) == 1 else "items"
    text = Text(f"{stats.done:,}{of} {items} in {fmt_duration(stats.elapsed())} "
                f"({fmt_rate(stats.rate())}) through {n} stage{'s' * (n != 1)}")
    if stats.failed:
        text.append(f"; {stats.failed:,} failed", style="yellow")
    lost = [f"{name} ({state})" for name, state in stats.nodes.items()
            if state.startswith(("lost", "failed"))]
    if lost:
        text.append("; nodes out: " + ", ".join(lost), style="yellow")
    if interrupted:
        text.append("; interrupted", style="red")
    return text


class PipelineProgress(LiveView):
    """The live view: the headline and the stage table, redrawn from the run's stats."""

    refresh_per_second = 4

    def __init__(self, stats: PipelineStats, console: Console, label: str = "pipeline") -> None:
        super().__init__(stats, console, label)

    def __rich__(self) -> RenderableType:
        rows = figures(self.stats)
        neck, _ = bottleneck(rows)
        title = Text(self.label + "  ", style="bold")
        title.append_text(headline(self.stats))
        return Group(title, stage_table(rows, neck, final=False))


def summary(stats: PipelineStats, interrupted: bool = False) -> Group:
    """The end: the headline, the table per stage, and the bottleneck with why."""
    rows = figures(stats)
    neck, why = bottleneck(rows)
    verdict = Text("bottleneck: " if neck is not None else "bottleneck: none; ", style="bold")
    verdict.append(why)
    return Group(headline(stats, interrupted), stage_table(rows, neck, final=True), verdict)
