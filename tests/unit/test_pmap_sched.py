"""The pmap scheduler against scripted connections: exactly-once under every fault.

No processes here: a fake connection answers ``map`` requests by running the function
itself, or fails them as a node would (worker crash, lost connection, a function it
cannot load), in an order the test chooses. Real nodes are in test_pmap.py.
"""

from __future__ import annotations

import pickle
import random
import threading
import time

import pytest

from clusterctl import errors
from clusterctl.api.pmap import (READ_AHEAD_ITEMS, AllNodesLost, ItemError, ItemErrors, ItemTimeout,
                             PMap, PoisonItem)

from helpers import wait_for


class FakeConn:
    """Speaks the connection's public surface; ``policy`` decides each answer."""

    restricted = False

    def __init__(self, node: str, slots: int, policy) -> None:
        self.node = node
        self.hello = {"slots": slots, "pid": 1}
        self.rtt = 0.0001
        self.lost = None
        self.policy = policy
        self.fn = None
        self.ids = iter(range(1, 10**9))
        self.held: dict[int, tuple] = {}
        self.cancelled: list[int] = []
        self.requests = 0
        self.items_seen: list[int] = []
        self.running: set[int] = set()  # held requests a worker is running (for ``cancel``)

    def send(self, head, payload=b""):
        if head["op"] == "defn":
            self.fn = pickle.loads(payload)

    def request(self, head, payload=b"", callback=None, flush=True):
        if self.lost is not None:
            callback(None, b"", self.lost)
            return
        head["id"] = rid = next(self.ids)
        self.requests += 1
        items = pickle.loads(payload)
        self.items_seen.extend(items)
        self.held[rid] = (items, callback)
        self.policy(self, rid, items)

    def answer(self, rid: int) -> None:
        """Run the function over the request's items, as a worker would."""
        items, callback = self.held.pop(rid)
        self.reply(rid, items, callback)

    def reply(self, rid: int, items, callback) -> None:
        outcomes, all_ok = [], True
        for item in items:
            try:
                outcomes.append((True, self.fn(item)))
            except Exception as exc:  # noqa: BLE001
                all_ok = False
                outcomes.append((False, {"type": type(exc).__name__, "message": str(exc),
                                         "traceback": "Traceback...\n", "node": self.node,
                                         "kind": "raised"}, exc))
        head = {"op": "result", "id": rid, "ok": True}
        if all_ok:
            payload = pickle.dumps((1e-6 * len(items), True, [o[1] for o in outcomes]))
        else:
            payload = pickle.dumps((1e-6 * len(items), False, outcomes))
        callback(head, payload, None)

    def crash(self, rid: int) -> None:
        _, callback = self.held.pop(rid)
        callback({"op": "result", "id": rid, "ok": False, "error": {
            "type": "WorkerCrashed", "message": "worker process 9 was killed by SIGKILL",
            "traceback": "", "node": self.node, "kind": "crashed"}}, b"", None)

    def refuse(self, rid: int) -> None:
        _, callback = self.held.pop(rid)
        callback({"op": "result", "id": rid, "ok": False, "error": {
            "type": "ModuleNotFoundError", "message": "No module named 'nowhere'",
            "traceback": "", "node": self.node, "kind": "unpickle"}}, b"", None)

    def die(self) -> None:
        """The connection breaks: every request in flight fails, as the reader thread does."""
        self.lost = errors.NodeLost(self.node, "the node closed the connection")
        held, self.held = self.held, {}
        for _, callback in held.values():
            callback(None, b"", self.lost)

    def cancel(self, rid):
        """As a node does: the request is answered as cancelled (the request's worker is
        killed if it was running it: those in ``running``)."""
        self.cancelled.append(rid)
        held = self.held.pop(rid, None)
        if held is not None:
            message = "cancelled while running" if rid in self.running else "cancelled"
            held[1]({"op": "result", "id": rid, "ok": False, "error": {
                "type": "Cancelled", "message": message, "traceback": "", "node": self.node,
                "kind": "cancelled"}}, b"", None)

    def forget(self, rid):
        pass

    def flush(self):
        pass

    def fileno(self):
        return None  # not pollable: its answers arrive as callbacks from any thread

    def ping(self, timeout):
        return {}


