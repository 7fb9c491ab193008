"""The pmap package's pure pieces, alone: options, result cells, the hand-out buffer,
chunk sizing, time limits and overdue chunks. The scheduler as a whole is in
test_pmap_sched.py; real nodes in tests/local/test_pmap.py."""

from __future__ import annotations

import time

import pytest

from clusterctl import errors
from clusterctl.api.pmap import speculation, timeouts
from clusterctl.api.pmap.blocks import FAILED, Block, Chunk
from clusterctl.api.pmap.buffer import ResultBuffer
from clusterctl.api.pmap.item_errors import ItemError
from clusterctl.api.pmap.nodes import MapNode
from clusterctl.api.pmap.options import Options
from clusterctl.api.pmap.overhead import ControllerCost
from clusterctl.api.pmap.sizing import Sizing
from clusterctl.api.pmap.source import Source
from clusterctl.api.pmap.stats import NodeStats
from clusterctl.api.pmap.tuning import (CONTROLLER_SHARE, COST_SAMPLE_CHUNKS, MAX_CHUNK_ITEMS,
                                        MAX_CHUNK_SECONDS, MIN_DEPTH, READ_AHEAD_ITEMS,
                                        TARGET_CHUNK_SECONDS)


class Conn:
    def __init__(self, slots: int = 2, rtt: float = 0.001) -> None:
        self.hello = {"slots": slots}
        self.rtt = rtt


def node(name: str = "n1", slots: int = 2, rtt: float = 0.001) -> MapNode:
    return MapNode(name, Conn(slots, rtt), NodeStats(name))


@pytest.mark.parametrize("bad, words", [
    ({"on_error": "ignore"}, "on_error must be one of raise, skip, collect"),
    ({"chunksize": 0}, "chunksize must be a positive integer"),
    ({"chunksize": True}, "chunksize must be a positive integer"),
    ({"retries": -1}, "retries must be 0 or more"),
    ({"poison_after": 0}, "poison_after must be 1 or more"),
    ({"item_timeout": 0}, "item_timeout must be a number of seconds above 0"),
    ({"item_timeout": float("inf")}, "item_timeout must be"),
    ({"item_timeout": "5"}, "item_timeout must be"),
])
def test_bad_options_are_refused_with_their_name(bad, words):
    with pytest.raises(errors.UsageError, match=words):
        Options(**bad)


def test_a_limit_below_zero_is_refused_and_a_limit_bounds_the_total():
    with pytest.raises(errors.UsageError, match="limit must be 0 or more"):
        Source([1, 2], limit=-1)
    assert Source(range(10), limit=4).total == 4
    assert Source(iter(range(10))).total is None
    endless = Source(iter(int, 1), limit=3)  # an endless iterator, cut
    assert endless.read(10).n == 3 and endless.done and endless.total == 3


def test_a_cell_is_filled_once_and_later_answers_are_duplicates():
    block = Block(10, 4)
    assert block.fill(1, ["a", "b"]) == 2
    assert block.fill(0, ["x", "y", "z"]) == 1  # cells 1 and 2 were filled
    assert block.values[:3] == ["x", "a", "b"] and block.remaining == 1
    error = ItemError(13, "n1", "ValueError", "bad")
    assert block.fail(3, error) and not block.fail(3, error)
    assert block.values[3] is FAILED and block.errors == {3: error} and block.remaining == 0


def test_ordered_blocks_go_out_in_input_order_and_a_stop_releases_its_block():
    buffer = ResultBuffer(ordered=True)
    first, second = Block(0, 2), Block(2, 2)
    buffer.add(first)
    buffer.add(second)
    second.fill(0, [1, 2])
    buffer.account(second, 10)
    assert buffer.ready(None) is None  # the first is not done
    first.fill(0, ["a"])
    first.fail(1, ItemError(1, "n1", "E", "m"))
    assert buffer.ready(None) is first and buffer.ready(None) is second and buffer.empty()
    stopped = Block(4, 3)
    buffer.add(stopped)
    stopped.fill(0, ["p"])
    assert buffer.ready(6) is None  # cell 1 before the stop at 6 still pending
    stopped.fill(1, ["q"])
    assert buffer.ready(6) is stopped


