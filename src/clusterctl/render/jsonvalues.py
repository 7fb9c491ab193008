"""Results as JSON that any program can read. ``json.dumps`` refuses numpy's numbers
and arrays, bytes and most objects, and writes NaN and infinities bare, which strict
readers reject. Here numbers stay numbers (numpy scalars become Python's, arrays become
nested lists), NaN and infinities become ``null``, bytes become base64 text, and what
JSON has no form for becomes its ``repr``. The output is always valid JSON.

Every change a reader could notice (a type that became another, a value that became
null or text) is counted by kind, so the command can say once, at the end, what was
converted and that ``--format pickle`` keeps results exactly. A value JSON takes as it
is costs one ``json.dumps``: the walk runs only when that fails.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import math
from typing import Any

NON_FINITE = "NaN/Infinity → null"
BYTES = "bytes → base64 text"
KEYS = "dict keys → text"
CYCLE = "a container holding itself → text"


class JsonValues:
    """Turns values into JSON text, counting what had to be converted (kind -> values)."""

    def __init__(self) -> None:
        self.converted: dict[str, int] = {}

    def dumps(self, value: Any) -> str:
        """``value`` as one line of valid JSON."""
        try:
            return json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return json.dumps(self.convert(value), allow_nan=False)

    def convert(self, value: Any) -> Any:
        """``value`` as what JSON carries: str, int, float (finite), bool, None, lists
        and dicts with text keys."""
        return self._convert(value, set())

    def note(self) -> str | None:
        """What was converted, in one line (None: nothing was)."""
        if not self.converted:
            return None
        kinds = ", ".join(f"{kind} ({count:,})" for kind, count in self.converted.items())
        return f"converted for JSON: {kinds}; --format pickle keeps results exactly"

    # -- the walk ----------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self.converted[kind] = self.converted.get(kind, 0) + 1

    def _convert(self, value: Any, path: set[int]) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            self._count(NON_FINITE)
            return None
        if isinstance(value, (list, tuple, dict, set, frozenset)):
            if id(value) in path:
                self._count(CYCLE)
                return "<cycle>"
            path.add(id(value))
            try:
                return self._container(value, path)
            finally:
                path.discard(id(value))
        if isinstance(value, (bytes, bytearray, memoryview)):
            self._count(BYTES)
            return base64.b64encode(value).decode("ascii")
        if _is_numpy(value):
            return self._numpy(value, path)
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            self._count(f"{type(value).__name__} → ISO text")
            return value.isoformat()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            self._count(f"{type(value).__name__} → object")
            return self._convert({f.name: getattr(value, f.name)
                                  for f in dataclasses.fields(value)}, path)
        self._count(f"{_type_name(value)} → its repr")
        return repr(value)

    def _container(self, value, path: set[int]) -> Any:
        if isinstance(value, dict):
            return {self._key(k): self._convert(v, path) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            self._count(f"{type(value).__name__} → list")
            items = list(value)
            try:
                items.sort()
            except TypeError:
                pass
            return [self._convert(v, path) for v in items]
        return [self._convert(v, path) for v in value]

    def _key(self, key: Any) -> str | int | float | bool | None:
        """A dict key as JSON writes one: text (numbers, booleans and None json.dumps
        turns into text itself, as it always has)."""
        if key is None or isinstance(key, (str, bool, int)):
            return key
        if isinstance(key, float) and math.isfinite(key):
            return key
        if _is_numpy(key) and not getattr(key, "shape", ()):
            return self._key(key.item())
        self._count(KEYS)
        return str(key)

    def _numpy(self, value: Any, path: set[int]) -> Any:
        """A numpy scalar as the Python number it holds, an array as nested lists (its
        NaNs become null like any other). Told apart without importing numpy."""
        if getattr(value, "shape", ()) == ():
            plain = value.item()
            if type(plain) is type(value):  # (an object the item gives back as itself)
                self._count(f"{_type_name(value)} → its repr")
                return repr(value)
            return self._convert(plain, path)
        self._count(f"{_type_name(value)} → list")
        return self._convert(value.tolist(), path)


def _is_numpy(value: Any) -> bool:
    return (type(value).__module__ or "").split(".")[0] == "numpy" and hasattr(value, "item") \
        and hasattr(value, "tolist")


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", None) else f"{module}.{cls.__qualname__}"


def jsonable(value: Any) -> Any:
    """A value as JSON can carry it (see ``JsonValues``), when no one is told."""
    return JsonValues().convert(value)
