"""The benchmarks' report: each figure beside its baseline, the ratio, and the goal."""

from __future__ import annotations


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