class FakeCluster:
    connect_timeout = 5.0

    def __init__(self, conns: dict[str, FakeConn]) -> None:
        self.conns = conns
        self._slots = {}

    @property
    def nodes(self):
        return list(self.conns)

    def node_names(self, nodes=None):
        return list(self.conns) if nodes is None else list(nodes)

    def lost_with_hub(self, name):
        return False

    def with_environment(self, conn, fn, head, arguments=()):
        return head  # (nothing to ship: the scheduler's tests have no hosts)

    def connect(self, name):
        conn = self.conns[name]
        if conn.lost is not None:
            raise conn.lost
        return conn


def answer_now(conn, rid, items):
    conn.answer(rid)


def world(policies: dict[str, object], slots: int = 2) -> FakeCluster:
    return FakeCluster({name: FakeConn(name, slots, p) for name, p in policies.items()})


def double(x):
    return 2 * x


def test_results_equal_map_for_many_shapes():
    cluster = world({"a": answer_now, "b": answer_now})
    for data in ([], [7], list(range(1000)), list(range(20000))):
        assert list(PMap(cluster, double, data).values()) == [2 * x for x in data]
        assert sorted(PMap(cluster, double, iter(data), ordered=False).values()) == [2 * x for x in data]


def test_chunks_grow_for_fast_items_and_never_exceed_the_cap():
    cluster = world({"a": answer_now})
    run = PMap(cluster, double, range(100_000))
    assert list(run.values()) == [2 * x for x in range(100_000)]
    assert run.stats.nodes["a"].chunks < 200


def test_a_late_answer_from_a_lost_node_is_dropped():
    held = []

    def hold(conn, rid, items):
        held.append((conn, rid))

    cluster = world({"a": hold, "b": answer_now})
    run = PMap(cluster, double, range(50))
    it = run.values()
    conn_a = cluster.conns["a"]
    # a's answers are held; b does everything once a is declared lost
    timer = threading.Timer(0.2, lambda: stash_and_die(conn_a))
    timer.start()
    results = list(it)
    timer.join()
    assert results == [2 * x for x in range(50)]
    assert run.stats.nodes["a"].state == "lost"
    assert run.stats.requeued > 0
    assert run.stats.done == 50


def stash_and_die(conn: FakeConn) -> None:
    stash = dict(conn.held)
    conn.die()
    # the node "comes back" and delivers what it had: every one must be dropped
    for rid, (items, callback) in stash.items():
        head = {"op": "result", "id": rid, "ok": True}
        callback(head, pickle.dumps((0.0, True, [-1] * len(items))), None)


def test_worker_crash_splits_the_chunk_and_isolates_the_poison_item():
    def poison_13(conn, rid, items):
        if 13 in items:
            conn.crash(rid)
        else:
            conn.answer(rid)

    cluster = world({"a": poison_13, "b": poison_13})
    outcomes = list(PMap(cluster, double, range(100), chunksize=16, poison_after=3).outcomes())
    assert [o.index for o in outcomes] == list(range(100))
    bad = outcomes[13]
    assert isinstance(bad.error, PoisonItem) and bad.error.attempts == 3
    assert "SIGKILL" in bad.error.message
    assert all(o.ok and o.value == 2 * o.index for o in outcomes if o.index != 13)


def test_a_crash_that_does_not_repeat_is_retried_without_failing_anything():
    crashed = []

    def crash_once(conn, rid, items):
        if 5 in items and not crashed:
            crashed.append(rid)
            conn.crash(rid)
        else:
            conn.answer(rid)

    cluster = world({"a": crash_once})
    run = PMap(cluster, double, range(40), chunksize=8)
    assert list(run.values()) == [2 * x for x in range(40)]
    assert run.stats.nodes["a"].crashes == 1 and run.stats.failed == 0


def flaky(x):
    if x % 7 == 3:
        raise ValueError(f"bad {x}")
    return x


def test_on_error_raise_yields_everything_before_the_failed_item():
    cluster = world({"a": answer_now, "b": answer_now})
    got = []
    with pytest.raises(ItemError) as info:
        for value in PMap(cluster, flaky, range(100), chunksize=4).values():
            got.append(value)
    assert info.value.index == 3
    assert got == [0, 1, 2]
    assert info.value.remote_type == "ValueError" and "bad 3" in info.value.message


def test_on_error_skip_and_collect():
    cluster = world({"a": answer_now})
    expected = [x for x in range(50) if x % 7 != 3]
    assert list(PMap(cluster, flaky, range(50), on_error="skip").values()) == expected
    got = []
    with pytest.raises(ItemErrors) as info:
        for value in PMap(cluster, flaky, range(50), on_error="collect").values():
            got.append(value)
    assert got == expected
    assert [e.index for e in info.value.failures] == [x for x in range(50) if x % 7 == 3]
    assert info.value.exit_code == 3


