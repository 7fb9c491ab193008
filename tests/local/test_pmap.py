"""pmap on real local nodes: results equal the built-in map, and every fault loses nothing.

Each fault test checks that every item came back exactly once: the results equal
``map``'s, in order, with no item missing or doubled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest

from clusterctl import errors
from clusterctl.api.pmap import AllNodesLost, ItemError, ItemErrors, PMap, PoisonItem

from helpers import node_pid, wait_for

pytestmark = pytest.mark.local_only  # pmap over SSH hosts: tests/ssh/test_pmap_ssh.py

# the helpers below travel by value, as a script's do (this module is not importable on nodes)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 1 << 20


def hypot_of(x):
    """A module-level helper that uses an import."""
    return math.hypot(x, offset_of(x))


def offset_of(x):
    return x % 3


# -- results equal map -------------------------------------------------------------------

def test_shapes_equal_builtin_map(cluster):
    def square(x):
        return x * x

    assert list(cluster.pmap(square, [])) == []
    assert list(cluster.pmap(square, [7])) == [49]
    assert list(cluster.pmap(square, (x for x in range(1000)))) == [x * x for x in range(1000)]
    assert sorted(cluster.pmap(square, range(1000), ordered=False)) == [x * x for x in range(1000)]
    words = ["a", "bb", None, (1, 2), {"k": [1]}]
    assert list(cluster.pmap(repr, words)) == [repr(w) for w in words]


def test_200000_tiny_items(cluster):
    n = 200_000
    assert list(cluster.pmap(lambda x: x * 3 + 1, range(n))) == [x * 3 + 1 for x in range(n)]
    assert sorted(cluster.pmap(lambda x: -x, range(n), ordered=False)) == sorted(-x for x in range(n))


def test_items_and_results_of_50_mb(cluster):
    def blobs():
        for i in range(3):
            yield bytes([65 + i]) * (50 * MB)

    digests = list(cluster.pmap(lambda b: hashlib.sha1(b).hexdigest(), blobs()))
    assert digests == [hashlib.sha1(b).hexdigest() for b in blobs()]
    big = list(cluster.pmap(lambda n: b"y" * n, [50 * MB, 1]))
    assert [len(b) for b in big] == [50 * MB, 1] and big[0][-1:] == b"y"


@dataclasses.dataclass(frozen=True)
class Point:
    """A class of the caller's: its instances travel as items and come back as results."""

    x: int
    y: int


def test_closures_helpers_imports_and_the_callers_classes(cluster):
    scale = 10

    def scaled(x):
        return hypot_of(x) * scale

    assert list(cluster.pmap(scaled, range(100))) == [hypot_of(x) * scale for x in range(100)]
    points = [Point(i, -i) for i in range(50)]
    mirrored = list(cluster.pmap(lambda p: Point(p.y, p.x), points))
    assert mirrored == [Point(-i, i) for i in range(50)]
    assert all(type(p) is Point for p in mirrored)


def test_generator_input_is_read_lazily(cluster):
    read = []

    def endless():
        i = 0
        while True:
            read.append(i)
            yield i
            i += 1

    it = cluster.pmap(lambda x: time.sleep(0.01) or x, endless())
    assert [next(it) for _ in range(10)] == list(range(10))
    it.close()
    assert len(read) < 200
    assert list(cluster.pmap(lambda x: x, endless(), limit=2000)) == list(range(2000))


def test_pmap_results_gives_errors_as_values(cluster):
    def inverse(x):
        return 1 / x

    outcomes = list(cluster.pmap_results(inverse, [1, 0, 4]))
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert outcomes[0].value == 1.0 and outcomes[2].value == 0.25
    err = outcomes[1].error
    assert isinstance(err, ItemError) and err.index == 1
    assert err.remote_type == "ZeroDivisionError" and "in inverse" in err.remote_traceback
    assert err.node in ("n1", "n2")
    unordered = list(cluster.pmap_results(inverse, [1, 0, 4] * 50, ordered=False))
    assert sorted(o.index for o in unordered) == list(range(150))


def test_first_error_stops_the_map_with_index_node_and_traceback(cluster, env):
    def work(x):
        if x == 300:
            raise KeyError("no such thing")
        time.sleep(0.002)
        return x

    got = []
    with pytest.raises(ItemError) as info:
        for value in cluster.pmap(work, range(5000)):
            got.append(value)
    assert got == list(range(300))
    err = info.value
    assert err.index == 300 and err.remote_type == "KeyError"
    assert "item 300 failed on n" in err.one_line()
    assert "in work" in err.remote_traceback
    # the rest was cancelled: the nodes are idle again, and serve the next map
    for name in ("n1", "n2"):
        wait_for(lambda: cluster.connect(name).ping(5)["running"] == 0, 10, message=f"{name} idle")
    assert list(cluster.pmap(abs, [-1, -2])) == [1, 2]


