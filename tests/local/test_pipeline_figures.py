"""A pipeline's figures on real local nodes, in runs whose truth is known by construction
(stages that sleep a set time, on a set number of slots): the stage named as the
bottleneck is the one with the least capacity, ρ is how busy a stage's slots were, and
every count shown adds up: the headline against the results taken and the table.
"""

from __future__ import annotations

import re
import sys
import time

import cloudpickle
import pytest

from clusterctl.api.pipeline import Pipeline, bottleneck, figures

from helpers import node_pid

pytestmark = pytest.mark.local_only

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def nap_50ms(x):
    time.sleep(0.05)
    return x


def nap_200ms(x):
    time.sleep(0.2)
    return x


def nap_2ms(x):
    time.sleep(0.002)
    return x


def pass_on(x):
    return x


def inc(x):
    return x + 1


def fails_on_some(x):
    if x % 37 == 5:
        raise ValueError(f"bad {x}")
    return x


def fails_on_others(x):
    if x % 41 == 7:
        raise ValueError(f"bad {x}")
    return x


def double(x):
    return 2 * x


def started(cluster):
    """Both nodes up before the run, so every farm has its slots from its first item."""
    node_pid(cluster, "n1")
    node_pid(cluster, "n2")
    return cluster


def render(renderable) -> str:
    from io import StringIO

    from rich.console import Console

    console = Console(width=200, file=StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_a_slow_stage_on_one_replica_is_the_bottleneck_not_the_fast_one_before_it(
        make_local_cluster):
    """a: 50 ms on 2 replicas (40 items/s); b: 200 ms on 1 (5 items/s). a takes every item
    into b's queue within a second and then idles: b holds the run back, its slots are
    full, and a's were busy only at b's pace (5/s × 50 ms / 2 = 12%)."""
    cluster = started(make_local_cluster())
    run = Pipeline(cluster, [(nap_50ms, {"replicas": 2}), (nap_200ms, {"replicas": 1})], range(25))
    assert list(run.values()) == list(range(25))
    a, b = rows = figures(run.stats)
    neck, why = bottleneck(rows)
    assert neck is b, why
    assert b.rho > 0.8 and a.rho < 0.3, (a.rho, b.rho)
    assert b.capacity == pytest.approx(5.0, rel=0.15)
    assert a.capacity == pytest.approx(40.0, rel=0.15)
    assert b.queue_max > 10 and "its queue grew to" in why


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_items_are_measured_once_they_came_through(make_local_cluster, n):
    cluster = started(make_local_cluster())
    run = Pipeline(cluster, [nap_50ms, (nap_50ms, {"replicas": 1})], range(n))
    assert list(run.values()) == list(range(n))
    rows = figures(run.stats)
    assert all(r.t_s is not None and r.t_a is not None and r.rho is not None for r in rows), rows
    _, why = bottleneck(rows)
    assert "not measured" not in why and "no item has come through" not in why, why


def test_a_stage_with_a_tiny_share_of_its_farm_still_shows_its_replicas(make_local_cluster):
    """An identity fused with a 2 ms stage takes about 0.1% of the farm's slot time: a
    share of a slot, not none."""
    from clusterctl.render.pipeline import summary

    cluster = started(make_local_cluster())
    run = Pipeline(cluster, [pass_on, nap_2ms], range(200))
    assert list(run.values()) == list(range(200))
    rows = figures(run.stats)
    assert 0 < rows[0].replicas < 0.1 and rows[1].replicas > 3, rows
    table = {line.split("│")[0].split()[1]: [c.strip() for c in line.split("│")]
             for line in render(summary(run.stats)).splitlines() if "│" in line}
    assert table["pass_on"][6] not in ("0", "-"), table  # the replicas column


# -- counts that add up -----------------------------------------------------------------

def shown(text: str) -> tuple[int, int, dict[str, dict[str, int]]]:
    """The summary as printed: the headline's items and failed, and per stage its counts."""
    head = text.splitlines()[0]
    done = int(re.match(r"([\d,]+)(?: of [\d,]+)? items in ", head).group(1).replace(",", ""))
    failed = re.search(r"; ([\d,]+) failed", head)
    header, rows = None, {}
    for line in text.splitlines():
        if "┃" in line:
            header = [c.strip() for c in line.split("┃")]
        elif header is not None and "│" in line:
            cells = [c.strip() for c in line.split("│")]
            name = cells[0].replace("◀ bottleneck", "").split()[1]
            rows[name] = {k: int(v.replace(",", "")) for k, v in zip(header, cells)
                          if k in ("in", "out", "failed", "queue max")}
    return done, int(failed.group(1).replace(",", "")) if failed else 0, rows


def check_arithmetic(run, taken: int, complete: bool) -> None:
    """The headline's items are the results taken plus the items failed; the last stage's
    out is the results taken; the failed column adds up to the headline's; each stage's
    in is its out and failed (plus what was in it when the run stopped), and it took no
    more than the stage before put out."""
    from clusterctl.render.pipeline import summary

    done, failed, table = shown(render(summary(run.stats)))
    stages = list(table.values())
    assert done == taken + failed == run.stats.done, (done, taken, failed)
    assert stages[-1]["out"] == taken, stages
    assert sum(s["failed"] for s in stages) == failed == run.stats.failed
    for before, stage in zip([None] + stages, stages):
        if complete:
            assert stage["in"] == stage["out"] + stage["failed"], stages
            assert before is None or stage["in"] == before["out"], stages
        else:
            assert stage["in"] >= stage["out"] + stage["failed"], stages
            assert before is None or stage["in"] <= before["out"], stages


def test_the_summary_adds_up(make_local_cluster):
    """Items failing in two farms, every result taken; then a caller that takes 50
    results and stops, while the last stage had more ready (it hands out blocks of
    several): only what was taken counts as out."""
    cluster = started(make_local_cluster())
    stages = [inc, fails_on_some, (fails_on_others, {"replicas": 1}), double]
    run = Pipeline(cluster, stages, range(300), on_error="skip")
    got = list(run.values())
    assert len(got) == 300 - run.stats.failed
    assert [r.failed for r in figures(run.stats)] == [0, 8, 8, 0]  # x+1 = 5 + 37k; 7 + 41k
    check_arithmetic(run, len(got), complete=True)

    run = Pipeline(cluster, [inc, fails_on_some, (double, {"replicas": 1})], range(3000),
                   on_error="skip")
    results = run.values()
    taken = 0
    for _ in results:
        taken += 1
        if taken == 50:
            break
    results.close()
    check_arithmetic(run, taken, complete=False)