_FAILED_ONCE: set = set()


def first_time_fails(x):
    """Fails the first time it sees 4 (the fakes share this module, so the state too)."""
    if x == 4 and x not in _FAILED_ONCE:
        _FAILED_ONCE.add(x)
        raise OSError("transient")
    return x


def test_retries_go_to_another_node_first():
    seen_by = {}

    def fail_on_a(conn, rid, items):
        for item in items:
            seen_by.setdefault(item, []).append(conn.node)
        conn.answer(rid)

    _FAILED_ONCE.clear()
    cluster = world({"a": fail_on_a, "b": fail_on_a})
    run = PMap(cluster, first_time_fails, range(10), chunksize=2, retries=2)
    assert list(run.values()) == list(range(10))
    assert run.stats.retries == 1
    assert len(seen_by[4]) == 2 and seen_by[4][0] != seen_by[4][1]


def test_retry_on_limits_which_errors_are_retried():
    cluster = world({"a": answer_now})
    run = PMap(cluster, flaky, range(10), retries=3, retry_on=(KeyError,), on_error="skip")
    list(run.values())
    assert run.stats.retries == 0 and run.stats.failed == 1


def test_a_node_that_cannot_load_the_function_is_left_out():
    def refuse(conn, rid, items):
        conn.refuse(rid)

    cluster = world({"a": refuse, "b": answer_now})
    run = PMap(cluster, double, range(30))
    assert list(run.values()) == [2 * x for x in range(30)]
    assert run.stats.nodes["a"].state == "failed"
    assert "nowhere" in run.stats.nodes["a"].reason


def test_no_node_can_load_the_function():
    def refuse(conn, rid, items):
        conn.refuse(rid)

    cluster = world({"a": refuse, "b": refuse})
    with pytest.raises(errors.RemoteError) as info:
        list(PMap(cluster, double, range(30)).values())
    assert "nowhere" in info.value.one_line()
    assert "no node could load" in info.value.hint


def test_every_node_lost_says_how_many_items_completed():
    count = {"n": 0}

    def die_after_some(conn, rid, items):
        count["n"] += 1
        if count["n"] > 6:
            conn.die()
        else:
            conn.answer(rid)

    cluster = world({"a": die_after_some, "b": die_after_some})
    with pytest.raises(AllNodesLost) as info:
        list(PMap(cluster, double, range(1000), chunksize=1).values())
    assert "items completed" in info.value.message
    assert info.value.completed == 6


def test_leaving_early_cancels_work_in_flight():
    def hold_some(conn, rid, items):
        if items[0] >= 8:
            return  # never answered: still in flight when the consumer leaves
        conn.answer(rid)

    cluster = world({"a": hold_some})
    it = PMap(cluster, double, range(100), chunksize=4).values()
    assert [next(it) for _ in range(8)] == [2 * x for x in range(8)]
    it.close()
    conn = cluster.conns["a"]
    assert conn.cancelled and not conn.held


def test_input_is_read_lazily_with_a_bounded_window():
    consumed = {"n": 0}

    def endless():
        while True:
            consumed["n"] += 1
            yield consumed["n"]

    cluster = world({"a": answer_now, "b": answer_now})
    it = PMap(cluster, double, endless()).values()
    for _ in range(10):
        next(it)
    it.close()
    assert consumed["n"] < 10_000  # a few windows' worth, however fast the items
    consumed["n"] = 0
    assert list(PMap(cluster, double, endless(), limit=5000).values()) == [2 * x for x in range(1, 5001)]


@pytest.mark.parametrize("seed", range(16))
def test_exactly_once_under_random_faults(seed):
    random_faults(seed)


def test_random_faults_deliver_late_answers_after_losses():
    """(So the runs above do test the fencing of a lost node's late answers.)"""
    assert sum(random_faults(seed) for seed in range(16)) > 0


