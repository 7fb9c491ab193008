"""The pmap display rendered into a string: progress line, summary table, failed items."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from clusterctl.api.pmap import ItemError, NodeStats, PmapStats, PoisonItem
from clusterctl.render.pmap import PmapProgress, errors_table, fmt_duration, summary


def render(renderable) -> str:
    console = Console(width=120, file=StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def stats() -> PmapStats:
    s = PmapStats(total=1000, done=400, failed=2, retries=3, requeued=50, started=100.0,
                  finished=110.0)
    s.nodes = {
        "n1": NodeStats("n1", slots=2, state="running", items=300, busy=18.0, failures=2,
                        retries=3, joined=100.0),
        "n2": NodeStats("n2", slots=2, state="lost", reason="no heartbeat for 10.2 s",
                        items=100, busy=6.0, requeued=50, joined=100.0, left=105.0),
        "n3": NodeStats("n3", state="failed", reason="the host refused the connection"),
    }
    return s


def test_summary_names_every_node_with_its_counts_and_state():
    text = render(summary(stats()))
    assert "400 of 1,000 items in 10.0 s (40.0/s) on 2 nodes, 4 slots" in text
    assert "2 failed, 3 retried, 50 requeued" in text
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.split()}
    assert "300" in lines["n1"] and "90%" in lines["n1"] and "ok" in lines["n1"]
    assert "60%" in lines["n2"] and "lost: no heartbeat" in lines["n2"]
    assert "failed: the host refused" in lines["n3"]


def test_summary_of_an_interrupted_run():
    assert "; interrupted" in render(summary(stats(), interrupted=True))


def test_progress_line_shows_done_rate_eta_and_nodes():
    s = stats()
    s.finished = None
    text = render(PmapProgress(s, Console(file=StringIO()), "pmap task"))
    assert "pmap task" in text and "400/1,000" in text and "ETA" in text
    assert "n1 300" in text and "n2 100 (lost)" in text and "n3" in text
    assert "2 failed" in text


def test_errors_table_lists_items_and_counts_the_rest():
    failures = [ItemError(i, "n1", "ValueError", f"bad {i}") for i in range(25)]
    failures.append(PoisonItem(99, "n2", "WorkerCrashed", "killed by SIGSEGV", attempts=3))
    text = render(errors_table(failures, limit=20))
    assert "26 items failed" in text
    assert "ValueError: bad 3" in text and "... and 6 more" in text


def test_durations():
    assert fmt_duration(3.21) == "3.2 s"
    assert fmt_duration(59.9) == "59.9 s"
    assert fmt_duration(75) == "1:15"
    assert fmt_duration(3725) == "1:02:05"