def test_skip_collect_and_retries(cluster, env):
    def odd_fails(x):
        if x % 2:
            raise ValueError(x)
        return x

    assert list(cluster.pmap(odd_fails, range(20), on_error="skip")) == list(range(0, 20, 2))
    got = []
    with pytest.raises(ItemErrors) as info:
        for value in cluster.pmap(odd_fails, range(20), on_error="collect"):
            got.append(value)
    assert got == list(range(0, 20, 2))
    assert [e.index for e in info.value.failures] == list(range(1, 20, 2))
    assert info.value.exit_code == 3

    marks = env.root / "marks"
    marks.mkdir()

    def fails_first_time(x):
        mark = marks / str(x)
        if not mark.exists():
            mark.touch()
            raise ConnectionError("transient")
        return x

    # No speculation: a backup copy of an item may run after the first attempt
    # marked it, and then that item needs no retry.
    run = PMap(cluster, fails_first_time, range(30), retries=1, speculate=False)
    assert list(run.values()) == list(range(30))
    assert run.stats.retries == 30 and run.stats.failed == 0


def test_a_function_from_a_module_of_the_users_own_travels_with_it(cluster, env, monkeypatch):
    (env.root / "only_here.py").write_text("def f(x):\n    return x * 3\n")
    monkeypatch.syspath_prepend(str(env.root))
    import only_here

    try:
        assert list(cluster.pmap(only_here.f, range(10))) == [x * 3 for x in range(10)]
    finally:
        sys.modules.pop("only_here", None)


def test_a_function_no_node_can_load_is_a_clear_error(cluster, env, monkeypatch):
    (env.root / "only_here.py").write_text("def f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(env.root))
    import only_here

    cluster.shipper.on = False  # (as with --env off: its module stays here)
    try:
        with pytest.raises(errors.RemoteError) as info:
            list(cluster.pmap(only_here.f, range(10)))
        assert "only_here" in info.value.one_line()
        assert "importable" in info.value.hint
    finally:
        sys.modules.pop("only_here", None)


# -- faults ------------------------------------------------------------------------------

def test_sigkill_a_node_mid_run(make_local_cluster):
    cluster = make_local_cluster()
    victim = node_pid(cluster, "n1")
    run = PMap(cluster, lambda x: time.sleep(0.005) or x, range(400))
    got = []
    for value in run.values():
        got.append(value)
        if len(got) == 40:
            os.kill(victim, signal.SIGKILL)
    assert got == list(range(400))
    n1 = run.stats.nodes["n1"]
    assert n1.state == "lost" and n1.requeued > 0
    assert run.stats.nodes["n2"].items > 200


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_a_frozen_node_is_lost_by_heartbeat_and_its_late_results_are_dropped(make_local_cluster, env,
                                                                              ordered):
    """n1 is stopped (SIGSTOP) while its workers run items, and started again (SIGCONT) as
    soon as it is declared lost, while the run goes on: the run delivers each item once,
    nothing from n1, and n1 drops the lost connection's work (kills the workers running
    it; nothing of it starts afterwards)."""
    cluster = make_local_cluster(heartbeat_interval=0.3, heartbeat_timeout=1.5)
    victim = node_pid(cluster, "n1")
    node_pid(cluster, "n2")
    starts = env.root / "starts"

    def work(x):
        with open(starts, "a") as fh:
            fh.write(f"{os.getppid()} {os.getpid()} {x} {time.time()}\n")
        time.sleep(3.0 if os.getppid() == victim else 0.01)
        return x

    def started_on_n1() -> list[list[str]]:
        text = starts.read_text() if starts.exists() else ""
        return [f for f in (line.split() for line in text.splitlines()) if f[0] == str(victim)]

    run = PMap(cluster, work, range(600), ordered=ordered, speculate=False)
    healed = {}

    def freeze_then_heal():
        wait_for(lambda: len(started_on_n1()) >= 2, 20, message="items to start on n1")
        os.kill(victim, signal.SIGSTOP)
        try:
            wait_for(lambda: run.stats.nodes["n1"].state == "lost", 20, interval=0.005,
                     message="n1 to be declared lost")
        finally:
            healed["at"], healed["monotonic"] = time.time(), time.monotonic()
            os.kill(victim, signal.SIGCONT)

    healer = threading.Thread(target=freeze_then_heal, daemon=True)
    healer.start()
    got = list(run.values())
    healer.join(30)
    assert (got if ordered else sorted(got)) == list(range(600))
    assert healed["monotonic"] < run.stats.finished  # healed mid-run
    n1 = run.stats.nodes["n1"]
    assert n1.state == "lost" and "heartbeat" in n1.reason
    assert run.stats.done == 600 and run.stats.duplicates == 0
    assert n1.items == 0 and run.stats.nodes["n2"].items == 600
    # n1 cancelled the lost connection's work: its workers running it were killed (an
    # item takes 3 s there), and nothing started there after it was healed
    workers = {int(f[1]) for f in started_on_n1()}
    wait_for(lambda: not any(alive(pid) for pid in workers), 2, message="n1's workers killed")
    late = [f for f in started_on_n1() if float(f[3]) > healed["at"] + 0.2]
    assert not late


def test_sigkill_a_worker_mid_item(cluster, env):
    mark = env.root / "killed-once"

    def work(x):
        if x == 37 and not mark.exists():
            mark.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.003)
        return x

    # (no speculation: a twin of item 37's chunk that finished first would fence the crash
    # report off, and the run, rightly, would not count it; and items of 3 ms, not 1: a
    # worker answering faster than a task a millisecond holds replies back, and a crash
    # there runs its tasks again without a report, since which one crashed is not known)
    run = PMap(cluster, work, range(200), speculate=False)
    assert list(run.values()) == list(range(200))
    assert sum(n.crashes for n in run.stats.nodes.values()) == 1
    assert run.stats.failed == 0