def random_faults(seed: int) -> int:
    """Random crashes, losses, reordered and late answers: each item gets exactly one outcome.

    A node that dies has some of what it was running answered afterwards, late (as if it
    came back): those answers must be dropped."""
    rng = random.Random(seed)
    lock = threading.Lock()
    pending: list[tuple[FakeConn, int]] = []
    late: list[tuple] = []  # answers a lost node still gives, later
    delivered = {"late": 0}

    def settle(c, r):
        if r not in c.held:
            return
        roll = rng.random()
        if roll < 0.03 and c.node != "d":  # d never dies, so the run can always finish
            held = dict(c.held)
            c.die()
            late.extend((c, rid, items, callback) for rid, (items, callback) in held.items()
                        if rng.random() < 0.7)
        elif roll < 0.06:
            c.crash(r)
        else:
            c.answer(r)

    def deliver_late():
        rng.shuffle(late)
        while late and rng.random() < 0.5:
            c, rid, items, callback = late.pop()
            c.reply(rid, items, callback)
            delivered["late"] += 1

    def chaotic(conn, rid, items):
        with lock:
            pending.append((conn, rid))
            while pending and rng.random() < 0.6:
                settle(*pending.pop(rng.randrange(len(pending))))
            deliver_late()

    stop = threading.Event()

    def answer_eventually():  # what is held gets an answer sooner or later, in any order
        while not stop.wait(0.002):
            with lock:
                rng.shuffle(pending)
                while pending:
                    settle(*pending.pop())
                deliver_late()

    cluster = world({"a": chaotic, "b": chaotic, "c": chaotic, "d": chaotic})
    n = rng.choice([1, 10, 500, 3000])
    run = PMap(cluster, flaky, range(n), ordered=rng.random() < 0.5, retries=1,
               chunksize=rng.choice([None, 1, 7]), poison_after=50)
    helper = threading.Thread(target=answer_eventually)
    helper.start()
    try:
        outcomes = list(run.outcomes())
    finally:
        stop.set()
        helper.join()
    assert sorted(o.index for o in outcomes) == list(range(n))
    for o in outcomes:
        if o.index % 7 == 3:
            assert not o.ok and o.error.index == o.index
        else:
            assert o.ok and o.value == o.index
    assert run.stats.done == n
    assert sum(s.items for s in run.stats.nodes.values()) == n - run.stats.failed
    return delivered["late"]


def test_at_the_end_overdue_items_start_again_on_idle_slots():
    stuck = []

    def stall_first(conn, rid, items):
        if conn.node == "a" and not stuck:
            stuck.append(rid)  # never answered, as if its worker hung
            return
        conn.answer(rid)

    cluster = world({"a": stall_first, "b": answer_now})
    run = PMap(cluster, double, range(40), chunksize=4)
    assert list(run.values()) == [2 * x for x in range(40)]
    assert run.stats.speculated == 4
    assert cluster.conns["a"].cancelled == stuck  # the hung attempt was cancelled


def test_the_slower_twin_is_dropped_not_delivered_twice():
    on_a: dict[int, int] = {}  # item -> request id on a

    def a_holds(conn, rid, items):
        on_a[items[0]] = rid

    def b_answers_then_a_too(conn, rid, items):
        conn.answer(rid)
        original = on_a.pop(items[0], None)
        if original is not None:  # a backup ran here: now the original answers as well
            cluster.conns["a"].answer(original)

    cluster = world({"a": a_holds, "b": b_answers_then_a_too})
    run = PMap(cluster, double, range(12), chunksize=1)
    outcomes = list(run.outcomes())
    assert [o.value for o in outcomes] == [2 * x for x in range(12)]
    assert run.stats.done == 12 and run.stats.speculated > 0
    assert run.stats.nodes["a"].items + run.stats.nodes["b"].items == 12


def test_a_stuck_first_item_bounds_what_is_read_ahead():
    """Ordered results wait for item 0; meanwhile the slots work on, and the input is read
    ahead exactly up to the bound the scheduler promises, READ_AHEAD_ITEMS, no further."""
    consumed = {"n": 0}
    first = []

    def endless():
        while True:
            consumed["n"] += 1
            yield consumed["n"]

    def hold_first(conn, rid, items):
        if items[0] == 1 and not first:
            first.append(rid)  # answered when the test says
        else:
            conn.answer(rid)

    cluster = world({"a": hold_first})
    it = PMap(cluster, double, endless(), speculate=False).values()
    got = []
    consumer = threading.Thread(target=lambda: got.append(next(it)), daemon=True)
    consumer.start()
    wait_for(lambda: consumed["n"] >= READ_AHEAD_ITEMS, 20, message="the read-ahead bound")
    time.sleep(0.3)
    assert consumed["n"] == READ_AHEAD_ITEMS and not got
    cluster.conns["a"].answer(first[0])
    consumer.join(10)
    assert got == [2]
    it.close()


