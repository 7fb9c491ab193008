"""Parallel map over the world: every slot of every node, every result exactly once.

The scheduler runs in the caller's thread, inside the iterator. See docs/how-it-works.md,
sections "pmap: chunks, windows and read-ahead" and "pmap: exactly once".
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import pickle
import queue
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from clusterctl import errors
from clusterctl.session.outcomes import remote_error
from clusterctl.api.pickling import dumps

ON_ERROR = ("raise", "skip", "collect")
DEFAULT_POISON_AFTER = 3
TARGET_CHUNK_SECONDS = 0.02  # a chunk's compute time: per-message overhead is ~1% of it
MIN_CHUNK_SECONDS = 0.002  # near the end of a known input, chunks shrink, but not below this
MAX_CHUNK_ITEMS = 50_000
MAX_CHUNK_BYTES = 8 << 20  # pickled items (or results) of one chunk, when items are small
MAX_INFLIGHT_BYTES = 256 << 20  # pickled items in flight over all nodes (one chunk per node always)
MAX_BUFFERED_BYTES = 256 << 20  # finished results held back to keep the input order
READ_AHEAD_ITEMS = 100_000  # ordered: items read but not handed out yet, at most (see below)
MIN_DEPTH, MAX_DEPTH = 2, 32  # chunks in flight per slot
WAIT_SECONDS = 0.5
PUMP_SECONDS = 0.0005  # while handing out results, read the connections this often
JOIN_GRACE_SECONDS = 3.0  # at the end, how long to wait for nodes still being connected
CANCEL_WAIT_SECONDS = 3.0  # when leaving early, how long to wait for nodes to confirm cancels
SPECULATE_AFTER = 0.05  # a chunk is overdue this long past twice its expected time
SPECULATE_SCAN_SECONDS = 0.25  # while input is still read, look for overdue chunks this often
SPECULATE_EARLY_AFTER = 1.0  # ... and start one again once this long past 4 times its expected time
TIMEOUT_SCAN_SECONDS = 0.1  # with item_timeout, look for chunks over their limit this often
_PLAIN = frozenset((int, float, str, bytes, bool, type(None), complex))
_PENDING = object()  # a result slot not filled yet
_FAILED = object()  # a result slot whose item failed (the error is in Block.errors)
_JOIN = object()


# -- errors ------------------------------------------------------------------------------

class ItemError(errors.RemoteError):
    """One item failed: its function raised (after its retries), or it crashed workers.

    ``index`` is the item's position in the input, ``node`` where it last ran,
    ``remote_traceback`` the traceback there, ``attempts`` how often it was tried.
    """

    def __init__(self, index: int, node: str, remote_type: str, remote_message: str,
                 remote_traceback: str = "", *, exception: BaseException | None = None,
                 attempts: int = 1) -> None:
        super().__init__(node, remote_type, remote_message, remote_traceback, exception=exception)
        self.index = index
        self.attempts = attempts
        tries = f" (tried {attempts} times)" if attempts > 1 else ""
        self.message = f"item {index} failed on {node}: {remote_type}: {remote_message}{tries}"

    def __reduce__(self):
        return (_rebuild_item_error, (self.__class__, self.index, self.node, self.remote_type,
                                      self.remote_message, self.remote_traceback, self.attempts))


class ItemTimeout(Exception):
    """What an item that ran longer than ``item_timeout`` fails with (as the
    ``exception`` of its ``ItemError``, whose ``remote_type`` is ``"ItemTimeout"``);
    list it in ``retry_on`` to retry such items."""


class PoisonItem(ItemError):
    """An item that crashed the worker (or took its node down) every time it ran."""

    def __init__(self, index: int, node: str, remote_type: str, remote_message: str,
                 remote_traceback: str = "", *, exception: BaseException | None = None,
                 attempts: int = 1) -> None:
        super().__init__(index, node, remote_type, remote_message, remote_traceback,
                         exception=exception, attempts=attempts)
        self.message = (f"item {index} is poison: it crashed a worker or lost its node each of "
                        f"the {attempts} times it ran (last on {node}: {remote_message}); "
                        "it was not retried further")


def _rebuild_item_error(cls, index, node, remote_type, remote_message, remote_traceback, attempts):
    return cls(index, node, remote_type, remote_message, remote_traceback, attempts=attempts)


class ItemErrors(errors.ClusterError):
    """``on_error="collect"``: the map finished, and these items failed (exit code 3)."""

    exit_code = errors.EXIT_SOME_NODES_FAILED

    def __init__(self, failures: list[ItemError], total: int) -> None:
        first = failures[0]
        more = f"; the first: {first.message}" if failures else ""
        super().__init__(f"{len(failures)} of {total} items failed{more}")
        self.failures = failures
        self.total = total


class AllNodesLost(errors.ClusterError):
    """No node is left to run the remaining items."""

    def __init__(self, message: str, *, completed: int, reasons: dict[str, str]) -> None:
        super().__init__(message, hint="check the nodes with `clusterctl world`; the items that "
                                       "completed were returned")
        self.completed = completed
        self.reasons = reasons


# -- what a run reports ------------------------------------------------------------------

class Outcome:
    """One item's outcome: ``index`` in the input, and ``value`` or ``error``."""

    __slots__ = ("index", "value", "error")

    def __init__(self, index: int, value: Any = None, error: ItemError | None = None) -> None:
        self.index = index
        self.value = value
        self.error = error

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> Any:
        """The value, or raise the item's error."""
        if self.error is not None:
            raise self.error
        return self.value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return (self.index, self.value, self.error) == (other.index, other.value, other.error)

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Outcome({self.index}, error={self.error.message!r})"
        return f"Outcome({self.index}, {self.value!r})"


@dataclass
class NodeStats:
    """What one node did in a run (read by the progress display while it runs)."""

    name: str
    slots: int = 0
    state: str = "connecting"  # connecting, running, lost, failed (could not run the function)
    reason: str = ""
    items: int = 0  # results this node delivered
    chunks: int = 0
    busy: float = 0.0  # seconds its workers spent in the function
    failures: int = 0  # items that failed for good here
    retries: int = 0  # items that failed here and were tried again
    requeued: int = 0  # items taken back from it (lost, crashed, could not load)
    crashes: int = 0  # worker crashes
    joined: float | None = None
    left: float | None = None

    def busy_fraction(self, now: float | None = None) -> float | None:
        if self.joined is None or not self.slots:
            return None
        end = self.left if self.left is not None else (now or time.monotonic())
        span = end - self.joined
        return min(1.0, self.busy / (span * self.slots)) if span > 0 else None