def test_a_poison_item_is_reported_after_n_attempts(cluster):
    def work(x):
        if x == 13:
            os.kill(os.getpid(), signal.SIGSEGV)
        return x

    outcomes = list(cluster.pmap_results(work, range(100), poison_after=2))
    assert [o.index for o in outcomes] == list(range(100))
    poison = outcomes[13].error
    assert isinstance(poison, PoisonItem) and poison.attempts == 2
    assert "SIGSEGV" in poison.message
    assert [o.value for o in outcomes if o.index != 13] == [x for x in range(100) if x != 13]
    with pytest.raises(PoisonItem):
        list(cluster.pmap(work, range(20), poison_after=2))


def test_a_poison_item_among_tiny_ones_is_found_though_replies_travel_held_back(cluster):
    """One item per message, tiny: workers hold replies back to send several at once, so a
    crash cannot say at once which task it was; the node runs them again one by one."""
    def work(x):
        if x == 3000:
            os.kill(os.getpid(), signal.SIGSEGV)
        return x

    run = PMap(cluster, work, range(6000), chunksize=1, poison_after=2)
    outcomes = list(run.outcomes())
    assert [o.index for o in outcomes] == list(range(6000))
    assert [o.index for o in outcomes if not o.ok] == [3000]
    assert isinstance(outcomes[3000].error, PoisonItem)
    assert all(o.value == o.index for o in outcomes if o.ok)
    assert run.stats.duplicates == 0
    # (the crashes came while replies were held back: their tasks were run again)
    assert sum(cluster.connect(n).ping(5)["stats"]["rerun"] for n in ("n1", "n2")) > 0


def test_a_worker_killed_once_among_tiny_items_loses_nothing(cluster, env):
    mark = env.root / "killed-once"

    def work(x):
        if x == 3000 and not mark.exists():
            mark.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    run = PMap(cluster, work, range(6000), chunksize=1)
    assert list(run.values()) == list(range(6000))
    assert run.stats.failed == 0 and run.stats.duplicates == 0
    assert mark.exists()


def test_a_slower_node_gets_fewer_items(make_local_cluster):
    cluster = make_local_cluster()
    slow_pid = node_pid(cluster, "n1")

    def work(x):  # four times slower on n1's workers
        time.sleep(0.02 if os.getppid() == slow_pid else 0.005)
        return x

    run = PMap(cluster, work, range(240))
    assert list(run.values()) == list(range(240))
    n1, n2 = run.stats.nodes["n1"].items, run.stats.nodes["n2"].items
    assert n1 + n2 == 240
    assert n1 < n2 / 2, (n1, n2)


def test_a_node_with_fewer_slots_gets_fewer_items(make_local_cluster):
    cluster = make_local_cluster(slots=(1, 3))
    run = PMap(cluster, lambda x: time.sleep(0.01) or x, range(200))
    assert list(run.values()) == list(range(200))
    assert run.stats.nodes["n1"].items < run.stats.nodes["n2"].items / 1.5


