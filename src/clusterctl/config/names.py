"""Node names for people: many names as a few ranges, and the nearest name to a typo.

``compress(["h1", "h2", "h3", "h7", "db1", "db2"])`` is ``"h1-h3, h7, db1-db2"``; ``expand``
reads it back. Names are grouped by their prefix (the name without its numeric suffix),
in the order each prefix first appears, and keep their order within a prefix; a run is
names whose numbers go up by one, zero padding kept (``node08-node12``). A name that
itself reads as a range (``a1-a2``) is not told apart from one; node names are not
written like that.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

_NUMBERED = re.compile(r"^(.*?)(\d+)$")
SEPARATOR = ", "


def _split(name: str) -> tuple[str, str] | None:
    """``("node", "07")`` for ``node07``; None for a name without a numeric suffix."""
    match = _NUMBERED.match(name)
    return (match.group(1), match.group(2)) if match else None


def _runs(names: Sequence[str]) -> list[list[str]]:
    """The names in groups of one prefix (first appearance first), cut into runs."""
    groups: dict[object, list[str]] = {}
    for name in names:
        parts = _split(name)
        groups.setdefault(parts[0] if parts else ("", name), []).append(name)
    runs: list[list[str]] = []
    for members in groups.values():
        run: list[str] = []
        for name in members:
            if run and _follows(run, name):
                run.append(name)
            else:
                run = [name]
                runs.append(run)
    return runs


def _follows(run: list[str], name: str) -> bool:
    """``name`` is the next of ``run``: same prefix, number plus one, the run's padding."""
    first, last, this = _split(run[0]), _split(run[-1]), _split(name)
    if first is None or last is None or this is None or this[0] != first[0]:
        return False
    return this[1] == str(int(last[1]) + 1).zfill(len(first[1]))


def ranges(names: Iterable[str]) -> list[str]:
    """The names as ranges and single names: ``["h1-h3", "h7", "db1-db2"]``."""
    return [run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in _runs(list(names))]


def compress(names: Iterable[str]) -> str:
    """The names as one short text: ``"h1-h3, h7, db1-db2"``."""
    return SEPARATOR.join(ranges(names))


def abbreviated(names: Sequence[str], limit: int = 60) -> str:
    """``compress(names)``, cut after the range that reaches ``limit`` characters:
    ``"h1-h9, h11, h13, ... (40 more)"``."""
    items = ranges(names)
    shown: list[str] = []
    for item in items:
        shown.append(item)
        if len(SEPARATOR.join(shown)) >= limit:
            break
    rest = sum(len(_expand_item(item)) for item in items[len(shown):])
    text = SEPARATOR.join(shown)
    return f"{text}, ... ({rest} more)" if rest else text


def expand(text: str) -> list[str]:
    """The names of a ``compress`` text, in its order."""
    names: list[str] = []
    for item in text.split(SEPARATOR) if text else []:
        names.extend(_expand_item(item))
    return names


def _expand_item(item: str) -> list[str]:
    for at in [i for i, char in enumerate(item) if char == "-"]:
        first, last = _split(item[:at]), _split(item[at + 1:])
        if first is None or last is None or first[0] != last[0]:
            continue
        start, end = int(first[1]), int(last[1])
        width = len(first[1])
        if end > start and last[1] == str(end).zfill(width):
            return [first[0] + str(n).zfill(width) for n in range(start, end + 1)]
    return [item]


# Characters typed for one another: O for 0, l and I for 1.
_LOOKALIKES = str.maketrans({"o": "0", "l": "1", "i": "1"})


def nearest(name: str, known: Sequence[str]) -> str | None:
    """The known name ``name`` was most likely meant to be, or None if none is close.

    A name equal but for case or look-alike characters (``h1O`` for ``h10``) first;
    else the closest by edits, then by length, then by difflib's likeness."""
    folded = name.lower().translate(_LOOKALIKES)
    for candidate in known:
        if candidate.lower().translate(_LOOKALIKES) == folded:
            return candidate
    close = difflib.get_close_matches(name, known, n=len(known) or 1, cutoff=0.6)
    if not close:
        return None
    return min(close, key=lambda c: (_edits(name, c), abs(len(c) - len(name)),
                                     -difflib.SequenceMatcher(None, name, c).ratio()))


def _edits(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char != other)))
        previous = current
    return previous[-1]


def unknown_node(name: str, known: Sequence[str]) -> tuple[str, str]:
    """The message and hint for a node name that is not in the world:
    ``("no node named 'h1O'; did you mean 'h10'?", "100 nodes: h1-h100")``."""
    message = f"no node named {name!r}"
    guess = nearest(name, known)
    if guess is not None:
        message += f"; did you mean {guess!r}?"
    count = f"{len(known)} node" + ("" if len(known) == 1 else "s")
    return message, f"{count}: {abbreviated(known) or 'none'}"
