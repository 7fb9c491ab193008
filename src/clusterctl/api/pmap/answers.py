"""A worker's answer to a ``map``: ``(seconds in the function, all ok, data)``, where
data is the results, or (not all ok) one outcome per item: ``(True, result)`` or
``(False, error info, exception)``."""

from __future__ import annotations

import time
from typing import Callable

from clusterctl.api.pmap.blocks import Chunk
from clusterctl.api.pmap.stats import PmapStats


def decode(answer, chunk: Chunk, busy_share: float) -> tuple[float, bool, list]:
    """The answer to ``chunk`` (decoded by the map's codec) checked; raises if it does
    not fit. A time spent that makes no sense is estimated from the round trip
    (``busy_share``: the chunks in flight per slot on its node)."""
    spent, all_ok, data = answer
    if len(data) != chunk.n:
        raise ValueError(f"{len(data)} results for {chunk.n} items")
    if type(spent) is not float or not 0.0 <= spent < 1e9:
        spent = (time.monotonic() - chunk.sent) / max(1.0, busy_share)
    return spent, all_ok, data


def fill(chunk: Chunk, all_ok: bool, data: list, stats: PmapStats,
         item_failed: Callable[[Chunk, int, tuple], None]) -> int:
    """Put the results into the chunk's cells; items that failed go to ``item_failed``.
    Returns how many cells were filled (the others had a result: duplicates)."""
    block = chunk.block
    if all_ok and block.values is None and chunk.n == block.n:
        block.take_all(data)
        return chunk.n
    if all_ok:
        filled = block.fill(chunk.offset, data)
        stats.duplicates += chunk.n - filled
        return filled
    filled = 0
    for j, outcome in enumerate(data):
        if outcome[0]:
            one = block.fill(chunk.offset + j, (outcome[1],))
            stats.duplicates += 1 - one
            filled += one
        else:
            item_failed(chunk, j, outcome)
    return filled
