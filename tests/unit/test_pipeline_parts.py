"""The pure parts of a pipeline: stages grouped into farms, the queue between farms,
the figures (T_S, T_A, replicas, ρ) and the bottleneck named from them.

The figures are tested from hand-built stats whose true answer is known by
construction: each stage's service time, slots and items, and the run's length."""

from __future__ import annotations

import pickle

import pytest

from clusterctl import errors
from clusterctl.api.pipeline.feed import Feed, Metered
from clusterctl.api.pipeline.stages import farm_nodes, group_label, parse_stages, plan
from clusterctl.api.pipeline.stats import (FarmStats, PipelineStats, StageStats, bottleneck,
                                           figures)
from clusterctl.api.pmap import NodeStats
from clusterctl.node.stages import Stages


def f(x):
    return x


def g(x):
    return x


def h(x):
    return x


def shape(groups):
    return [[s.name for s in group] for group in groups]


def test_consecutive_stages_with_the_same_placement_share_a_farm():
    assert shape(plan(parse_stages([f, g, h]))) == [["f", "g", "h"]]
    assert shape(plan(parse_stages([f, (g, {"replicas": 2}), h]))) == [["f"], ["g"], ["h"]]
    assert shape(plan(parse_stages([f, (g, {"nodes": "a"}), (h, {"nodes": ["a"]})]))) == \
        [["f"], ["g", "h"]]
    assert shape(plan(parse_stages([(f, {"nodes": ["a"]}), (g, {"nodes": ["b"]}), h]))) == \
        [["f"], ["g"], ["h"]]
    assert shape(plan(parse_stages([(f, {"replicas": 1}), (g, {"replicas": 1})]))) == [["f"], ["g"]]


@pytest.mark.parametrize("stages, message", [
    (f, "not a single function"),
    ("f", "not a single str"),
    (5, "not int"),
    ([], "at least one stage"),
    ([f, 3], "stage 2 is not a function"),
    ([(f, 2)], "a function or a (function, {options}) pair"),
    ([(f, {"replica": 2})], "unknown option(s) replica"),
    ([(f, {"replicas": 0})], "replicas must be"),
    ([(f, {"replicas": True})], "replicas must be"),
    ([(f, {"nodes": []})], "nodes must be node names"),
    ([(f, {"nodes": [3]})], "nodes must be node names"),
])
def test_stages_a_tired_user_writes_are_refused_clearly(stages, message):
    with pytest.raises(errors.UsageError) as info:
        parse_stages(stages)
    assert message in str(info.value)


def test_farm_nodes_keep_the_others_off_pinned_nodes():
    specs = parse_stages([f, (g, {"nodes": ["b"]}), h])
    groups = plan(specs)
    names = ["a", "b", "c"]
    assert farm_nodes(groups[0], names, {"b"}, names) == ["a", "c"]
    assert farm_nodes(groups[1], names, {"b"}, names) == ["b"]
    assert farm_nodes(groups[0], ["b"], {"b"}, names) == ["b"]  # nothing else: all of them
    with pytest.raises(errors.UsageError, match="unknown node"):
        farm_nodes(plan(parse_stages([(f, {"nodes": ["z"]})]))[0], names, {"z"}, names)
    assert group_label(groups[0]) == "stage 1 (f)"
    assert group_label(plan(parse_stages([f, g]))[0]) == "stages 1-2 (f, g)"


def test_the_feed_hands_out_runs_of_consecutive_indices():
    feed = Feed(lambda items, start: pickle.dumps(items))
    feed.put(0, [10, 11])
    feed.put(2, [12])  # joins the run before it
    feed.put(5, [15, 16])  # after a gap (items 3 and 4 failed earlier)
    assert (feed.count, feed.done, feed.left()) == (5, False, None)
    first = feed.read(10)
    assert (first.index, first.n, pickle.loads(first.payload)) == (0, 3, [10, 11, 12])
    second = feed.read(1)
    assert (second.index, pickle.loads(second.payload)) == (5, [15])
    assert feed.read(0 + 5).index == 6
    assert feed.read(5) is None and not feed.done
    feed.close()
    assert feed.done and feed.total == 5


def test_a_metered_source_reads_no_further_than_allowed():
    feed = Feed(lambda items, start: pickle.dumps(items))
    feed.put(0, list(range(100)))
    metered = Metered(feed)
    metered.allow = 30
    assert metered.read(50).n == 30
    assert metered.read(50) is None
    metered.allow = None
    assert metered.read(50).n == 50 and metered.read_out == 80


