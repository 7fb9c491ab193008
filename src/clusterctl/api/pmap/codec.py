"""How one map's function, items and results travel: pickled (a function by value, for
ordinary nodes), or by name with plain data (what a restricted host takes, and any
node). A map picks one for all its nodes, so a chunk can go to any node and back to
another after a loss, unchanged."""

from __future__ import annotations

import hashlib
import pickle
from typing import Any, Callable

from clusterctl import errors
from clusterctl.api.pickling import dumps
from clusterctl.api.pmap.source import pickle_items
from clusterctl.node import plain


class PickledItems:
    """The function travels by value (a ``defn`` per node); items and results pickled.
    A restricted node cannot take part."""

    plain = False

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.fn_bytes = dumps(fn, "function")
        self.key = "pmap-" + hashlib.sha256(self.fn_bytes).hexdigest()[:24]
        self.name = getattr(fn, "__qualname__", type(fn).__name__)

    def head(self) -> dict:
        return {"op": "map", "fk": self.key}

    def definition(self) -> tuple[dict, bytes] | None:
        """What a node is sent as it joins, before its first chunk."""
        return {"op": "defn", "key": self.key}, self.fn_bytes

    def encode(self, items: list, start: int) -> bytes:
        return pickle_items(items, start)

    def items(self, payload) -> list:
        return pickle.loads(payload)

    def answer(self, payload) -> tuple[Any, Any, list]:
        return pickle.loads(payload)


class PlainItems:
    """A module function by name (``mod.fun``) that every node imports; items and
    results as plain data (``node.plain``): nothing is pickled either way."""

    plain = True

    def __init__(self, name: str) -> None:
        mod, _, fun = name.rpartition(".")
        if not mod or not fun or ":" in name:
            raise errors.UsageError(f"{name!r} does not name a function",
                                    hint="write module.function, e.g. mathlib.square")
        self.mod, self.fun, self.name = mod, fun, name
        self.fn = None

    def head(self) -> dict:
        return {"op": "map", "mod": self.mod, "fun": self.fun, "enc": "json"}

    def definition(self) -> None:
        return None

    def encode(self, items: list, start: int) -> bytes:
        try:
            return plain.dumps(items)
        except plain.PlainDataError:
            for i, item in enumerate(items):  # name the item that cannot travel
                try:
                    plain.dumps(item, f"input item {start + i}")
                except plain.PlainDataError as exc:
                    raise errors.SerializationError(
                        str(exc), hint=f"a map of {self.name} by name takes plain data: JSON "
                                       "values, tuples or bytes") from None
            raise

    def items(self, payload) -> list:
        return plain.loads(payload)

    def answer(self, payload) -> tuple[Any, Any, list]:
        spent, all_ok, data = plain.loads(payload)
        if not all_ok:
            data = [tuple(outcome) for outcome in data]
        return spent, all_ok, data


def codec_for(fn) -> PickledItems | PlainItems:
    """A name (``"mod.fun"``) maps by name with plain data; a callable travels pickled."""
    if isinstance(fn, str):
        return PlainItems(fn)
    if not callable(fn):
        raise errors.UsageError(f"pmap needs a function or a 'module.function' name, not {type(fn).__name__}")
    return PickledItems(fn)
