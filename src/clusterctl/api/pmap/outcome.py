"""One item's outcome, as ``pmap_results`` yields it."""

from __future__ import annotations

from typing import Any

from clusterctl.api.pmap.item_errors import ItemError


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