def test_stages_run_in_turn_and_time_each():
    chain = Stages([lambda x: x + 1, lambda x: x * 2], ["stage 1 (a)", "stage 2 (b)"])
    value, times = chain(3)
    assert value == 8 and len(times) == 2 and all(t >= 0 for t in times)
    with pytest.raises(TypeError):
        chain("x")
    assert chain.failed_in == "stage 1 (a)"


def stats_of(busy, items, farms, first=0.0, queue_max=(0, 0, 0)):
    stages = []
    for i, (b, group) in enumerate(zip(busy, farms)):
        head = i == 0 or farms[i - 1] != group
        stages.append(StageStats(i, "fgh"[i], group, head, items_in=items, items_out=items,
                                 timed=items, busy=b, first_in=first if head else None,
                                 queue_max=queue_max[i]))
    groups = sorted(set(farms))
    return PipelineStats(stages, [FarmStats(None, slots=4) for _ in groups],
                         started=0.0, finished=10.0)


def test_fused_stages_share_their_farm_by_service_time():
    # 1001 items over 10 s: T_A 10 ms; 4 slots; stage g takes 8 of every 10 slot-seconds
    rows = figures(stats_of([2.0, 32.0, 6.0], 1001, [0, 0, 0]))
    assert [round(r.replicas, 2) for r in rows] == [0.2, 3.2, 0.6]
    assert rows[1].t_s == pytest.approx(32.0 / 1001)
    assert rows[1].t_a == pytest.approx(10 / 1001)  # the run's 10 s over the items through it
    assert all(r.rho == pytest.approx(1.0, rel=0.01) for r in rows)  # the farm is full
    neck, why = bottleneck(rows)
    assert neck.index == 1 and "80% of its farm's slot time" in why


def test_the_stage_with_the_highest_rho_is_the_bottleneck():
    rows = figures(stats_of([4.0, 38.0, 4.0], 1001, [0, 1, 2], queue_max=(0, 500, 3)))
    neck, why = bottleneck(rows)
    assert neck.index == 1 and "ρ 0.95" in why and "queue grew to 500" in why
    assert rows[0].rho < 0.2 and rows[2].rho < 0.2


def test_no_busy_stage_means_the_input_sets_the_pace():
    neck, why = bottleneck(figures(stats_of([1.0, 2.0, 1.0], 1001, [0, 1, 2])))
    assert neck is None and "input" in why
    neck, why = bottleneck(figures(stats_of([1.0, 2.0, 1.0], 0, [0, 1, 2])))
    assert neck is None and "not measured" in why


def test_arrivals_all_at_once_are_measured_over_the_run():
    # five items read at once at 1 s, the run over at 10 s: T_A is the run's 9 s over them
    rows = figures(stats_of([1.0, 1.0, 1.0], 5, [0, 1, 2], first=1.0))
    assert rows[0].t_a == pytest.approx(9 / 5)
    assert rows[0].rho == pytest.approx(1.0 / (4 * 9))
    neck, why = bottleneck(rows)
    assert neck is None and "not measured" not in why


# -- the bottleneck, from capacity ---------------------------------------------------------

def run_of(stages, farms, end, nodes=None):
    """Hand-built stats of a run that ended at ``end`` seconds, its first item read at 0:
    ``stages`` as (name, farm, seconds per item, items served, when its first item came,
    queue max, queue now); ``farms`` as (``replicas=``, slots now); ``nodes`` per farm."""
    built = []
    for i, (name, group, t_s, n, first, queue_max, queue) in enumerate(stages):
        head = i == 0 or stages[i - 1][1] != group
        built.append(StageStats(i, name, group, head, items_in=n, items_out=n, timed=n,
                                busy=t_s * n, first_in=first if head else None,
                                queue=queue if head else 0, queue_max=queue_max))
    return PipelineStats(built, [FarmStats(r, slots=s) for r, s in farms], started=0.0,
                         finished=end, farm_nodes=nodes or [])


