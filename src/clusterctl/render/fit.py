"""Tables that fit the terminal they are printed on. rich squeezes a table that is too
wide by cutting every cell (``2,0…``, ``ρ 0.…``) or wrapping it over several lines,
which leaves a table no one can read. A ``FittedTable`` leaves out whole columns
instead, the least needed first: those whose every cell is empty or zero, then the
optional ones in the order the caller gives; its cells are never cut. Only a terminal
too narrow even for the columns that always stay wraps the prose (a reason) between
words, or, with none, folds the widest cells.

Off a terminal (a file, a pipe, a log) nothing is narrow: ``NOT_A_TERMINAL_WIDTH``
keeps every line whole for whoever reads it, unless ``COLUMNS`` asks for a width.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

NOT_A_TERMINAL_WIDTH = 1000
EMPTY = frozenset(("", "-", "0", "0.0", "0 B"))
UNBOUNDED = 1 << 20


def console_for(stderr: bool = False) -> Console:
    """A console for tables and text: the terminal's width (or ``COLUMNS``, when set),
    or no wrapping off a terminal."""
    console = Console(stderr=stderr, soft_wrap=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(stderr=stderr, soft_wrap=False, width=NOT_A_TERMINAL_WIDTH)
    return console


@dataclass(frozen=True)
class Column:
    """A column: its header, its alignment, ``drop``: the order in which it is left out
    when the table does not fit (1 first; None: never left out), and ``prose``: text
    (a reason) that may wrap between words on a terminal too narrow for the rest."""

    name: str
    justify: str = "right"
    drop: int | None = None
    prose: bool = False


class FittedTable:
    """``rows`` (one cell per column: text or a ``Text``) under ``columns``, laid out for
    the console's width when printed. ``table_options`` go to rich's ``Table``."""

    def __init__(self, columns: Sequence[Column], rows: Sequence[Sequence], **table_options) -> None:
        self.columns = list(columns)
        self.rows = [[c if isinstance(c, Text) else Text(str(c)) for c in row] for row in rows]
        self.table_options = {"show_edge": False, "header_style": "bold", **table_options}

    def layouts(self) -> list[list[int]]:
        """The columns kept, from all to those that always stay: an empty column goes
        first, then each optional one in its ``drop`` order."""
        empty = {i for i, col in enumerate(self.columns) if col.drop is not None and self.rows
                 and all(row[i].plain.strip() in EMPTY for row in self.rows)}
        optional = sorted((i for i, c in enumerate(self.columns) if c.drop is not None),
                          key=lambda i: (i not in empty, self.columns[i].drop))
        kept = list(range(len(self.columns)))
        layouts = [list(kept)]
        for i in optional:
            kept.remove(i)
            layouts.append(list(kept))
        return layouts

    def table(self, kept: list[int], fold: bool = False) -> Table:
        table = Table(**self.table_options)
        prose = any(self.columns[i].prose for i in kept)
        for i in kept:
            column = self.columns[i]
            wraps = fold and (column.prose or not prose)
            table.add_column(column.name, justify=column.justify, no_wrap=not wraps,
                             overflow="fold")
        for row in self.rows:
            table.add_row(*(row[i] for i in kept))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        layouts = self.layouts()
        unbounded = options.update(max_width=UNBOUNDED)  # (measured within the width, a
        for kept in layouts:  # table always "fits": what it needs is measured without one)
            table = self.table(kept)
            if Measurement.get(console, unbounded, table).maximum <= options.max_width:
                yield table
                return
        yield self.table(layouts[-1], fold=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(self.layouts()[-1]))
