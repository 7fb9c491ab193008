"""A pipeline's stages as the caller wrote them, checked, and grouped into farms.

Consecutive stages with the same placement run as one farm: each item goes through all
of them in one worker (``node.stages``), with nothing pickled between them, and every
slot of the farm works on whichever stage its item is at. A farm of stages f, g, h on S
slots is the "normal form" of the skeleton literature: it serves an item every
(T_f + T_g + T_h) / S seconds, which no split of the S slots among separate farms
beats, and the slots are shared among the stages in proportion to their service times
by construction, as the run goes. A stage with ``replicas=`` (a fixed share) or with
``nodes=`` different from its neighbours' (pinned) is a farm of its own, fed from a
bounded queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from clusterctl import errors
from clusterctl.api.pmap.options import check_count

STAGE_OPTIONS = ("replicas", "nodes")


@dataclass(frozen=True)
class StageSpec:
    """One stage: its function, its name, and where it may run."""

    index: int
    fn: Callable[[Any], Any]
    name: str
    replicas: int | None = None  # at most this many slots at once (None: shared)
    nodes: tuple[str, ...] | None = None  # pinned to these nodes (None: the run's nodes)

    @property
    def label(self) -> str:
        return f"stage {self.index + 1} ({self.name})"


def parse_stages(stages) -> list[StageSpec]:
    """``stages``: a list of functions, or of ``(function, {options})`` pairs."""
    if callable(stages) or isinstance(stages, (str, bytes)):
        raise errors.UsageError("stages must be a list of functions (or of (function, options) "
                                f"pairs), not a single {type(stages).__name__}")
    try:
        entries = list(stages)
    except TypeError:
        raise errors.UsageError(f"stages must be a list of functions, not {type(stages).__name__}") \
            from None
    if not entries:
        raise errors.UsageError("a pipeline needs at least one stage",
                                hint="define stages = [function, ...]")
    return [_parse_one(i, entry) for i, entry in enumerate(entries)]


def _parse_one(index: int, entry) -> StageSpec:
    options: dict = {}
    fn = entry
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2 or not isinstance(entry[1], dict):
            raise errors.UsageError(f"stage {index + 1} must be a function or a (function, "
                                    f"{{options}}) pair, not {entry!r}")
        fn, options = entry
    if not callable(fn):
        raise errors.UsageError(f"stage {index + 1} is not a function: {fn!r}",
                                hint="a stage is a function of one item")
    unknown = sorted(set(options) - set(STAGE_OPTIONS))
    if unknown:
        raise errors.UsageError(f"stage {index + 1} has unknown option(s) {', '.join(unknown)}",
                                hint=f"a stage's options are {', '.join(STAGE_OPTIONS)}")
    replicas = options.get("replicas")
    check_count(f"stage {index + 1}'s replicas", replicas, least=1, optional=True)
    nodes = options.get("nodes")
    if nodes is not None:
        if isinstance(nodes, str):
            nodes = (nodes,)
        nodes = tuple(nodes)
        if not nodes or not all(isinstance(n, str) and n for n in nodes):
            raise errors.UsageError(f"stage {index + 1}'s nodes must be node names, not {nodes!r}")
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return StageSpec(index, fn, name, replicas, nodes)


def plan(specs: list[StageSpec]) -> list[list[StageSpec]]:
    """The farms: runs of consecutive stages with the same pinning and no fixed share;
    a stage with ``replicas=`` is a farm of its own."""
    groups: list[list[StageSpec]] = []
    for spec in specs:
        last = groups[-1] if groups else None
        if last is not None and spec.replicas is None and last[-1].replicas is None and \
                _placement(last[-1]) == _placement(spec):
            last.append(spec)
        else:
            groups.append([spec])
    return groups


def _placement(spec: StageSpec):
    return None if spec.nodes is None else frozenset(spec.nodes)


def group_label(group: list[StageSpec]) -> str:
    """How a farm is named in an error that cannot say which of its stages failed."""
    if len(group) == 1:
        return group[0].label
    names = ", ".join(s.name for s in group)
    return f"stages {group[0].index + 1}-{group[-1].index + 1} ({names})"


def farm_nodes(group: list[StageSpec], names: list[str], pinned: set[str],
               known: list[str]) -> list[str]:
    """The nodes a farm runs on: a pinned farm its own (each must exist); the others the
    run's nodes that no stage is pinned to (all of them, if that leaves none)."""
    wanted = group[0].nodes
    if wanted is not None:
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise errors.UsageError(f"{group[0].label} is pinned to unknown node(s) "
                                    f"{', '.join(unknown)}",
                                    hint=f"the nodes are: {', '.join(known)}")
        return list(wanted)
    free = [n for n in names if n not in pinned]
    return free or list(names)
