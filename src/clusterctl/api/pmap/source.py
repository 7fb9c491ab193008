"""The input: read in blocks, as the nodes need work, and pickled for the trip."""

from __future__ import annotations

import itertools
import pickle
from typing import Any, Iterable

from clusterctl import errors
from clusterctl.api.pmap.blocks import Block, Chunk
from clusterctl.api.pmap.options import check_count

_PLAIN = frozenset((int, float, str, bytes, bool, type(None), complex))


class Source:
    """The items not read yet; ``total`` once it is known (from ``len``, ``limit``, or the
    end of the input)."""

    def __init__(self, iterable: Iterable[Any], *, total: int | None = None,
                 limit: int | None = None, encode=None) -> None:
        check_count("limit", limit, least=0, optional=True)
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        if limit is not None:
            iterable = itertools.islice(iterable, limit)
            total = limit if total is None else min(total, limit)
        self._items = iter(iterable)
        self.encode = encode or pickle_items  # (items, index of the first) -> a chunk's payload
        self.total = total
        self.next_index = 0  # the index of the next item read
        self.done = False  # every item is read

    def left(self) -> int | None:
        """Items not read yet, if the total is known."""
        return None if self.total is None else self.total - self.next_index

    def read(self, n: int) -> Chunk | None:
        """The next ``n`` items (fewer at the end) as a new block's first chunk."""
        items = list(itertools.islice(self._items, n))
        if len(items) < n:
            self.done = True
            self.total = self.next_index + len(items)  # now it is known
            if not items:
                return None
        block = Block(self.next_index, len(items))
        self.next_index += block.n
        return Chunk(block, 0, block.n, self.encode(items, block.start))


def pickle_items(items: list, start: int) -> bytes:
    """Pickle items for a chunk (plain pickle for a few plain values: it is faster); name
    the first item that cannot travel (``start`` is the index of the first)."""
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
