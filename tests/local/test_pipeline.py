"""Pipelines on real local nodes: results equal the composition of the stages, the
queues between farms stay bounded, a lost node loses nothing, and the figures name the
stage that holds the run back.

Each fault test checks that every item came back exactly once: the results equal the
composition's, in order, with no item missing or doubled.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import sys
import time

import cloudpickle
import pytest

from clusterctl import errors
from clusterctl.api.pipeline import Pipeline, bottleneck, figures
from clusterctl.api.pmap import ItemError, ItemErrors, PoisonItem

from helpers import node_pid

pytestmark = pytest.mark.local_only  # pipelines over SSH hosts: tests/ssh/test_pipeline_ssh.py

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 1 << 20


def inc(x):
    return x + 1


def double(x):
    return x * 2


def minus3(x):
    return x - 3


def square(x):
    return x * x


def halve(x):
    return x // 2


def neg(x):
    return -x


SIX = [inc, double, minus3, square, halve, neg]


def composed(fns, items):
    out = []
    for x in items:
        for fn in fns:
            x = fn(x)
        out.append(x)
    return out


# -- results equal the composition -------------------------------------------------------

def test_empty_and_one_item(make_local_cluster):
    cluster = make_local_cluster()
    assert list(cluster.pipeline([inc, double], [])) == []
    assert list(cluster.pipeline([inc, double], [5])) == [12]
    assert list(cluster.pipeline([inc], iter([]))) == []


@pytest.mark.parametrize("n", range(1, 7))
def test_one_to_six_stages(make_local_cluster, n):
    """Fused, behind a fixed share, and pinned: every shape of farm chain gives the composition."""
    cluster = make_local_cluster()
    fns = SIX[:n]
    stages = [(fn, {"replicas": 1}) if i % 3 == 1 else (fn, {"nodes": ["n2"]}) if i % 3 == 2 else fn
              for i, fn in enumerate(fns)]
    items = list(range(-50, 250))
    assert list(cluster.pipeline(stages, items)) == composed(fns, items)
    assert sorted(cluster.pipeline(stages, items, ordered=False)) == sorted(composed(fns, items))


def test_a_hundred_thousand_tiny_items(make_local_cluster):
    cluster = make_local_cluster()
    items = range(100_000)
    run = Pipeline(cluster, [inc, (double, {"replicas": 2}), minus3], items)
    assert list(run.values()) == [(x + 1) * 2 - 3 for x in items]
    rows = figures(run.stats)
    assert [r.items_out for r in rows] == [100_000] * 3
    assert run.stats.done == 100_000


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest() * (len(data) // 32)


def test_items_of_several_megabytes(make_local_cluster):
    cluster = make_local_cluster()
    items = [bytes([i]) * (3 * MB) for i in range(8)]
    stages = [bytes.upper, (digest, {"replicas": 2}), len]
    assert list(cluster.pipeline(stages, items)) == [3 * MB] * 8
    got = list(cluster.pipeline([digest, (lambda d: hashlib.sha256(d).digest(), {"nodes": ["n1"]}),
                                 bytes.hex], items))
    assert got == [hashlib.sha256(digest(x)).hexdigest() for x in items]


def test_a_generator_as_input(make_local_cluster):
    cluster = make_local_cluster()
    got = list(cluster.pipeline([inc, (square, {"replicas": 1})], (x for x in range(500)), limit=300))
    assert got == [(x + 1) ** 2 for x in range(300)]


# -- bounded memory ----------------------------------------------------------------------

def test_a_slow_stage_holds_back_an_endless_input(make_local_cluster):
    """An endless generator into a fast stage, then a slow one with one slot: the input
    is read only about as fast as the slow stage takes items, not as fast as it can be,
    and the queue in front of the slow stage stays within its cap."""
    cluster = make_local_cluster()
    read = itertools.count()
    items = (next(read) for _ in itertools.count())

    def slow(x):
        time.sleep(0.002)
        return x

    run = Pipeline(cluster, [inc, (slow, {"replicas": 1})], items)
    got = []
    for value in run.values():
        got.append(value)
        if len(got) == 300:
            break
    assert got == list(range(1, 301))
    # a fast stage alone reads ~100,000 items a second; metered, the fast farm reads only
    # what the queue before the slow one has room for (its cap: 64 items here), so the
    # input is read about that far ahead of what came out (unmetered: 1,100 to 3,500)
    cap = run.farms[1].queue_cap()
    assert run.stats.stages[1].queue_max <= cap
    assert next(read) < 300 + 3 * cap


# -- faults ------------------------------------------------------------------------------

def test_sigkill_a_node_mid_run(make_local_cluster):
    cluster = make_local_cluster()
    victim = node_pid(cluster, "n1")
    node_pid(cluster, "n2")

    def slow(x):
        time.sleep(0.004)
        return x

    run = Pipeline(cluster, [inc, slow, (double, {"replicas": 2}), minus3], range(600))
    got = []
    for value in run.values():
        got.append(value)
        if len(got) == 40:
            os.kill(victim, signal.SIGKILL)
    assert got == [(x + 1) * 2 - 3 for x in range(600)]
    assert run.stats.nodes["n1"].startswith("lost")
    assert any(f.stats.requeued for f in run.farms)


def fails_on_7(x):
    if x == 7:
        raise ValueError("seven")
    return x


def test_a_failed_item_is_named_with_its_stage(make_local_cluster):
    cluster = make_local_cluster()
    with pytest.raises(ItemError) as info:
        list(cluster.pipeline([inc, fails_on_7, double], range(20)))
    assert info.value.index == 6 and "stage 2 (fails_on_7)" in info.value.message
    assert "seven" in info.value.message
    got = list(cluster.pipeline([inc, (fails_on_7, {"replicas": 1}), double], range(20),
                                on_error="skip"))
    assert got == [(x + 1) * 2 for x in range(20) if x != 6]
    with pytest.raises(ItemErrors) as many:
        list(cluster.pipeline([fails_on_7, inc, (fails_on_7, {"nodes": ["n1"]})], range(20),
                              on_error="collect"))
    assert [e.index for e in many.value.failures] == [6, 7]
    assert "stage 3 (fails_on_7)" in many.value.failures[0].message  # 6 + 1 is 7 at stage 3
    assert "stage 1 (fails_on_7)" in many.value.failures[1].message


def test_outcomes_keep_input_order_with_errors_from_any_stage(make_local_cluster):
    cluster = make_local_cluster()
    run = Pipeline(cluster, [fails_on_7, inc, (fails_on_7, {"replicas": 1}), double], range(30))
    outcomes = list(run.outcomes())
    assert [o.index for o in outcomes] == list(range(30))
    failed = [o.index for o in outcomes if not o.ok]
    assert failed == [6, 7]
    assert all(o.value == (o.index + 1) * 2 for o in outcomes if o.ok)
    rows = figures(run.stats)
    assert (rows[0].failed, rows[2].failed) == (1, 1)


def crash_on_3(x):
    if x == 3:
        os._exit(9)
    return x


def test_a_poison_item_is_named_with_its_farm(make_local_cluster):
    cluster = make_local_cluster()
    with pytest.raises(PoisonItem) as info:
        list(cluster.pipeline([inc, (crash_on_3, {"replicas": 2}), double], range(10)))
    assert info.value.index == 2 and "stage 2 (crash_on_3)" in info.value.message


def test_unknown_pinned_node_and_bad_stages_are_usage_errors(make_local_cluster):
    cluster = make_local_cluster()
    with pytest.raises(errors.UsageError, match="unknown node"):
        Pipeline(cluster, [(inc, {"nodes": ["gpu9"]})], range(3))
    with pytest.raises(errors.UsageError, match="unknown option"):
        Pipeline(cluster, [(inc, {"replica": 2})], range(3))
    with pytest.raises(errors.UsageError, match="at least one stage"):
        Pipeline(cluster, [], range(3))
    with pytest.raises(errors.UsageError, match="not a function"):
        Pipeline(cluster, [inc, 3], range(3))


# -- where the slots go ------------------------------------------------------------------

def test_a_stage_ten_times_slower_is_the_bottleneck_and_gets_more_replicas(make_local_cluster):
    cluster = make_local_cluster()

    def fast(x):
        time.sleep(0.001)
        return x

    def slow(x):
        time.sleep(0.010)
        return x

    run = Pipeline(cluster, [fast, slow, fast], range(300))
    assert list(run.values()) == list(range(300))
    rows = figures(run.stats)
    neck, why = bottleneck(rows)
    assert neck is not None and neck.index == 1, why
    assert rows[1].replicas > 3 * max(rows[0].replicas, rows[2].replicas)
    assert 0.008 < rows[1].t_s < 0.03 and rows[0].t_s < 0.005


def test_a_pinned_stage_runs_only_on_its_node(make_local_cluster):
    cluster = make_local_cluster()
    pids = {name: node_pid(cluster, name) for name in ("n1", "n2")}

    def where(x):
        return x, os.getppid()

    def where_too(pair):
        return pair + (os.getppid(),)

    run = Pipeline(cluster, [where, (where_too, {"nodes": ["n2"]})], range(200))
    got = list(run.values())
    assert [g[0] for g in got] == list(range(200))
    assert {g[2] for g in got} == {pids["n2"]}
    assert {g[1] for g in got} == {pids["n1"]}  # the others keep off the pinned node
    rows = figures(run.stats)
    assert rows[1].replicas == 2  # n2's slots


def test_a_fixed_share_caps_the_slots_a_stage_uses(make_local_cluster, env):
    cluster = make_local_cluster(slots=(3, 3))
    marks = env.root / "running"
    marks.mkdir()

    def capped(x):
        mark = marks / f"{os.getpid()}-{x}"
        mark.touch()
        time.sleep(0.01)
        concurrent = len(os.listdir(marks))
        mark.unlink()
        return concurrent

    got = list(cluster.pipeline([inc, (capped, {"replicas": 2})], range(120)))
    assert max(got) <= 2 and len(got) == 120


def test_a_slowed_node_gets_fewer_items(make_local_cluster):
    cluster = make_local_cluster()
    slow_pid = node_pid(cluster, "n1")
    node_pid(cluster, "n2")

    def work(x):
        time.sleep(0.02 if os.getppid() == slow_pid else 0.004)
        return x

    run = Pipeline(cluster, [inc, work], range(400))
    assert list(run.values()) == list(range(1, 401))
    items = {name: node.items for name, node in run.farms[0].stats.nodes.items()}
    assert items["n1"] < items["n2"] / 2, items