# Each shape: the stats, the stage that limits the run (by construction: the least capacity,
# replicas / T_S, against what comes through), its ρ, and the capacity the verdict names.
SHAPES = {
    # a 40 ms stage on 1 slot (25/s) ahead of two 4 ms stages on 4 slots (1,000/s each)
    "first": (run_of([("a", 0, 0.040, 480, 0.0, 0, 0),
                      ("b", 1, 0.004, 480, 0.04, 0, 0),
                      ("c", 2, 0.004, 480, 0.05, 0, 0)],
                     [(1, 4), (None, 4), (None, 4)], 20.0), "a", 0.96, "25.0"),
    # a: 0.2 s on 2 slots (10/s) took all 40 items in 4.4 s; b: 0.5 s on 1 slot (2/s)
    # (a run seen: a rule from the times items entered each stage named a)
    "middle": (run_of([("a", 0, 0.2, 40, 0.0, 0, 0),
                       ("b", 1, 0.5, 40, 0.4, 34, 0)],
                      [(2, 2), (1, 2)], 22.9), "b", 0.89, "2.0"),
    # three farms; the last, 10 ms on 1 slot (100/s), keeps its queue full
    "last": (run_of([("a", 0, 0.001, 1000, 0.0, 0, 0),
                     ("b", 1, 0.002, 1000, 0.02, 64, 0),
                     ("c", 2, 0.010, 1000, 0.03, 64, 0)],
                    [(None, 4), (None, 4), (1, 4)], 10.3), "c", 0.97, "100"),
    # the 4 ms stage pinned to a node of 2 slots (500/s), the 1 ms stages on 6 (6,000/s)
    "pinned": (run_of([("a", 0, 0.001, 2000, 0.0, 0, 0),
                       ("b", 1, 0.004, 2000, 0.01, 64, 0),
                       ("c", 2, 0.001, 2000, 0.02, 0, 0)],
                      [(None, 6), (None, 2), (None, 6)], 4.1), "b", 0.98, "500"),
    # one farm of 4 slots: f, g, h fused, g taking 8 of every 10 slot-seconds
    "fused": (run_of([("f", 0, 0.001, 1000, 0.0, 0, 0),
                      ("g", 0, 0.008, 1000, 0.0, 0, 0),
                      ("h", 0, 0.001, 1000, 0.0, 0, 0)],
                     [(None, 4)], 2.55), "g", 0.98, "400"),
}


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_the_bottleneck_is_the_stage_with_the_least_capacity(shape_name):
    stats, expected, rho, capacity = SHAPES[shape_name]
    rows = figures(stats)
    neck, why = bottleneck(rows)
    assert neck is not None and neck.name == expected, why
    assert neck.rho == pytest.approx(rho, abs=0.01)
    assert why.startswith(f"stage {neck.index + 1} ({expected}): ρ {rho:.2f}"), why
    assert f"at most {capacity} items/s" in why, why
    for row in rows:  # ρ is utilisation against capacity: none above 1, none above the neck's
        assert 0 < row.rho <= 1.0 and row.rho <= neck.rho + 1e-9, (row.name, row.rho)
        # ... and every figure shown follows from the others: ρ = T_S / (replicas × T_A)
        assert row.rho == pytest.approx(row.t_s / (row.replicas * row.t_a))
        assert row.capacity == pytest.approx(row.replicas / row.t_s)


def test_a_stage_that_took_its_items_in_a_burst_is_not_shown_busier_than_the_one_it_waits_for():
    rows = figures(SHAPES["middle"][0])
    a, b = rows
    assert a.rho == pytest.approx(40 * 0.2 / (2 * 22.9))  # 17%: idle once b's queue was full
    assert b.rho == pytest.approx(40 * 0.5 / (1 * 22.5))  # (from its first item, at 0.4 s)
    assert (a.capacity, b.capacity) == (pytest.approx(10.0), pytest.approx(2.0))


def test_while_the_run_goes_a_growing_queue_names_the_stage_behind_it():
    # 4 s into the "middle" run: a took all 40 items (its slots were full so far), b
    # served 7 and 33 wait for it. b's ρ is below a's, but its queue grows: b holds the run
    stats = run_of([("a", 0, 0.2, 40, 0.0, 0, 0),
                    ("b", 1, 0.5, 7, 0.4, 33, 33)],
                   [(2, 2), (1, 2)], 4.0)
    stats.finished = None
    rows = figures(stats, now=4.0)
    assert rows[0].rho == pytest.approx(1.0) and rows[1].rho == pytest.approx(7 * 0.5 / 3.6)
    neck, why = bottleneck(rows)
    assert neck is rows[1], why
    assert "its queue grew to 33 items" in why


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_items_through_are_measured(n):
    # read at once, 50 ms each in a (4 slots) and then in b (1 slot): done at 0.11 or 0.16 s
    stats = run_of([("a", 0, 0.05, n, 0.0, 0, 0),
                    ("b", 1, 0.05, n, 0.05, 0, 0)], [(None, 4), (1, 4)], 0.06 + 0.05 * n)
    rows = figures(stats)
    assert all(r.t_s and r.t_a and r.rho for r in rows), rows
    _, why = bottleneck(rows)
    assert "not measured" not in why and "no item has come through" not in why, why
    assert rows[1].rho == pytest.approx(0.05 * n / (stats.finished - 0.05))


