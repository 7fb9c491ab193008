"""The pure parts of a pipeline: stages grouped into farms, the queue between farms,
the figures (T_S, T_A, replicas, ρ) and the bottleneck named from them."""

from __future__ import annotations

import pickle

import pytest

from clusterctl import errors
from clusterctl.api.pipeline.feed import Feed, Metered
from clusterctl.api.pipeline.stages import farm_nodes, group_label, parse_stages, plan
from clusterctl.api.pipeline.stats import (FarmStats, PipelineStats, StageStats, bottleneck,
                                           figures)
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


def stats_of(busy, items, farms, first=0.0, last=10.0, queue_max=(0, 0, 0)):
    stages = []
    for i, (b, group) in enumerate(zip(busy, farms)):
        head = i == 0 or farms[i - 1] != group
        stages.append(StageStats(i, "fgh"[i], group, head, items_in=items, items_out=items, busy=b,
                                 first_in=first if head else None, last_in=last if head else None,
                                 input_closed=True, queue_max=queue_max[i]))
    groups = sorted(set(farms))
    return PipelineStats(stages, [FarmStats(None, slots=4) for _ in groups],
                         started=0.0, finished=10.0)


def test_fused_stages_share_their_farm_by_service_time():
    # 1001 items over 10 s: T_A 10 ms; 4 slots; stage g takes 8 of every 10 slot-seconds
    rows = figures(stats_of([2.0, 32.0, 6.0], 1001, [0, 0, 0]))
    assert [round(r.replicas, 2) for r in rows] == [0.2, 3.2, 0.6]
    assert rows[1].t_s == pytest.approx(32.0 / 1001)
    assert rows[1].t_a == pytest.approx(0.01)
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


def test_arrivals_all_at_once_give_no_inter_arrival_time():
    rows = figures(stats_of([1.0, 1.0, 1.0], 5, [0, 1, 2], first=1.0, last=1.0))
    assert rows[0].t_a is None and rows[0].rho is None


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
    assert "bottleneck: stage 2 (g): ρ 0.95, its queue grew to 500 items" in text