def test_every_node_lost(make_local_cluster):
    cluster = make_local_cluster()
    pids = [node_pid(cluster, n) for n in ("n1", "n2")]
    got = []
    with pytest.raises(AllNodesLost) as info:
        for value in cluster.pmap(lambda x: time.sleep(0.005) or x, range(1000)):
            got.append(value)
            if len(got) == 20:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
    assert got == list(range(len(got)))
    assert info.value.completed >= 20
    assert f"{info.value.completed} of 1000 items completed" in info.value.message


def test_leaving_early_cancels_remote_work(cluster, env):
    """Items take 0.5 s: once the iterator is closed, the nodes are idle at once (well
    within one item's time), and no item starts after it."""
    starts = env.root / "starts"

    def work(x):
        with open(starts, "a") as fh:
            fh.write(f"{x} {time.time()}\n")
        time.sleep(0.5)
        return x

    cluster.world()
    it = cluster.pmap(work, range(100))
    assert next(it) == 0
    it.close()
    closed = time.time()
    for name in ("n1", "n2"):
        wait_for(lambda: cluster.connect(name).ping(5)["running"] == 0, 0.15,
                 message=f"{name} idle")
    time.sleep(0.7)  # a worker left running would have started its next item by now
    late = [line for line in starts.read_text().splitlines() if float(line.split()[1]) > closed]
    assert not late


# -- one slow item -------------------------------------------------------------------------

@pytest.mark.slow
def test_one_slow_item_never_stalls_an_ordered_map(cluster, env):
    """Item 0 runs until the test lets it end, the others take 10 ms: the other slots work
    on behind it (their results held back for the order), so all but the few items that
    share item 0's chunk are done while it runs. No clock bounds the test: today's code
    stalls at about 80 for good."""
    release = str(env.root / "release")

    def work(x):
        if x == 0:
            deadline = time.time() + 60
            while not os.path.exists(release) and time.time() < deadline:
                time.sleep(0.02)
        else:
            time.sleep(0.01)
        return x

    cluster.world()
    run = PMap(cluster, work, range(400))
    got: list = []
    consumer = threading.Thread(target=lambda: got.extend(run.values()), daemon=True)
    consumer.start()
    counts = []
    try:
        def others_done():
            counts.append(run.stats.done)
            return run.stats.done >= 390
        wait_for(others_done, 40, interval=0.1, message="the quick items behind item 0")
        assert consumer.is_alive() and not got  # item 0 still runs, nothing was handed out
        assert counts == sorted(counts) and len(set(counts)) > 2
    finally:
        open(release, "w").close()
        consumer.join(30)
    assert got == list(range(400))


def test_an_item_that_never_ends_fails_by_item_timeout(cluster):
    def work(x):
        if x == 3:
            time.sleep(3600)
        time.sleep(0.01)
        return x

    cluster.world()
    t0 = time.monotonic()
    outcomes = list(cluster.pmap_results(work, range(60), item_timeout=1.0, retries=1))
    assert time.monotonic() - t0 < 15
    assert [o.index for o in outcomes] == list(range(60))
    assert [o.value for o in outcomes if o.index != 3] == [x for x in range(60) if x != 3]
    err = outcomes[3].error
    assert isinstance(err, ItemError) and err.remote_type == "ItemTimeout"
    assert err.attempts == 2  # tried again under retries=1, then failed
    assert "item 3 failed on n" in err.message
    assert "ran longer than the item timeout of 1 s" in err.message
    # the workers running it were killed: nothing of the map runs any more
    for name in ("n1", "n2"):
        wait_for(lambda: cluster.connect(name).ping(5)["running"] == 0, 2, message=f"{name} idle")
    with pytest.raises(ItemError, match="ItemTimeout"):
        list(cluster.pmap(work, range(10), item_timeout=0.5))


def test_pmap_by_name_takes_and_gives_plain_data(cluster):
    """A "module.function" name: the nodes import it, items and results travel as plain
    data (tuples and bytes in their defined forms), nothing pickled."""
    items = [(1, 2), b"ab", {"k": [1, (2,)]}, 7]
    assert list(cluster.pmap("builtins.repr", items)) == [repr(i) for i in items]
    assert list(cluster.pmap("copy.copy", items, chunksize=1)) == items
    with pytest.raises(errors.SerializationError, match=r"input item 1 is a set"):
        list(cluster.pmap("builtins.repr", [1, {2}]))
    outcomes = list(cluster.pmap_results("builtins.set", [[1], 2]))
    assert "not plain data" in str(outcomes[0].error) and "TypeError" in str(outcomes[1].error)
    with pytest.raises(errors.UsageError, match="does not name a function"):
        cluster.pmap("sqrt", [1])
