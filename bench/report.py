"""The benchmarks' report: each figure beside its baseline, the ratio, and the goal; and
the check that a bench left no node running."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Rows:
    """The report: each figure beside its baseline, and the ratio against the goal."""

    def __init__(self, ours: str = "clusterctl") -> None:
        self.ours = ours  # the heading of clusterctl's column
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, what: str, ours: str, baseline: str, ratio: float, goal: float | None,
            below: bool = False) -> None:
        """``below``: the goal is a ratio under ``goal`` (else at least ``goal``)."""
        if goal is None:
            verdict = "(no goal set)"
        elif below:
            verdict = f"< {goal:g}x " + ("ok" if ratio < goal else "above goal")
        else:
            verdict = f">= {goal:g}x " + ("ok" if ratio >= goal else "below goal")
        self.rows.append((what, ours, baseline, f"{ratio:.2f}x", verdict))

    def note(self, what: str, text: str) -> None:
        self.rows.append((what, text, "", "", ""))

    def print(self) -> None:
        header = ("figure", self.ours, "baseline", "ratio", "goal")
        rows = [header] + self.rows
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for i, row in enumerate(rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))


def stray_nodes(root: Path, wait: float = 10.0) -> list[int]:
    """Processes still running whose command line names ``root`` (a world's nodes), after
    waiting up to ``wait`` seconds for them to exit."""
    mark = str(root).encode()
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if mark in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