def test_unordered_blocks_go_out_when_complete():
    buffer = ResultBuffer(ordered=False)
    first, second = Block(0, 2), Block(2, 1)
    buffer.add(first)
    buffer.add(second)
    second.fill(0, [1])
    buffer.account(second, 5)
    assert buffer.ready(None) is second and not buffer.empty()
    first.fill(0, [1, 2])
    buffer.account(first, 5)
    assert buffer.ready(None) is first and buffer.empty()


def test_ordered_read_ahead_is_bounded_behind_a_slow_block():
    buffer = ResultBuffer(ordered=True)
    buffer.add(Block(0, 1))  # the head, waiting for a slow item
    assert buffer.readable(50, 1) == 50
    assert buffer.readable(50, READ_AHEAD_ITEMS - 10) == 10
    assert buffer.readable(50, READ_AHEAD_ITEMS) == 0


def test_chunks_start_at_one_item_then_at_most_double():
    sizing, n1 = Sizing(None), node()
    assert sizing.chunk_items(n1, None, 2) == 1
    sizing.learn(n1, 1, 1e-4, 10)  # 0.1 ms per item: 200 items make 20 ms
    assert sizing.target_items(n1, None, 2) == 200
    assert sizing.chunk_items(n1, None, 2) == 3  # 2 x largest so far + 1
    assert sizing.target_items(n1, 40, 2) == 20  # near the end: 2 ms worth at least
    fast, fresh = node("fast"), Sizing(None)
    fresh.learn(fast, 1, 1e-9, 10)
    assert fresh.target_items(fast, None, 2) == MAX_CHUNK_ITEMS
    assert Sizing(7).chunk_items(n1, None, 2) == 7


def test_chunks_grow_with_the_slots_so_the_controller_keeps_up():
    """100 one-slot nodes answering 10 ms items one by one would be 10,000 messages a
    second: the chunk time grows with slots times the controller's cost per chunk."""
    cost = ControllerCost()
    sizing, n1 = Sizing(None, cost), node(slots=1)
    sizing.learn(n1, 1, 0.0101, 10)  # a 10 ms sleep, a little late
    assert sizing.chunk_seconds(100) == TARGET_CHUNK_SECONDS  # nothing measured yet
    assert sizing.target_items(n1, None, 100) == 2  # 1.98 items of 10.1 ms are 2, not 1
    cost.per_chunk = 200e-6
    assert sizing.chunk_seconds(2) == TARGET_CHUNK_SECONDS  # 2 slots: 1.6% of a core
    assert sizing.chunk_seconds(100) == pytest.approx(100 * 200e-6 / CONTROLLER_SHARE)
    assert sizing.target_items(n1, None, 100) == round(0.4 / 0.0101)
    assert sizing.chunk_seconds(100_000) == MAX_CHUNK_SECONDS
    assert sizing.target_items(n1, 400, 100) == 1  # the end of the input still shrinks them


def burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_controller_cost_counts_the_maps_own_cpu_per_chunk_only():
    cost = ControllerCost()
    cost.resume()
    burn(0.02)  # the map's own work for the next COST_SAMPLE_CHUNKS answers
    for _ in range(COST_SAMPLE_CHUNKS):
        cost.answered()
    first = cost.per_chunk
    assert 0.02 / COST_SAMPLE_CHUNKS <= first < 0.06 / COST_SAMPLE_CHUNKS
    started = time.thread_time()
    burn(0.02)  # pickling items: grows with the chunk, not a cost of the message
    cost.item_work(started)
    cost.pause()
    burn(0.02)  # the caller consuming results
    cost.resume()
    for _ in range(COST_SAMPLE_CHUNKS):
        cost.answered()
    assert cost.per_chunk < 0.8 * first  # the second sample was near zero