@dataclass
class PmapStats:
    """Counters of a whole run; ``nodes`` in hosts-file order."""

    total: int | None = None
    done: int = 0  # items with a final outcome (value or error)
    failed: int = 0
    retries: int = 0
    requeued: int = 0
    duplicates: int = 0  # late answers for items already done, dropped
    speculated: int = 0  # items started again at the end, on an idle slot, to end sooner
    started: float | None = None
    finished: float | None = None
    nodes: dict[str, NodeStats] = field(default_factory=dict)

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def rate(self) -> float | None:
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 and self.done else None

    def eta(self) -> float | None:
        rate = self.rate()
        if self.total is None or not rate:
            return None
        return max(0.0, (self.total - self.done) / rate)

    @property
    def slots(self) -> int:
        return sum(n.slots for n in self.nodes.values() if n.state == "running")


# -- the scheduler's state -----------------------------------------------------------------

class _Block:
    """Consecutive items read together; ``values`` holds their results once known."""

    __slots__ = ("start", "n", "values", "remaining", "errors", "nbytes", "complete")

    def __init__(self, start: int, n: int) -> None:
        self.start = start
        self.n = n
        self.values: list | None = None  # None until a first result arrives
        self.remaining = n
        self.errors: dict[int, ItemError] = {}
        self.nbytes = 0
        self.complete = False  # unordered: queued to be handed out

    def slots(self) -> list:
        if self.values is None:
            self.values = [_PENDING] * self.n
        return self.values


class _Chunk:
    """One attempt at part of a block on one node; dead once answered or abandoned."""

    __slots__ = ("block", "offset", "n", "payload", "tries", "strikes", "avoid", "node",
                 "rid", "sent", "live", "last_crash", "twin", "seq", "clock", "limit",
                 "expired", "unstarted")

    def __init__(self, block: _Block, offset: int, n: int, payload: bytes, *, tries: int = 0,
                 strikes: int = 0, avoid: frozenset = frozenset(), last_crash=None,
                 unstarted: int = 0) -> None:
        self.block = block
        self.offset = offset
        self.n = n
        self.payload = payload
        self.tries = tries  # how often these items' function raised and was retried
        self.strikes = strikes  # worker crashes (alone) and node losses these items saw
        self.avoid = avoid  # nodes to avoid if another can take it
        self.node: _Node | None = None
        self.rid = None
        self.sent = 0.0
        self.live = False
        self.last_crash = last_crash
        self.twin: _Chunk | None = None  # a backup attempt of the same items (speculation)
        self.seq = 0  # the order it was sent in
        # item_timeout: when its time limit started counting (None: it cannot have started
        # yet), the limit in seconds, whether it was found over it (and cancelled), and how
        # often it was cancelled so before it had started on its node
        self.clock: float | None = None
        self.limit = 0.0
        self.expired = False
        self.unstarted = unstarted

    @property
    def index(self) -> int:
        return self.block.start + self.offset

    def covered(self) -> bool:
        """Its twin is still running, so this attempt's failure loses nothing."""
        return self.twin is not None and self.twin.live

    def again(self, offset: int | None = None, n: int | None = None, payload: bytes | None = None,
              **changes) -> "_Chunk":
        fields = {"tries": self.tries, "strikes": self.strikes, "avoid": self.avoid,
                  "last_crash": self.last_crash, "unstarted": self.unstarted}
        fields.update(changes)
        return _Chunk(self.block, self.offset if offset is None else offset,
                      self.n if n is None else n, self.payload if payload is None else payload,
                      **fields)


class _Node:
    __slots__ = ("name", "conn", "slots", "inflight", "window", "refill", "item_time", "max_n",
                 "stats", "running", "fd")

    def __init__(self, name: str, conn, stats: NodeStats) -> None:
        self.name = name
        self.conn = conn
        self.slots = max(1, int(conn.hello.get("slots") or 1))
        self.inflight: dict[int, _Chunk] = {}
        self.window = self.slots * MIN_DEPTH
        self.refill = 1  # free room in the window before it is topped up
        self.item_time: float | None = None  # seconds per item in the function, smoothed
        self.max_n = 0
        self.stats = stats
        self.running = True
        self.fd: int | None = None  # polled by the map's thread (see PMap._watch)


# -- the run -------------------------------------------------------------------------------