def test_a_stuck_item_is_started_again_elsewhere_while_input_is_still_read():
    """Speculation does not wait for the end of the input (an endless one has none)."""
    def never_first(conn, rid, items):
        if conn.node == "a" and 1 in items:
            return  # its worker hangs
        conn.answer(rid)

    def endless():
        i = 0
        while True:
            i += 1
            yield i

    cluster = world({"a": never_first, "b": answer_now})
    run = PMap(cluster, double, endless())
    it = run.values()
    got = []
    consumer = threading.Thread(target=lambda: got.extend(next(it) for _ in range(1000)),
                                daemon=True)
    consumer.start()
    consumer.join(10)
    assert got == [2 * x for x in range(1, 1001)]
    assert run.stats.speculated >= 1
    it.close()


class SlotConn(FakeConn):
    """One slot, as a node runs it: requests in the order sent, the first one running and
    the others waiting behind it; ``hang`` decides which items never end."""

    def __init__(self, node, hang) -> None:
        super().__init__(node, 1, None)
        self.hang = hang
        self.order: list[int] = []

    def request(self, head, payload=b"", callback=None, flush=True):
        self.policy = lambda conn, rid, items: self.order.append(rid)
        super().request(head, payload, callback, flush)
        self.run_next()

    def run_next(self):
        while self.order and not self.running:
            rid = self.order[0]
            if self.hang(self.held[rid][0]):
                self.running.add(rid)
                return
            self.order.pop(0)
            self.answer(rid)

    def cancel(self, rid):
        super().cancel(rid)
        if rid in self.order:
            self.order.remove(rid)
        if rid in self.running:  # its worker was killed: the next request starts
            self.running.discard(rid)
            self.run_next()


def test_an_item_over_its_time_limit_fails_and_what_waited_behind_it_does_not():
    """Item 3 never ends: it fails, as ItemTimeout, once the chunk it was in was split
    until it was alone; the requests queued behind it on the same slot (whose limits do
    not count while they wait) do not fail."""
    cluster = FakeCluster({"a": SlotConn("a", lambda items: 3 in items)})
    run = PMap(cluster, double, range(12), chunksize=4, item_timeout=0.2, retries=1,
               speculate=False)
    t0 = time.monotonic()
    outcomes = list(run.outcomes())
    assert time.monotonic() - t0 < 10
    assert [o.index for o in outcomes] == list(range(12))
    assert [o.value for o in outcomes if o.ok] == [2 * x for x in range(12) if x != 3]
    error = outcomes[3].error
    assert error.remote_type == "ItemTimeout" and error.attempts == 2
    assert isinstance(error.exception, ItemTimeout)
    assert "ran longer than the item timeout of 0.2 s" in error.message
    assert run.stats.failed == 1 and run.stats.done == 12
    assert cluster.conns["a"].cancelled  # the node was told: its worker is stopped


def test_item_timeout_must_be_a_positive_number():
    cluster = world({"a": answer_now})
    for bad in (0, -1, "1", float("nan"), float("inf"), True):
        with pytest.raises(errors.UsageError, match="item_timeout"):
            PMap(cluster, double, [1], item_timeout=bad)
    assert list(PMap(cluster, double, range(5), item_timeout=5).values()) == [0, 2, 4, 6, 8]


def test_errors_of_the_callers_own_input_and_arguments():
    cluster = world({"a": answer_now})

    def broken():
        yield 1
        raise RuntimeError("the input broke")

    with pytest.raises(RuntimeError, match="the input broke"):
        list(PMap(cluster, double, broken()).values())
    lock = threading.Lock()
    with pytest.raises(errors.SerializationError, match="function"):
        PMap(cluster, lambda x: (lock, x), [1])
    with pytest.raises(errors.SerializationError, match="input item 2 cannot be pickled"):
        list(PMap(cluster, double, [1, 2, lock, 4], chunksize=4).values())
    for bad in ({"on_error": "ignore"}, {"chunksize": 0}, {"retries": -1}, {"poison_after": 0}):
        with pytest.raises(errors.UsageError):
            PMap(cluster, double, [1], **bad)


def test_only_the_named_nodes_get_work():
    cluster = world({"a": answer_now, "b": answer_now, "c": answer_now})
    run = PMap(cluster, double, range(100), nodes=["b"], chunksize=5)
    assert list(run.values()) == [2 * x for x in range(100)]
    assert cluster.conns["b"].requests == 20
    assert cluster.conns["a"].requests == cluster.conns["c"].requests == 0