def test_replicas_are_the_slots_a_stage_had_also_once_its_nodes_are_gone():
    # a farm on n1 (2 slots, the whole run) and n2 (2 slots, lost at 5 s): 2,000 items
    # served; at the end no node runs it any more
    stats = run_of([("a", 0, 0.004, 2000, 0.0, 0, 0)], [(None, 0)], 10.0)
    stats.farm_nodes = [{"n1": NodeStats("n1", slots=2, state="lost", joined=-1.0, left=10.0),
                         "n2": NodeStats("n2", slots=2, state="lost", joined=0.0, left=5.0)}]
    [row] = figures(stats)
    assert row.replicas == pytest.approx(3.0)  # 2 slots for 10 s and 2 for 5 s, over 10 s
    assert row.rho == pytest.approx(8.0 / 30.0)


def test_a_node_that_joined_late_counts_from_when_it_joined():
    stats = run_of([("a", 0, 0.010, 350, 0.0, 0, 0)], [(None, 4)], 1.0)
    stats.farm_nodes = [{"n1": NodeStats("n1", slots=2, state="running", joined=-0.5),
                         "n2": NodeStats("n2", slots=2, state="running", joined=0.25)}]
    [row] = figures(stats)
    assert row.replicas == pytest.approx(3.5) and row.rho == pytest.approx(1.0)


# -- how it looks ------------------------------------------------------------------------

def render(renderable) -> str:
    from io import StringIO

    from rich.console import Console

    console = Console(width=140, file=StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def rendered_stats() -> PipelineStats:
    from clusterctl.api.pmap import NodeStats

    stats = stats_of([4.0, 38.0, 4.0], 1001, [0, 1, 2], queue_max=(0, 500, 3))
    stats.done, stats.total, stats.failed = 990, 1001, 11
    stats.stages[1].queue = 120
    stats.stages[1].failed = 11
    stats.farm_nodes = [{"a": NodeStats("a", state="running")},
                        {"b": NodeStats("b", state="lost", reason="no heartbeat for 10.2 s")}]
    return stats


def test_the_live_view_shows_every_stage_with_its_figures_and_marks_the_bottleneck():
    from clusterctl.render.pipeline import PipelineProgress

    text = render(PipelineProgress(rendered_stats(), None, "pipeline job.py").__rich__())
    assert "990 of 1,001 items in 10.0 s (99.0/s) through 3 stages; 11 failed" in text
    assert "nodes out: b (lost: no heartbeat for 10.2 s)" in text
    rows = {line.split()[1]: line for line in text.splitlines() if line.strip()[:1].isdigit()}
    assert set(rows) == {"f", "g", "h"}
    assert "◀ bottleneck" in rows["g"] and "◀" not in rows["f"] + rows["h"]
    assert "120" in rows["g"]  # the queue now, live
    assert "38.0 ms" in rows["g"] and "10.0 ms" in rows["g"] and "0.95" in rows["g"]


def test_the_summary_has_failures_and_the_queue_max_and_names_the_bottleneck_with_why():
    from clusterctl.render.pipeline import summary

    text = render(summary(rendered_stats(), interrupted=True))
    assert "; interrupted" in text and "queue max" in text and "retries" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("2 g"))
    assert "500" in row and "11" in row
    assert ("bottleneck: stage 2 (g): ρ 0.95, its 4 slots serve at most 105 items/s, its queue "
            "grew to 500 items") in text


def test_a_tiny_share_of_a_farm_is_shown_as_it_is_not_as_none():
    from clusterctl.render.pipeline import fmt_replicas, fmt_seconds, summary

    assert [fmt_replicas(r) for r in (0.004, 0.06, 0.14, 0.53, 0.97, 1.3, 2.0)] == \
        ["0.004", "0.06", "0.14", "0.53", "1", "1.3", "2"]
    assert [fmt_seconds(s) for s in (4e-7, 3e-6, 0.0381)] == ["0.4 µs", "3 µs", "38.1 ms"]
    # an identity fused with a 2 ms stage, 2,000 items on 4 slots: 0.1% of the farm's time
    stats = run_of([("pass_on", 0, 0.000002, 2000, 0.0, 0, 0),
                    ("nap", 0, 0.002, 2000, 0.0, 0, 0)], [(None, 4)], 1.05)
    row = next(line for line in render(summary(stats)).splitlines() if "pass_on" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[6] == "0.004" and cells[7] == "2 µs", cells  # replicas, T_S
