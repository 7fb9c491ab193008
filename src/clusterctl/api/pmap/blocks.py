"""The run's units: a block of consecutive items and their result cells, and a chunk, one
attempt at part of a block on one node.

A block is read from the input at once and handed out whole, once every cell holds a
result (or an error); a chunk may cover all of it or, after a split or a retry, a part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusterctl.api.pmap.item_errors import ItemError

PENDING = object()  # a result cell not filled yet
FAILED = object()  # a result cell whose item failed (the error is in Block.errors)


class Block:
    """Consecutive items read together; ``values`` holds their result cells once one is known."""

    __slots__ = ("start", "n", "values", "remaining", "errors", "nbytes", "complete")

    def __init__(self, start: int, n: int) -> None:
        self.start = start
        self.n = n
        self.values: list | None = None  # None until a first result arrives
        self.remaining = n
        self.errors: dict[int, ItemError] = {}
        self.nbytes = 0
        self.complete = False  # unordered: queued to be handed out

    def cells(self) -> list:
        if self.values is None:
            self.values = [PENDING] * self.n
        return self.values

    def take_all(self, values: list) -> None:
        """The whole block's results at once, in a list of its own (the common case)."""
        self.values = values
        self.remaining = 0

    def fill(self, offset: int, values) -> int:
        """Put results into the cells from ``offset`` on; return how many were still empty
        (the others are duplicates: a twin or a retry answered first)."""
        cells = self.cells()
        filled = 0
        for j, value in enumerate(values, offset):
            if cells[j] is PENDING:
                cells[j] = value
                filled += 1
        self.remaining -= filled
        return filled

    def fail(self, offset: int, error: ItemError) -> bool:
        """Mark one cell failed; False if it already had its outcome."""
        cells = self.cells()
        if cells[offset] is not PENDING:
            return False
        cells[offset] = FAILED
        self.errors[offset] = error
        self.remaining -= 1
        return True

    def is_pending(self, offset: int) -> bool:
        return self.values is None or self.values[offset] is PENDING

    def pending_before(self, offset: int) -> bool:
        """Whether a cell before ``offset`` still waits for its result."""
        return self.values is None and offset > 0 or \
            self.values is not None and any(v is PENDING for v in self.values[:offset])


class Chunk:
    """One attempt at part of a block on one node; dead once answered or abandoned."""

    __slots__ = ("block", "offset", "n", "payload", "tries", "strikes", "avoid", "node",
                 "rid", "sent", "live", "last_crash", "twin", "seq", "clock", "limit",
                 "expired", "unstarted")

    def __init__(self, block: Block, offset: int, n: int, payload: bytes, *, tries: int = 0,
                 strikes: int = 0, avoid: frozenset = frozenset(), last_crash=None,
                 unstarted: int = 0) -> None:
        self.block = block
        self.offset = offset
        self.n = n
        self.payload = payload
        self.tries = tries  # how often these items' function raised and was retried
        self.strikes = strikes  # worker crashes (alone) and node losses these items saw
        self.avoid = avoid  # nodes to avoid if another can take it
        self.node = None  # the MapNode it was sent to
        self.rid = None
        self.sent = 0.0
        self.live = False
        self.last_crash = last_crash
        self.twin: Chunk | None = None  # a backup attempt of the same items (speculation)
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
              **changes) -> "Chunk":
        """A new attempt at these items (or at ``n`` of them from ``offset``)."""
        fields = {"tries": self.tries, "strikes": self.strikes, "avoid": self.avoid,
                  "last_crash": self.last_crash, "unstarted": self.unstarted}
        fields.update(changes)
        return Chunk(self.block, self.offset if offset is None else offset,
                     self.n if n is None else n, self.payload if payload is None else payload,
                     **fields)