def test_a_window_is_deeper_for_a_longer_round_trip():
    sizing = Sizing(None)
    near, far = node("near", rtt=0.0001), node("far", rtt=0.2)
    for n in (near, far):
        sizing.learn(n, 10, 0.01, 100)  # 1 ms per item: a 20-item chunk is 20 ms
        sizing.size_window(n, None, 4)
    assert near.window == 2 * (MIN_DEPTH + 1)
    assert far.window == 2 * (MIN_DEPTH + 10) and far.refill == far.window // 4


def test_a_time_limit_gives_the_slowest_item_the_timeout_and_the_others_their_time():
    assert timeouts.time_limit(5.0, 1, 0.1) == 5.0
    assert timeouts.time_limit(5.0, 3, 0.1) == pytest.approx(5.8)
    assert timeouts.time_limit(5.0, 3, None) == 15.0
    assert timeouts.time_limit(1.0, 3, 10.0) == 3.0  # each other item at most the timeout


def test_clocks_count_for_chunks_a_worker_can_have_started_only():
    n1 = node(slots=1)
    first, second = chunk_on(n1, seq=1, sent=100.0), chunk_on(n1, seq=2, sent=100.0)
    assert first.clock == 100.0 and second.clock is None  # behind the first, one worker
    first.limit = second.limit = 1.0
    assert timeouts.over_limit(n1, 100.5) == []
    del n1.inflight[id(first)]
    timeouts.restart_clocks(n1, first.seq, 102.0)
    assert second.clock == 102.0
    assert timeouts.over_limit(n1, 103.5) == [second]


def test_overdue_chunks_are_found_by_their_rank_and_twins_go_elsewhere_first():
    busy, idle = node("busy", slots=1, rtt=0.0), node("idle", slots=1, rtt=0.0)
    late = chunk_on(busy, seq=1, sent=0.0)
    queued = chunk_on(busy, seq=2, sent=0.0)  # expected after twice the item time
    found = speculation.overdue([busy, idle], lambda n: 0.1, 0.3, early=False)
    assert found == [late]  # 0.3 > 2 x 0.1 + 0.05, but not > 2 x 0.2 + 0.05
    assert speculation.target([busy, idle], late) is idle
    assert speculation.has_room(False)(idle) and not speculation.has_room(False)(busy)
    assert queued not in found


def chunk_on(n: MapNode, seq: int, sent: float) -> Chunk:
    chunk = Chunk(Block(seq, 1), 0, 1, b"")
    chunk.node, chunk.seq, chunk.sent = n, seq, sent
    timeouts.start_clock(n, chunk)
    n.inflight[id(chunk)] = chunk
    return chunk


def test_a_whole_block_answer_never_overwrites_cells_filled_or_failed_before_it():
    """A block's twin answered part of it first (a split's piece, or a retry), and one of
    its items failed for good; the whole-block answer that comes after fills only the
    cells still empty, and counts the rest as duplicates."""
    from clusterctl.api.pmap.answers import fill
    from clusterctl.api.pmap.stats import PmapStats

    block = Block(0, 5)
    stats = PmapStats()
    failed = []
    piece = Chunk(block, 2, 2, b"")
    assert fill(piece, True, ["c-first", "d-first"], stats, lambda *a: failed.append(a)) == 2
    block.fail(4, ItemError(4, "ValueError", "bad", ""))
    whole = Chunk(block, 0, 5, b"")
    assert fill(whole, True, ["a", "b", "c", "d", "e"], stats, lambda *a: failed.append(a)) == 2
    assert block.values == ["a", "b", "c-first", "d-first", FAILED] and block.remaining == 0
    assert stats.duplicates == 3 and failed == []
    # the common case: nothing known yet, the answer's list becomes the cells
    fresh = Block(10, 3)
    assert fill(Chunk(fresh, 0, 3, b""), True, [1, 2, 3], stats, None) == 3
    assert fresh.values == [1, 2, 3] and fresh.remaining == 0
