"""What the cluster's calls return: ``NodeInfo`` (from ``world``) and ``MulticallResult``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterctl import errors


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``world`` saw it: pong (answered) or pang (with the reason).

    ``reason`` is the whole message (and hint) of a pang, ``error`` the error itself,
    and ``summary`` the cause in a few words (``host key changed``, ``timed out``).
    ``restricted`` is set for a restricted host's node (the count of its policy's
    ``allow`` rules); ``version`` is then the clusterctl installed on that host."""

    name: str
    host: str
    status: str
    reason: str | None = None
    python: str | None = None
    slots: int | None = None
    load: tuple[float, float, float] | None = None
    rtt: float | None = None
    pid: int | None = None
    version: str | None = None
    cpus: int | None = None
    restricted: int | None = None  # a restricted host's node: how many ``allow`` rules it has
    error: errors.ClusterError | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "pong"

    @property
    def summary(self) -> str | None:
        """A pang's cause in a few words; None for a pong."""
        if self.ok:
            return None
        return self.error.summary if self.error is not None else "failed"


class MulticallResult(Mapping):
    """node -> result, or node -> the ClusterError that node gave; in hosts-file order."""

    def __init__(self, outcomes: dict[str, Any]) -> None:
        self._outcomes = outcomes

    def __getitem__(self, node: str) -> Any:
        return self._outcomes[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outcomes)

    def __len__(self) -> int:
        return len(self._outcomes)

    @property
    def succeeded(self) -> dict[str, Any]:
        return {n: v for n, v in self._outcomes.items() if not isinstance(v, errors.ClusterError)}

    @property
    def failed(self) -> dict[str, errors.ClusterError]:
        return {n: v for n, v in self._outcomes.items() if isinstance(v, errors.ClusterError)}

    @property
    def ok(self) -> bool:
        return not self.failed

    def __repr__(self) -> str:
        return f"MulticallResult({self._outcomes!r})"
