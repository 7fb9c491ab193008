"""Every table fits the terminal it is printed on, at 80 columns and at 200: no line is
longer, no cell is cut (no "…"), and at 80 the columns that carry the answer stay whole
while the others are left out, those all zero first. Off a terminal, lines are whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from clusterctl.api.pipeline.stats import StageFigures
from clusterctl.api.pmap.stats import NodeStats, PmapStats
from clusterctl.api.trace.analysis import Analysis, NodeFigures, RunFigures
from clusterctl.render import fit
from clusterctl.render import pipeline as render_pipeline
from clusterctl.render import pmap as render_pmap
from clusterctl.render import trace as render_trace


def shown(renderable, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue().splitlines()


def assert_fits(lines: list[str], width: int, whole: list[str]) -> None:
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), text
    assert "…" not in text.replace("0 … ", ""), text  # (the timeline's header says 0 … 17 s)
    for cell in whole:
        assert cell in text, f"{cell!r} is not on the screen whole:\n{text}"


def stage_rows() -> list[StageFigures]:
    def row(i, name, t_s, rho, failed=0):
        return StageFigures(i, name, 20_000, 20_000 - failed, failed, 0, 0, 35, 1.5, t_s, 0.0123,
                            rho, 0.5, 1.5 / t_s, rho, 0)
    return [row(0, "read_the_records", 0.0071, 0.38), row(1, "normalise", 0.0183, 0.97, failed=12),
            row(2, "count", 0.0009, 0.05)]


@pytest.mark.parametrize("final", [True, False])
def test_the_pipeline_table_keeps_stage_counts_service_time_and_rho_at_80(final):
    rows = stage_rows()
    table = render_pipeline.stage_table(rows, rows[1], final=final)
    narrow = shown(table, 80)
    assert_fits(narrow, 80, ["read_the_records", "2 normalise ◀ bottleneck", "20,000", "19,988",
                             "18.3 ms", "0.97"])
    if final:
        assert "failed" in narrow[0] and "retries" not in narrow[0]  # (all zero: left out first)
    wide = shown(table, 200)
    assert_fits(wide, 200, ["queue max" if final else "queue", "replicas", "T_A", "12.3 ms"])
    assert len(wide) == len(narrow) == 2 + len(rows)  # a line a row: nothing wrapped


def test_the_pmap_summary_keeps_items_busy_and_state_at_80():
    stats = PmapStats(total=10, nodes={
        f"worker-{i:02d}.example.org": NodeStats(f"worker-{i:02d}.example.org", slots=64,
                                                 state="running", items=1_234_567, busy=1.0,
                                                 failures=3, retries=1_204, requeued=12, crashes=2,
                                                 joined=0.0, left=1.0)
        for i in range(3)})
    stats.nodes["worker-02.example.org"].state = "lost"
    stats.nodes["worker-02.example.org"].reason = "no heartbeat for 10 s"
    table = render_pmap.summary_table(stats)
    narrow = shown(table, 80)
    assert_fits(narrow, 80, ["worker-01.example.org", "1,234,567", "lost: no heartbeat"])
    assert narrow[-1].split("│")[-1].strip() == "10 s"  # (a reason wraps between words)
    assert_fits(shown(table, 100), 100, ["lost: no heartbeat for 10 s"])
    wide = shown(table, 200)
    assert_fits(wide, 200, ["requeued", "crashes", "1,204"])


def analysis() -> Analysis:
    nodes = [NodeFigures(f"gpu-node-{i}", "gpu-node-{i}.cluster.example.org", 64, 12_345, 1_234_567,
                         1e9, 0.93, 1_234.0, 123_456_789, 987_654_321, 12.5, 456.0, -15.9, 103.0,
                         0, "running", [0.5] * 60)
             for i in range(3)]
    runs = [RunFigures("pmap score_the_candidates", 12_345, 1_234_567, 812.0, 790.0,
                       [{"items": [1200, 8], "node": "gpu-node-1", "per_item_us": 90_000.0}] * 3)]
    pipeline = {"stages": [{"index": i, "name": name, "items_in": 20_000, "items_out": 20_000,
                            "failed": 0, "replicas": 1.5, "t_s": 0.0183, "t_a": 0.0123, "rho": 0.97}
                           for i, name in enumerate(["read_the_records", "normalise"])],
                "bottleneck": 1, "why": "stage 2 (normalise): ρ 0.97"}
    processes = [{"id": "gpu-node-1.12", "name": "inventory", "node": "gpu-node-1",
                  "function": "examples.kvs:serve", "life_us": 3.2e9, "messages_in": 123_456,
                  "bytes_in": 98_765_432, "messages_out": 123_400, "exit": None}]
    return Analysis(3.6e9, ["clusterctl", "pmap", "score.py"], nodes, [], runs, [], 0, 0, {},
                    1.01, [pipeline], 0, processes)


def test_the_trace_report_fits_80_columns_with_its_key_figures():
    narrow = shown(render_trace.report(analysis()), 80)
    assert_fits(narrow, 80, ["gpu-node-2", "1,234,567", "93%", "pmap score_the_candidates",
                             "812 µs", "2 normalise ◀ bottleneck", "0.97", "gpu-node-1.12",
                             "inventory", "(running)", "items 1200+8 on gpu-node-1"])
    wide = shown(render_trace.report(analysis()), 200)
    assert_fits(wide, 200, ["offset ± bound", "MB moved", "queue wait", "messages in", "98,765,432"])
    assert len(wide) < len(narrow) + 3  # (a node a line at both widths: nothing wrapped)


def test_off_a_terminal_lines_are_not_wrapped(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("COLUMNS", "80")  # a width asked for is kept
    assert fit.console_for(stderr=True).width == 80
    monkeypatch.delenv("COLUMNS")
    console = fit.console_for(stderr=True)
    assert not console.is_terminal and console.width == fit.NOT_A_TERMINAL_WIDTH
    console.file = io.StringIO()
    long_line = "bottleneck: stage 2 (normalise): " + "a reason in many words " * 10
    console.print(long_line)
    assert console.file.getvalue() == long_line + "\n"


def test_the_failed_items_table_wraps_a_long_error_between_words_only():
    from clusterctl.api.pmap import ItemError

    failures = [ItemError(i, "worker-01.example.org", "ValueError",
                          f"the record {i} has a field that is not a number: 'twelve and a half'")
                for i in range(3)]
    table = render_pmap.errors_table(failures)
    narrow = shown(table, 80)
    assert_fits(narrow, 80, ["3 items failed:", "ValueError: the record 1"])
    words = " ".join(line.split("│")[-1].strip() for line in narrow[3:])
    assert "'twelve and a half'" in words
    assert_fits(shown(table, 200), 200, ["worker-01.example.org", "ValueError: the record 2 has a "
                                         "field that is not a number: 'twelve and a half'"])


def test_the_hubs_node_table_fits_and_keeps_its_reasons(monkeypatch):
    from clusterctl.render import hub as render_hub

    nodes = [{"node": f"gpu-node-{i}", "target": f"gpu-node-{i}.cluster.example.org",
              "state": "lost" if i == 1 else "up", "since": 0.0, "rtt": 0.00042,
              "reason": "no heartbeat for 10 s: the SSH connection was cut" if i == 1 else None}
             for i in range(3)]
    for width, whole in ((80, ["gpu-node-1", "lost", "no heartbeat for 10 s"]),
                         (200, ["gpu-node-1.cluster.example.org", "0.4 ms",
                                "no heartbeat for 10 s: the SSH connection was cut"])):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        render_hub.show_nodes(console, nodes)
        assert_fits(console.file.getvalue().splitlines(), width, whole)