class PMap:
    """One parallel map: the scheduler, its live statistics, and its outcomes.

    ``pmap`` and ``pmap_results`` wrap it; use it directly to watch ``stats`` while it
    runs (the CLI's progress display does). Iterate ``values()`` or ``outcomes()``, once.
    """

    def __init__(self, cluster, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
                 ordered: bool = True, chunksize: int | None = None, retries: int = 0,
                 retry_on: tuple[type[BaseException], ...] | None = None,
                 on_error: str = "raise", limit: int | None = None,
                 poison_after: int = DEFAULT_POISON_AFTER, nodes: Iterable[str] | None = None,
                 speculate: bool = True, total: int | None = None,
                 item_timeout: float | None = None) -> None:
        if not callable(fn):
            raise errors.UsageError(f"pmap needs a function, not {type(fn).__name__}")
        if on_error not in ON_ERROR:
            raise errors.UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise errors.UsageError(f"chunksize must be a positive integer, not {chunksize!r}")
        if not isinstance(retries, int) or retries < 0:
            raise errors.UsageError(f"retries must be 0 or more, not {retries!r}")
        if not isinstance(poison_after, int) or poison_after < 1:
            raise errors.UsageError(f"poison_after must be 1 or more, not {poison_after!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise errors.UsageError(f"limit must be 0 or more, not {limit!r}")
        if item_timeout is not None and (isinstance(item_timeout, bool)
                                         or not isinstance(item_timeout, (int, float))
                                         or not 0 < item_timeout < math.inf):
            raise errors.UsageError(f"item_timeout must be a number of seconds above 0, "
                                    f"not {item_timeout!r}")
        self.cluster = cluster
        self.ordered = ordered
        self.chunksize = chunksize
        self.retries = retries
        self.retry_on = retry_on
        self.on_error = on_error
        self.poison_after = poison_after
        self.speculate = speculate
        self.item_timeout = None if item_timeout is None else float(item_timeout)
        self.names = cluster.node_names(nodes)
        if not self.names:
            raise errors.UsageError("pmap was given no nodes to run on")
        self._fn_bytes = dumps(fn, "function")
        self._fk = "pmap-" + hashlib.sha256(self._fn_bytes).hexdigest()[:24]
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        if limit is not None:
            iterable = itertools.islice(iterable, limit)
            total = limit if total is None else min(total, limit)
        self._input = iter(iterable)
        self.stats = PmapStats(total=total, nodes={n: NodeStats(n) for n in self.names})
        self.failures: list[ItemError] = []  # on_error="collect": every failed item
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._nodes: dict[str, _Node] = {}
        self._connecting = 0
        self._connectors: list[threading.Thread] = []
        self._cancelling: set[int] = set()  # chunks cancelled at the end, not confirmed yet
        self._join_errors: dict[str, errors.ClusterError] = {}
        self._load_errors: list[errors.ClusterError] = []
        self._retry: deque[_Chunk] = deque()
        self._open: deque[_Block] = deque()  # ordered: blocks not yet handed out, in order
        self._complete: deque[_Block] = deque()  # unordered: finished blocks not handed out
        self._unfinished = 0  # unordered: blocks read but not handed out
        self._next_index = 0
        self._input_done = False
        self._inflight_bytes = 0
        self._buffered_bytes = 0
        self._item_time: float | None = None
        self._item_bytes: float | None = None
        self._result_bytes: float | None = None
        self._max_n = 0
        self._ahead = 8  # ordered, the first block done: blocks read ahead (4 windows' worth)
        self._seq = 0  # chunks sent
        self._speculated_at = 0.0  # when overdue chunks were last looked for
        self._expiry_at = 0.0  # item_timeout: when chunks over their limit were last looked for
        self._stop_index: int | None = None
        self._stop_error: ItemError | None = None
        self._started = False
        self._closing = False
        self._thread: int | None = None  # the thread running the map
        self._poller = select.poll()
        self._polled: dict[int, _Node] = {}  # fd -> node whose connection this thread reads
        self._wake_r = self._wake_w = -1
        self._wake_lock = threading.Lock()
        self._touched: set[_Node] = set()  # nodes sent requests not flushed yet
        self._pumped = 0.0  # when this thread last read the nodes' connections

    # -- what the caller iterates ------------------------------------------------------------

    def values(self, *, indexed: bool = False) -> Iterator[Any]:
        """The results (in input order unless ``ordered=False``), failed items per
        ``on_error``; with ``indexed``, ``(index, result)`` pairs."""
        raise_mode = self.on_error == "raise"
        blocks = self._blocks()
        try:
            for block in blocks:
                if not block.errors:
                    if indexed:
                        yield from zip(itertools.count(block.start), block.values)
                    else:
                        yield from block.values
                    continue
                found = block.errors
                for j, value in enumerate(block.values):
                    if value is _FAILED:
                        if raise_mode:
                            raise found[j]
                    elif value is not _PENDING:
                        yield (block.start + j, value) if indexed else value
        finally:
            blocks.close()
        if self.on_error == "collect" and self.failures:
            self.failures.sort(key=lambda e: e.index)
            raise ItemErrors(self.failures, self.stats.done)

    def outcomes(self) -> Iterator[Outcome]:
        """One ``Outcome`` per item, errors as values; ``on_error`` does not apply."""
        self.on_error = "values"
        blocks = self._blocks()
        try:
            for block in blocks:
                start, found = block.start, block.errors
                for j, value in enumerate(block.values):
                    if value is _FAILED:
                        yield Outcome(start + j, error=found[j])
                    else:
                        yield Outcome(start + j, value)
        finally:
            blocks.close()

    # -- the loop ----------------------------------------------------------------------------

    def _blocks(self) -> Iterator[_Block]:
        if self._started:
            raise errors.UsageError("a pmap can be iterated only once")
        self._started = True
        self.stats.started = time.monotonic()
        self._thread = threading.get_ident()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, select.POLLIN)
        try:
            self._connect_all()
            while True:
                self._fill()
                block = self._ready()
                if block is not None:
                    yield block
                    if block.errors and self._stop_index is not None and self.ordered and \
                            block.start <= self._stop_index < block.start + block.n:
                        raise self._stop_error
                    self._drain(None)
                    continue
                if self._finished():
                    self._settle_connects()
                    return
                self._check_alive()
                self._drain(WAIT_SECONDS)
        finally:
            self._shutdown()
            self.stats.finished = time.monotonic()

    def _finished(self) -> bool:
        if self.ordered:
            return not self._open and (self._input_done or self._stop_index is not None)
        return self._input_done and not self._unfinished and not self._complete

    def _ready(self) -> _Block | None:
        if not self.ordered:
            if self._stop_error is not None:
                raise self._stop_error
            return self._complete.popleft() if self._complete else None
        if not self._open:
            return None
        head = self._open[0]
        if head.remaining:
            stop = self._stop_index
            if stop is None or not head.start <= stop < head.start + head.n:
                return None
            if any(v is _PENDING for v in head.values[:stop - head.start]):
                return None
        self._open.popleft()
        self._buffered_bytes -= head.nbytes
        return head

    def _drain(self, timeout: float | None) -> None:
        """Handle what the nodes sent; wait up to ``timeout`` for the first (None: no wait).

        This thread reads the nodes' connections itself (``NodeConnection.pump``), so a
        reply costs no hand-off between threads; what other threads post (a node joining,
        a connection failing, replies the connection's own thread took in) arrives on
        the events queue and wakes the poll through a pipe.
        """
        events = self._events  # this thread is its only reader: not empty stays not empty
        if events.empty():
            if timeout is None and time.monotonic() - self._pumped < PUMP_SECONDS:
                return  # looked a moment ago: hand out more results first
            self._pump(timeout)
            if events.empty():
                return
        event = events.get_nowait()
        while True:
            if event[0] is _JOIN:
                self._joined(event[1], event[2], event[3])
            else:
                self._answer(*event)
            if events.empty():
                return
            event = events.get_nowait()

    def _check_alive(self) -> None:
        """Raise if no node is left (or coming) to do the work that remains."""
        if self._connecting or any(n.running for n in self._nodes.values()):
            return
        done = self.stats.done
        of = f" of {self.stats.total}" if self.stats.total is not None else ""
        if self._load_errors and len(self._load_errors) == len(self._nodes):
            error = self._load_errors[0]
            error.hint = (f"no node could load the function or its items ({done}{of} items "
                          "completed); make what it imports importable on the nodes")
            raise error
        reasons = {name: s.reason for name, s in self.stats.nodes.items() if s.reason}
        if not self._nodes and len(self._join_errors) == 1:
            raise next(iter(self._join_errors.values()))
        listing = "; ".join(f"{n}: {r}" for n, r in reasons.items())
        verb = "was lost" if self._nodes else "could be reached"
        what = "every node " + verb if self._nodes else "no node " + verb
        raise AllNodesLost(f"{what} ({listing}); {done}{of} items completed",
                           completed=done, reasons=reasons)

    def _pump(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` (None: not at all) for input from a node or a wake-up,
        and read what came."""
        try:
            ready = self._poller.poll(0 if timeout is None else timeout * 1000.0)
        except InterruptedError:
            return
        self._pumped = time.monotonic()
        for fd, _ in ready:
            if fd == self._wake_r:
                try:
                    os.read(fd, 4096)
                except OSError:
                    pass
                continue
            node = self._polled.get(fd)
            if node is None:
                continue
            conn = node.conn
            if conn.lost is not None or conn.fileno() != fd:
                self._unpoll(node)  # its fd is closed, or about to be reused
                continue
            conn.pump()

    def _post(self, event) -> None:
        """Put an event for this map's thread, waking its poll if posted from another."""
        self._events.put(event)
        if threading.get_ident() != self._thread:
            with self._wake_lock:  # (never a write to a descriptor closed and reused)
                if self._wake_w >= 0:
                    try:
                        os.write(self._wake_w, b"!")
                    except OSError:  # full: it is woken already
                        pass

    def _watch(self, node: "_Node") -> None:
        fd = node.conn.fileno()
        if fd is None:
            return  # its connection's thread reads for it
        node.conn.adopt()
        node.fd = fd
        self._polled[fd] = node
        self._poller.register(fd, select.POLLIN)

    def _unpoll(self, node: "_Node") -> None:
        fd = node.fd
        if fd is None:
            return
        node.fd = None
        if self._polled.get(fd) is node:
            del self._polled[fd]
            try:
                self._poller.unregister(fd)
            except (KeyError, ValueError):
                pass
        node.conn.unadopt()

    # -- nodes joining ---------------------------------------------------------------------

    def _connect_all(self) -> None:
        """Connect to (and ping) every node in the background; each node starts work as
        soon as it joins, so a slow or unreachable host holds up no other."""
        for name in self.names:
            self._connecting += 1
            thread = threading.Thread(target=self._connect_one, args=(name,), daemon=True,
                                      name=f"clusterctl-pmap-connect-{name}")
            thread.start()
            self._connectors.append(thread)

    def _connect_one(self, name: str) -> None:
        try:
            conn, error = self.cluster.connect(name), None
            try:
                conn.ping(self.cluster.connect_timeout)  # the round trip sizes its window
            except errors.NodeLost:  # a connection left from before, to a node since gone
                conn = self.cluster.connect(name)
                conn.ping(self.cluster.connect_timeout)
        except errors.ClusterError as exc:
            conn, error = None, exc
        except Exception as exc:  # noqa: BLE001 - reported as this node's failure
            conn, error = None, errors.NodeUnreachable(name, f"{type(exc).__name__}: {exc}")
        self._post((_JOIN, name, conn, error))

    def _joined(self, name: str, conn, error: errors.ClusterError | None) -> None:
        """A connector thread finished: the node joins the run, or is reported as failed."""
        self._connecting -= 1
        if error is None and conn is not None:
            if self._closing:
                self.stats.nodes[name].state = "running"
            else:
                self._add_node(name, conn)
            return
        self._join_errors[name] = error
        stats = self.stats.nodes[name]
        stats.state = "failed"
        stats.reason = getattr(error, "reason", None) or str(error)

    def _add_node(self, name: str, conn) -> None:
        node = _Node(name, conn, self.stats.nodes[name])
        self._nodes[name] = node
        node.stats.slots = node.slots
        node.stats.state = "running"
        node.stats.joined = time.monotonic()
        self._size_window(node)
        self._watch(node)
        conn.send({"op": "defn", "key": self._fk}, self._fn_bytes)
        if conn.lost is not None:
            self._lose(node, conn.lost)

    # -- handing out work --------------------------------------------------------------------

    def _fill(self) -> None:
        """Hand out work to every node with room; what goes to one node goes in one write."""
        try:
            self._fill_windows()
        finally:
            touched, self._touched = self._touched, set()
            for node in touched:
                node.conn.flush()

    def _fill_windows(self) -> None:
        timeout = self.item_timeout
        if timeout is not None or (self.speculate and not self._input_done):
            now = time.monotonic()
            if timeout is not None and now - self._expiry_at >= TIMEOUT_SCAN_SECONDS:
                self._expiry_at = now
                self._expire(now)
            if self.speculate and not self._input_done and \
                    now - self._speculated_at >= SPECULATE_SCAN_SECONDS:
                self._speculated_at = now
                self._speculate(early=True)
        while True:
            node = self._free_node()
            if node is None:
                return
            chunk = self._next_chunk(node)
            if chunk is None:
                if self._retry:
                    self._place_retries()
                elif self._input_done and self.speculate:
                    self._speculate()
                return
            self._send(node, chunk)

    def _speculate(self, early: bool = False) -> None:
        """Start overdue chunks (stuck, or queued behind a long item) again elsewhere.

        At the end (the input is all out) twins go to idle slots; while input is still
        read (``early``, and only for chunks late by more than SPECULATE_EARLY_AFTER, so
        that the noise of a busy machine starts nothing twice), to nodes with room in
        their window, before new input, so one
        slow item does not hold up the items behind it on its worker (nor, when ordered,
        every result after it). The first answer wins; the other attempt is cancelled
        (its worker is killed if it is running). So a slow or stuck node cannot hold up
        the map; the price is that the function may run twice for those items.
        """
        nodes = [n for n in self._nodes.values() if n.running]
        if early:
            targets = [n for n in nodes if len(n.inflight) < n.window]
        else:
            targets = [n for n in nodes if len(n.inflight) < n.slots]
        if not targets:
            return
        now = time.monotonic()
        overdue = []
        factor, slack = (4, SPECULATE_EARLY_AFTER) if early else (2, SPECULATE_AFTER)
        for node in nodes:
            per_item = node.item_time if node.item_time is not None else self._item_time
            if per_item is None or not node.inflight:
                continue
            rtt = node.conn.rtt or 0.0
            # a chunk waits behind those sent to the node before it (in flight is in the
            # order sent): by its rank, it is expected back after that many rounds of slots
            for rank, chunk in enumerate(node.inflight.values()):
                expected = (rank // node.slots + 1) * chunk.n * per_item + rtt
                if chunk.twin is None and not chunk.expired and \
                        now - chunk.sent > factor * expected + slack:
                    overdue.append(chunk)
        overdue.sort(key=lambda c: c.sent)
        full = (lambda n: len(n.inflight) >= n.window) if early else \
            (lambda n: len(n.inflight) >= n.slots)
        for chunk in overdue:
            targets = [n for n in targets if not full(n)]
            if not targets:
                return
            # another node if one has room (its own may be stuck), the emptiest first
            target = min(targets, key=lambda n: (n is chunk.node,
                                                 len(n.inflight) / n.slots))
            twin = chunk.again()
            twin.twin, chunk.twin = chunk, twin
            self.stats.speculated += chunk.n
            self._send(target, twin)

    def _place_retries(self) -> None:
        """Retries that avoid the node with the most room go to others that have room."""
        for chunk in list(self._retry):
            for node in self._nodes.values():
                if node.running and len(node.inflight) < node.window and (
                        node.name not in chunk.avoid or self._only_avoided(chunk)):
                    self._retry.remove(chunk)
                    self._send(node, chunk)
                    break

    def _free_node(self) -> _Node | None:
        """The node with the most room for another chunk. A node with a deep window gets
        work once a quarter of it is free, and is then filled up: fewer, fuller writes."""
        best, room = None, 0.0
        touched = self._touched
        for node in self._nodes.values():
            if node.running:
                free = node.window - len(node.inflight)
                if free >= (1 if node in touched else node.refill) and free / node.slots > room:
                    best, room = node, free / node.slots
        return best

    def _next_chunk(self, node: _Node) -> _Chunk | None:
        retry = self._retry
        if retry:
            for i, chunk in enumerate(retry):
                if node.name not in chunk.avoid or self._only_avoided(chunk):
                    del retry[i]
                    return chunk
        if self._input_done or self._stop_index is not None:
            return None
        if node.inflight and self._inflight_bytes >= MAX_INFLIGHT_BYTES:
            return None
        n = self._chunk_items(node)
        if self.ordered and self._open:  # bounded read-ahead of the results handed out
            head = self._open[0]
            if not head.remaining and len(self._open) >= self._ahead:
                return None  # the consumer is behind: only a few windows' worth ahead
            # a slow item holds up the results after it: the slots work on, this far
            room = READ_AHEAD_ITEMS - (self._next_index - head.start)
            if room <= 0 or self._buffered_bytes >= MAX_BUFFERED_BYTES:
                return None
            n = min(n, room)
        items = list(itertools.islice(self._input, n))
        if len(items) < n:
            self._input_done = True
            self.stats.total = self._next_index + len(items)  # now it is known
            if not items:
                return None
        block = _Block(self._next_index, len(items))
        payload = self._pickle_items(items, block.start)
        self._next_index += block.n
        if self.ordered:
            self._open.append(block)
        else:
            self._unfinished += 1
        per_item = len(payload) / block.n
        self._item_bytes = per_item if self._item_bytes is None else 0.7 * self._item_bytes + 0.3 * per_item
        return _Chunk(block, 0, block.n, payload)

    def _only_avoided(self, chunk: _Chunk) -> bool:
        return all(n.name in chunk.avoid for n in self._nodes.values() if n.running)

    def _chunk_items(self, node: _Node) -> int:
        if self.chunksize:
            return self.chunksize
        if node.item_time is None and self._item_time is None:
            return 1  # learn the item time from a single item first
        n = self._target_items(node)
        return max(1, min(n, 2 * max(node.max_n, self._max_n // 4) + 1))  # at most doubling

    def _target_items(self, node: _Node) -> int:
        """Items for a chunk of about TARGET_CHUNK_SECONDS on this node, within the caps."""
        if self.chunksize:
            return self.chunksize
        per_item = node.item_time if node.item_time is not None else self._item_time
        per_item = max(per_item or 1.0, 1e-8)
        n = TARGET_CHUNK_SECONDS / per_item
        for size in (self._item_bytes, self._result_bytes):
            if size:
                n = min(n, MAX_CHUNK_BYTES / size)
        total = self.stats.total
        if total is not None:  # near the end, smaller chunks, so every node ends together
            slots = sum(x.slots for x in self._nodes.values() if x.running) or 1
            left = total - self._next_index
            n = min(n, max(math.ceil(left / (4 * slots)), MIN_CHUNK_SECONDS / per_item))
        return max(1, min(int(n), MAX_CHUNK_ITEMS))

    def _pickle_items(self, items: list, start: int) -> bytes:
        if len(items) == 1 and type(items[0]) in _PLAIN or \
                len(items) <= 8 and all(type(x) in _PLAIN for x in items):
            return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        import cloudpickle

        try:
            return cloudpickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - name the item that cannot travel
            for i, item in enumerate(items):
                try:
                    cloudpickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001
                    raise errors.SerializationError(
                        f"input item {start + i} cannot be pickled: {type(exc).__name__}: {exc}",
                        hint="pass plain data, not open files, sockets, locks or generators") from None
            raise

    def _send(self, node: _Node, chunk: _Chunk) -> None:
        chunk.node = node
        chunk.live = True
        chunk.sent = time.monotonic()
        self._seq += 1
        chunk.seq = self._seq
        if self.item_timeout is not None:
            chunk.limit = self._time_limit(node, chunk)
            if len(node.inflight) < node.slots:
                chunk.clock = chunk.sent
        node.inflight[id(chunk)] = chunk
        self._inflight_bytes += len(chunk.payload)
        head = {"op": "map", "fk": self._fk}
        post = self._post
        self._touched.add(node)
        try:
            node.conn.request(head, chunk.payload, flush=False,
                              callback=lambda h, p, e, chunk=chunk: post((chunk, h, p, e)))
        except errors.SerializationError as exc:  # over the frame limit: nothing was sent
            self._take_back(chunk)
            if chunk.n == 1:
                raise errors.SerializationError(
                    f"input item {chunk.index} is too large to send: {exc.message}",
                    hint=exc.hint) from None
            self._requeue_split(chunk, node)
            return
        chunk.rid = head.get("id")

    def _take_back(self, chunk: _Chunk) -> None:
        """Mark a chunk answered (or abandoned): nothing it sends later counts."""
        chunk.live = False
        node = chunk.node
        if node.inflight.pop(id(chunk), None) is not None:
            self._inflight_bytes -= len(chunk.payload)
            if self.item_timeout is not None and node.running:
                self._restart_clocks(node, chunk.seq)

    # -- item_timeout --------------------------------------------------------------------
    #
    # The controller does not see when a node starts a chunk, only when it answers. The
    # node runs its tasks in the order sent, one per worker, with a few handed ahead to
    # each worker (behind the task it runs). So a chunk's limit starts counting when fewer
    # than ``slots`` chunks sent before it to its node are in flight, and starts again
    # each time one of those comes back (it may have waited behind that one on the same
    # worker): a limit is never short, but may be long by the time a chunk waited behind
    # another. The chunks found over their limit are cancelled, the latest sent first,
    # so one handed ahead behind a stuck one is answered "not started" (and sent again)
    # before the stuck one's worker is killed; the node's answer for a chunk whose worker
    # was killed says it was running: it took too long.

    def _time_limit(self, node: _Node, chunk: _Chunk) -> float:
        """A chunk's limit: item_timeout for its slowest item, and time for the others
        (four times their expected time, and at most item_timeout each). One found over
        it is split in halves until the item that is too slow is alone."""
        timeout = self.item_timeout
        if chunk.n == 1:
            return timeout
        per_item = node.item_time if node.item_time is not None else self._item_time
        other = timeout if per_item is None else min(timeout, 4 * per_item)
        return timeout + (chunk.n - 1) * other

    def _restart_clocks(self, node: _Node, seq: int) -> None:
        """A chunk left ``node``: those sent after it may have waited behind it."""
        now = time.monotonic()
        slots = node.slots
        for rank, chunk in enumerate(node.inflight.values()):
            if rank >= slots:
                return
            if chunk.seq > seq and not chunk.expired:
                chunk.clock = now

    def _expire(self, now: float) -> None:
        """Cancel the chunks that are over their time limit (see above)."""
        for node in self._nodes.values():
            if not node.running:
                continue
            over = [c for c in node.inflight.values() if c.clock is not None and not c.expired
                    and now - c.clock > c.limit]
            for chunk in reversed(over):  # the latest sent first
                chunk.expired = True
                if chunk.rid is not None:
                    node.conn.cancel(chunk.rid)

    def _timed_out(self, node: _Node, chunk: _Chunk, info: dict) -> None:
        """The node's answer to a chunk cancelled for being over its time limit."""
        if chunk.covered():
            return  # its twin runs on
        if "running" not in str(info.get("message", "")) and chunk.unstarted < 2:
            # it had not started (it waited behind another task): send it again
            self._count_requeued(node, chunk.n)
            self._retry.appendleft(chunk.again(unstarted=chunk.unstarted + 1))
            return
        if chunk.n > 1:  # halve it, until the item that is too slow is alone
            self._requeue_split(chunk, node, unstarted=0)
            return
        limit = f"{self.item_timeout:g}"
        message = (f"it ran longer than the item timeout of {limit} s; "
                   "its worker was stopped")
        exc = ItemTimeout(f"item {chunk.index} ran longer than {limit} s")
        self._item_failed(chunk, 0, (False, {"type": "ItemTimeout", "message": message,
                                             "node": node.name}, exc))

    # -- answers -------------------------------------------------------------------------

    def _answer(self, chunk: _Chunk, head: dict | None, payload, error) -> None:
        if not chunk.live:  # fenced: cancelled, or taken back when its node was lost
            if self._cancelling:
                self._cancelling.discard(id(chunk))
            return
        self._take_back(chunk)
        node = chunk.node
        if error is not None:
            self._lose(node, error)
            if not chunk.covered():
                self._requeue(chunk, node, lost=True)
            return
        if not head.get("ok"):
            self._chunk_failed(node, chunk, head, payload)
            return
        if chunk.covered():  # this attempt won: the other is not needed any more
            self._cancel(chunk.twin)
        stats = node.stats
        stats.chunks += 1
        try:  # what a worker's map answers: (seconds in the function, all ok, data)
            spent, all_ok, data = pickle.loads(payload)
            if len(data) != chunk.n:
                raise ValueError(f"{len(data)} results for {chunk.n} items")
        except Exception as exc:  # noqa: BLE001 - every item of the chunk fails with it
            self._undecodable(chunk, node, exc)
            return
        if type(spent) is not float or not 0.0 <= spent < 1e9:
            spent = (time.monotonic() - chunk.sent) / max(1.0, len(node.inflight) / node.slots)
        self._learn(node, chunk, spent, len(payload))
        stats.busy += spent
        block = chunk.block
        if all_ok:
            if block.values is None and chunk.n == block.n:
                block.values = data
                block.remaining = 0
                delivered = chunk.n
            else:
                delivered = self._fill_slots(block, chunk.offset, data)
        else:
            delivered = 0
            for j, outcome in enumerate(data):
                if outcome[0]:
                    delivered += self._fill_slots(block, chunk.offset + j, (outcome[1],))
                else:
                    self._item_failed(chunk, j, outcome)
        if delivered:
            stats.items += delivered
            self.stats.done += delivered
            self._account(block, len(payload) * delivered // max(1, chunk.n))
        chunk.payload = b""

    def _fill_slots(self, block: _Block, offset: int, values) -> int:
        slots = block.slots()
        filled = 0
        for j, value in enumerate(values, offset):
            if slots[j] is _PENDING:
                slots[j] = value
                filled += 1
            else:
                self.stats.duplicates += 1
        block.remaining -= filled
        return filled

    def _account(self, block: _Block, nbytes: int) -> None:
        """A block got results: count its bytes, and hand it out when complete."""
        if self.ordered:
            block.nbytes += nbytes
            self._buffered_bytes += nbytes
        elif block.remaining == 0 and not block.complete:
            block.complete = True
            self._unfinished -= 1
            self._complete.append(block)

    def _learn(self, node: _Node, chunk: _Chunk, spent: float, nbytes: int) -> None:
        n = chunk.n
        per_item = spent / n
        if node.item_time is None:
            node.item_time = per_item
        else:
            node.item_time = 0.6 * node.item_time + 0.4 * per_item
        if self._item_time is None:
            self._item_time = per_item
        else:
            self._item_time = 0.8 * self._item_time + 0.2 * per_item
        per_result = nbytes / n
        if self._result_bytes is None:
            self._result_bytes = per_result
        else:
            self._result_bytes = 0.7 * self._result_bytes + 0.3 * per_result
        if n > node.max_n:
            node.max_n = n
            if n > self._max_n:
                self._max_n = n
        elif node.stats.chunks & 7:
            return  # the window is revised every 8 answers, or when chunks grow
        self._size_window(node)

    def _size_window(self, node: _Node) -> None:
        """Enough chunks in flight that the next is there when a worker is free, also
        while answers and new chunks travel (the node's round trip)."""
        latency = node.conn.rtt or 0.0
        per_item = node.item_time if node.item_time is not None else self._item_time
        if per_item is not None:
            chunk_time = max(self._target_items(node) * per_item, 1e-6)
            depth = MIN_DEPTH + math.ceil(latency / chunk_time)
            node.window = node.slots * max(MIN_DEPTH, min(MAX_DEPTH, depth))
            node.refill = max(1, node.window // 4)
        self._ahead = 4 * sum(n.window for n in self._nodes.values() if n.running) + 8

    # -- failures ----------------------------------------------------------------------------

    def _item_failed(self, chunk: _Chunk, j: int, outcome) -> None:
        block, offset = chunk.block, chunk.offset + j
        slots = block.slots()
        if slots[offset] is not _PENDING:
            self.stats.duplicates += 1
            return
        info = outcome[1] if isinstance(outcome[1], dict) else {}
        exc = outcome[2] if len(outcome) > 2 else None
        node = chunk.node
        if chunk.tries < self.retries and self._retryable(info, exc):
            node.stats.retries += 1
            self.stats.retries += 1
            items = self._items_of(chunk)
            payload = self._pickle_items(items[j:j + 1], block.start + offset)
            self._retry.append(chunk.again(offset, 1, payload, tries=chunk.tries + 1,
                                           avoid=frozenset((node.name,))))
            return
        node.stats.failures += 1
        self._fail_slot(block, offset, ItemError(
            block.start + offset, info.get("node", node.name), info.get("type", "Error"),
            info.get("message", ""), info.get("traceback", ""), exception=exc,
            attempts=chunk.tries + 1))

    def _retryable(self, info: dict, exc) -> bool:
        if self.retry_on is None:
            return True
        if isinstance(exc, BaseException):
            return isinstance(exc, self.retry_on)
        names = {c.__qualname__ for c in self.retry_on} | {f"{c.__module__}.{c.__qualname__}"
                                                          for c in self.retry_on}
        return info.get("type") in names

    def _items_of(self, chunk: _Chunk) -> list:
        return pickle.loads(chunk.payload)

    def _fail_slot(self, block: _Block, offset: int, error: ItemError) -> None:
        slots = block.slots()
        if slots[offset] is not _PENDING:
            self.stats.duplicates += 1
            return
        slots[offset] = _FAILED
        block.errors[offset] = error
        block.remaining -= 1
        self.stats.done += 1
        self.stats.failed += 1
        if self.on_error == "collect":
            self.failures.append(error)
        elif self.on_error == "raise":
            self._stop(error)
        self._account(block, 0)

    def _stop(self, error: ItemError) -> None:
        """on_error="raise": stop at the first failed item; cancel the work after it."""
        index = error.index
        if self._stop_index is not None and self._stop_index <= index:
            return
        self._stop_index, self._stop_error = index, error
        beyond = (lambda c: c.index > index) if self.ordered else (lambda c: True)
        for node in self._nodes.values():
            for chunk in [c for c in node.inflight.values() if beyond(c)]:
                self._cancel(chunk)
        self._retry = deque(c for c in self._retry if not beyond(c))
        while self._open and self._open[-1].start > index:
            dropped = self._open.pop()
            self._buffered_bytes -= dropped.nbytes

    def _chunk_failed(self, node: _Node, chunk: _Chunk, head: dict, payload) -> None:
        info = head.get("error") or {}
        kind = info.get("kind")
        if kind == "crashed":
            node.stats.crashes += 1
            if not chunk.covered():
                self._crashed(node, chunk, info)
        elif kind == "cancelled" and chunk.expired:  # by us: it was over its time limit
            self._timed_out(node, chunk, info)
        elif kind == "cancelled":  # not by us (we forget what we cancel): do it again
            if not chunk.covered():
                self._requeue(chunk, node)
        else:  # the function or the items cannot be loaded there: leave the node out
            error = remote_error(info, payload, node.name)
            self._load_errors.append(error)
            self._retire(node, "failed", error.one_line())
            if not chunk.covered():
                self._requeue(chunk, node)

    def _crashed(self, node: _Node, chunk: _Chunk, info: dict) -> None:
        crash = (node.name, info.get("message", "the worker crashed"))
        if chunk.n > 1:  # halve it, until the item that crashes is alone
            self._requeue_split(chunk, node, last_crash=crash)
            return
        strikes = chunk.strikes + 1
        if strikes >= self.poison_after:
            self._poison(chunk, node, strikes, crash)
            return
        self._count_requeued(node, 1)
        self._retry.appendleft(chunk.again(strikes=strikes, avoid=chunk.avoid | {node.name},
                                       last_crash=crash))

    def _poison(self, chunk: _Chunk, node: _Node, strikes: int, crash) -> None:
        where, message = crash or (node.name, "its node was lost while running it")
        node.stats.failures += 1
        self._fail_slot(chunk.block, chunk.offset, PoisonItem(
            chunk.index, where, "WorkerCrashed", message, attempts=strikes))

    def _requeue(self, chunk: _Chunk, node: _Node, lost: bool = False) -> None:
        """Do a chunk again elsewhere: its node was lost, or could not load the function."""
        if self._stop_index is not None and (not self.ordered or chunk.index > self._stop_index):
            return
        if not lost:
            self._count_requeued(node, chunk.n)
            self._retry.appendleft(chunk.again(avoid=chunk.avoid | {node.name}))
            return
        strikes = chunk.strikes + 1
        if chunk.n == 1 and strikes >= self.poison_after:
            self._poison(chunk, node, strikes, chunk.last_crash)
        elif chunk.n > 1 and strikes >= 2:  # lost twice: maybe one of its items kills nodes
            self._requeue_split(chunk, node, strikes=strikes)
        else:
            self._count_requeued(node, chunk.n)
            self._retry.appendleft(chunk.again(strikes=strikes))

    def _requeue_split(self, chunk: _Chunk, node: _Node, **changes) -> None:
        """Do a chunk again as two halves (to find the item that crashes)."""
        self._count_requeued(node, chunk.n)
        items = self._items_of(chunk)
        half = chunk.n // 2
        for offset, part in ((half, items[half:]), (0, items[:half])):
            start = chunk.offset + offset
            payload = self._pickle_items(part, chunk.block.start + start)
            self._retry.appendleft(chunk.again(start, len(part), payload, **changes))

    def _count_requeued(self, node: _Node, n: int) -> None:
        node.stats.requeued += n
        self.stats.requeued += n

    def _undecodable(self, chunk: _Chunk, node: _Node, exc: Exception) -> None:
        message = f"the results could not be unpickled here: {type(exc).__name__}: {exc}"
        for j in range(chunk.n):
            node.stats.failures += 1
            self._fail_slot(chunk.block, chunk.offset + j, ItemError(
                chunk.index + j, node.name, "SerializationError", message))

    def _lose(self, node: _Node, error: errors.ClusterError) -> None:
        reason = getattr(error, "reason", None) or str(error)
        self._retire(node, "lost", reason)

    def _retire(self, node: _Node, state: str, reason: str) -> None:
        """Take a node out of the run; its chunks in flight go back to the queue."""
        if not node.running:
            return
        node.running = False
        node.stats.state = state
        node.stats.reason = reason
        node.stats.left = time.monotonic()
        self._unpoll(node)  # (late replies, if any, come through its connection's thread)
        self._ahead = 4 * sum(n.window for n in self._nodes.values() if n.running) + 8
        for chunk in list(node.inflight.values()):
            self._take_back(chunk)
            if not chunk.covered():
                self._requeue(chunk, node, lost=state == "lost")

    # -- the end -------------------------------------------------------------------------

    def _cancel(self, chunk: _Chunk, wait: bool = False) -> None:
        """Cancel a chunk on its node. With ``wait``, its answer (the node's confirmation,
        sent once the worker running it is gone) is awaited by ``_shutdown``."""
        self._take_back(chunk)
        conn = chunk.node.conn
        if chunk.rid is None:
            return
        if wait and conn.lost is None:
            self._cancelling.add(id(chunk))
        else:
            conn.forget(chunk.rid)
        conn.cancel(chunk.rid)

    def _settle_connects(self) -> None:
        """The work is done before every node joined: give the nodes being started a moment
        to finish starting, so none comes up after the caller moved on (e.g. to ``down``)."""
        deadline = time.monotonic() + JOIN_GRACE_SECONDS
        for thread in self._connectors:
            thread.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if event[0] is _JOIN:  # joined too late to get work: report it as it is
                name, conn, error = event[1], event[2], event[3]
                self._connecting -= 1
                stats = self.stats.nodes[name]
                if error is None and conn is not None:
                    stats.state, stats.slots = "running", max(1, int(conn.hello.get("slots") or 1))
                else:
                    stats.state, stats.reason = "failed", getattr(error, "reason", None) or str(error)

    def _shutdown(self) -> None:
        """Cancel all work still in flight and wait (a little) until the nodes confirm it:
        then no worker runs anything of this map any more."""
        self._closing = True
        for node in self._nodes.values():
            for chunk in list(node.inflight.values()):
                try:
                    self._cancel(chunk, wait=True)
                except Exception:  # noqa: BLE001 - best effort: a broken connection cancels too
                    pass
        self._retry.clear()
        self._open.clear()
        self._complete.clear()
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        try:
            while self._cancelling:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._drain(min(left, WAIT_SECONDS))
        finally:
            for node in self._nodes.values():
                self._unpoll(node)
            with self._wake_lock:
                for fd in (self._wake_r, self._wake_w):
                    os.close(fd)
                self._wake_r = self._wake_w = -1


# -- the API -------------------------------------------------------------------------------

def pmap(cluster, fn: Callable[[Any], Any], iterable: Iterable[Any], *, ordered: bool = True,
         chunksize: int | None = None, retries: int = 0,
         retry_on: tuple[type[BaseException], ...] | None = None, on_error: str = "raise",
         limit: int | None = None, poison_after: int = DEFAULT_POISON_AFTER,
         nodes: Iterable[str] | None = None, speculate: bool = True,
         item_timeout: float | None = None) -> Iterator[Any]:
    """Apply ``fn`` to every item of ``iterable`` over all nodes' slots; yield the results.

    - ``ordered``: results in input order (default), else as they finish.
    - ``chunksize``: items per message; None adapts it to the function's speed.
    - ``retries``: how often an item whose function raised is tried again (on another
      node if there is one); ``retry_on`` limits that to these exception types.
    - ``on_error``: ``"raise"`` (stop at the first failed item, after yielding the
      results before it, and raise its ``ItemError`` with the remote traceback),
      ``"skip"`` (leave failed items out), ``"collect"`` (leave them out, then raise
      ``ItemErrors`` listing all of them).
    - ``limit``: read at most this many items (for endless generators).
    - ``poison_after``: an item that crashed its worker, or was running when its node
      was lost, this many times is failed as ``PoisonItem``.
    - ``nodes``: the node names to use (default: the whole world).
    - ``speculate``: start items that are overdue (stuck, or queued behind a long item)
      again on another slot; the first result wins and the other run is cancelled.
      Turn it off if running an item twice would be wrong (a lost node's items are
      always run again, so the function should be idempotent anyway).
    - ``item_timeout``: seconds an item may run; one that runs longer is stopped (its
      worker is killed) and fails like an exception, as ``ItemError`` with
      ``remote_type`` ``"ItemTimeout"`` (retried under ``retries``). The limit counts
      from when the item can have started on its node, so it may be generous, never short.

    The iterator does the work as it is consumed; leaving it early cancels the rest.
    Raises ``AllNodesLost`` if no node is left to finish the work.
    """
    run = PMap(cluster, fn, iterable, ordered=ordered, chunksize=chunksize, retries=retries,
               retry_on=retry_on, on_error=on_error, limit=limit, poison_after=poison_after,
               nodes=nodes, speculate=speculate, item_timeout=item_timeout)
    return run.values()


def pmap_results(cluster, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
                 ordered: bool = True, chunksize: int | None = None, retries: int = 0,
                 retry_on: tuple[type[BaseException], ...] | None = None,
                 limit: int | None = None, poison_after: int = DEFAULT_POISON_AFTER,
                 nodes: Iterable[str] | None = None, speculate: bool = True,
                 item_timeout: float | None = None) -> Iterator[Outcome]:
    """Like ``pmap``, but yield one ``Outcome`` per item (``index``, ``value`` or ``error``),
    so a failed item never stops the others."""
    run = PMap(cluster, fn, iterable, ordered=ordered, chunksize=chunksize, retries=retries,
               retry_on=retry_on, limit=limit, poison_after=poison_after, nodes=nodes,
               speculate=speculate, item_timeout=item_timeout)
    return run.outcomes()
