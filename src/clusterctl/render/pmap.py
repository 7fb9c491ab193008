"""How a parallel map looks: a live progress line, the per-node summary, the failed items.

Everything goes to a stderr console, because stdout carries the results. The progress
line reads the run's live ``PmapStats`` each time rich refreshes it (a few times a
second), so the scheduler never waits for the display.
"""

from __future__ import annotations

from typing import Iterable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from clusterctl.api.pmap import ItemError, PmapStats
from clusterctl.render.fit import Column, FittedTable, console_for

STATE_STYLES = {"running": "green", "connecting": "yellow", "lost": "red", "failed": "red"}


def fmt_count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def fmt_rate(rate: float | None) -> str:
    if not rate:
        return "-"
    if rate >= 100:
        return f"{rate:,.0f}/s"
    return f"{rate:.1f}/s"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


class LiveView:
    """A view redrawn from a run's live stats while the run goes (``with`` it); it
    leaves nothing on the screen after, where the summary follows."""

    refresh_per_second = 8

    def __init__(self, stats, console: Console, label: str) -> None:
        self.stats = stats
        self.console = console
        self.label = label
        self._live: Live | None = None

    def __enter__(self):
        self._live = Live(self, console=self.console, refresh_per_second=self.refresh_per_second,
                          transient=True, redirect_stdout=False, redirect_stderr=False)
        self._live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class PmapProgress(LiveView):
    """The live line: bar, done/total, rate, ETA, and each node's count and state."""

    def __init__(self, stats: PmapStats, console: Console, label: str = "pmap") -> None:
        super().__init__(stats, console, label)

    def __rich__(self) -> RenderableType:
        s = self.stats
        grid = Table.grid(padding=(0, 1))
        for _ in range(5):
            grid.add_column(no_wrap=True)
        bar = ProgressBar(total=float(s.total) if s.total else None, completed=float(s.done), width=30)
        done = f"{fmt_count(s.done)}/{fmt_count(s.total)}" if s.total is not None else fmt_count(s.done)
        eta = s.eta()
        grid.add_row(Text(self.label, style="bold"), bar, done, fmt_rate(s.rate()),
                     f"ETA {fmt_duration(eta)}" if eta is not None else fmt_duration(s.elapsed()))
        nodes = Text()
        for name, node in s.nodes.items():
            if nodes:
                nodes.append("  ")
            nodes.append(name, style=STATE_STYLES.get(node.state, ""))
            nodes.append(" " + (fmt_count(node.items) if node.state != "connecting" else "…"))
            if node.state in ("lost", "failed"):
                nodes.append(f" ({node.state})", style="red")
        trouble = troubles(s)
        if trouble:
            nodes.append("  " + trouble, style="yellow")
        return Group(grid, nodes)


def stderr_console() -> Console:
    """Where progress and summaries go: the terminal's width, or, off a terminal (a log,
    a pipe), lines kept whole (``fit.console_for``)."""
    return console_for(stderr=True)


def task_lines_above(console: Console):
    """What tasks print (``TaskOutput.write``), through the console the live progress
    is drawn on: above it, whole, its prefix dimmed."""

    def write(where: str, line: str) -> None:
        text = Text(where + ": ", style="dim")
        text.append(line)
        console.print(text, soft_wrap=True, highlight=False)

    return write


def troubles(stats: PmapStats) -> str:
    """``3 failed, 12 retried, 40 requeued``: what went wrong so far (empty if nothing)."""
    counts = ((stats.failed, "failed"), (stats.retries, "retried"), (stats.requeued, "requeued"))
    return ", ".join(f"{n:,} {what}" for n, what in counts if n)


def summary_line(stats: PmapStats, interrupted: bool = False) -> Text:
    """``1,000 items in 2.3 s (435/s) on 2 nodes, 4 slots``, and what went wrong."""
    joined = [n for n in stats.nodes.values() if n.joined is not None]
    slots = sum(n.slots for n in joined)
    of = f" of {stats.total:,}" if stats.total is not None and stats.total != stats.done else ""
    items = "item" if (stats.total if of else stats.done) == 1 else "items"
    text = Text(f"{stats.done:,}{of} {items} in {fmt_duration(stats.elapsed())} "
                f"({fmt_rate(stats.rate())}) on {len(joined)} node{'s' * (len(joined) != 1)}, "
                f"{slots} slot{'s' * (slots != 1)}")
    trouble = troubles(stats)
    if trouble:
        text.append("; " + trouble, style="yellow")
    if interrupted:
        text.append("; interrupted", style="red")
    return text


def summary_table(stats: PmapStats) -> FittedTable:
    """One row per node: items, busy %, failures, retries, requeued, crashes, state.
    Narrower than the terminal, it leaves out the columns that are all zero, then
    crashes, requeued, retries and slots: node, items, busy, failures and state stay."""
    columns = [Column("node", "left"), Column("slots", drop=4), Column("items"), Column("busy"),
               Column("failures"), Column("retries", drop=3), Column("requeued", drop=2),
               Column("crashes", drop=1), Column("state", "left", prose=True)]
    now = stats.finished
    rows = []
    for name, n in stats.nodes.items():
        state = Text(n.state if not n.reason else f"{n.state}: {n.reason}",
                     style=STATE_STYLES.get(n.state, ""))
        if n.state == "running":
            state = Text("ok", style="green")
        rows.append([name, str(n.slots or "-"), f"{n.items:,}", fmt_percent(n.busy_fraction(now)),
                     f"{n.failures:,}", f"{n.retries:,}", f"{n.requeued:,}", f"{n.crashes:,}",
                     state])
    return FittedTable(columns, rows)


def summary(stats: PmapStats, interrupted: bool = False) -> Group:
    return Group(summary_line(stats, interrupted), summary_table(stats))


def errors_table(failures: Iterable[ItemError], limit: int = 20) -> Group:
    """The failed items (``--on-error=collect``): index, the stage (a pipeline's), node,
    error; the first ``limit``."""
    failures = list(failures)
    located = any(getattr(error, "where", None) for error in failures)  # a pipeline's stages
    columns = [Column("item")] + ([Column("stage", "left")] if located else []) \
        + [Column("node", "left", drop=1), Column("error", "left", prose=True)]
    rows = [[str(error.index)] + ([error.where or "-"] if located else [])
            + [error.node, Text(f"{error.remote_type}: {error.remote_message}", style="red")]
            for error in failures[:limit]]
    parts: list[RenderableType] = [Text(f"{len(failures):,} item{'s' * (len(failures) != 1)} failed:",
                                        style="bold red"), FittedTable(columns, rows)]
    if len(failures) > limit:
        parts.append(Text(f"... and {len(failures) - limit:,} more"))
    return Group(*parts)
