"""Parallel map over the world: every slot of every node, every result exactly once.

The rooms, from the top: ``run`` (``PMap``, the loop in the caller's thread, and
``pmap``/``pmap_results``), ``scheduler`` (which node gets which chunk; answers in),
``faults`` (retries, splits, poison), ``speculation`` and ``timeouts`` (overdue and
too-slow chunks), ``sizing`` (chunk and window sizes), ``overhead`` (the controller's own
CPU per chunk, which sizing weighs), ``buffer`` (the hand-out order),
``source`` (reading and pickling the input), ``connectors`` and ``inbox`` (nodes joining,
and what reaches the map's thread), ``answers``, ``blocks``, ``nodes``, ``options``,
``stats``, ``outcome``, ``item_errors`` and ``tuning``. See docs/how-it-works.md,
sections "pmap: chunks, windows and read-ahead" and "pmap: exactly once".
"""

from clusterctl.api.pmap.item_errors import (AllNodesLost, ItemError, ItemErrors, ItemTimeout,
                                             PoisonItem)
from clusterctl.api.pmap.outcome import Outcome
from clusterctl.api.pmap.run import PMap, pmap, pmap_results
from clusterctl.api.pmap.stats import NodeStats, PmapStats
from clusterctl.api.pmap.tuning import DEFAULT_POISON_AFTER, READ_AHEAD_ITEMS

__all__ = [
    "AllNodesLost", "DEFAULT_POISON_AFTER", "ItemError", "ItemErrors", "ItemTimeout", "NodeStats",
    "Outcome", "PMap", "PmapStats", "PoisonItem", "READ_AHEAD_ITEMS", "pmap", "pmap_results",
]
