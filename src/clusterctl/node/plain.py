"""Plain data as JSON: how arguments and results travel to and from a restricted host,
which never unpickles anything (and whose results the controller never unpickles
either: the host's owner is not the controller's user).

JSON gives ``None``, booleans, integers, floats (``NaN`` and the infinities too, as
Python's ``json`` writes them), strings, lists and dicts with string keys. Three forms,
each a JSON object with one key, carry what JSON lacks:

- ``{"$tuple": [...]}``: a tuple;
- ``{"$bytes": "<base64>"}``: bytes (a bytearray or memoryview goes as bytes too);
- ``{"$dict": [[key, value], ...]}``: a dict whose keys are not all strings, or a dict
  of exactly one key that starts with ``$`` (so it is never mistaken for a form).

Anything else (a set, an object of a class) is not plain data: ``PlainDataError`` names
it and where it was. Decoding takes only these forms; a one-key object whose key starts
with ``$`` and is none of them is an error, not a dict. Bytes travel as base64 inside
the JSON, which costs: a 1 MiB value goes at about a quarter of pickle's speed.

Ships to hosts, so it imports only the standard library. See docs/how-it-works.md,
"Restricted hosts".
"""

from __future__ import annotations

import base64
import binascii
import json
from itertools import chain

MAX_DEPTH = 100  # containers nested deeper than this are refused both ways (json recurses)

_FORMS = ("$tuple", "$bytes", "$dict")
_SCALARS = frozenset((int, float, str, bool, type(None)))
_CONTAINERS = frozenset((list, tuple, dict))  # what counts as a level of nesting
_TOO_DEEP = "%%s is nested too deeply (limit %d)" % MAX_DEPTH
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
_decode = json.JSONDecoder().decode


class PlainDataError(ValueError):
    """A value that is not plain data, or bytes that are not plain data's JSON."""


def dumps(value, name: str = "the value", depth: int = 0) -> bytes:
    """``value`` as plain data's JSON (UTF-8); PlainDataError if it is not plain data,
    saying where in it (``name[2]['x'] is a set``). ``depth``: the containers it will sit
    in when read (the arguments of a call sit in one), counted against ``MAX_DEPTH``."""
    try:
        text = _encode(_to_json(value, name, depth))
    except (ValueError, TypeError) as exc:  # (what _to_json let through cannot happen)
        raise PlainDataError(str(exc)) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a string the quick path let through
        _to_json(value, name, depth, checked=True)  # raises, saying where
        raise PlainDataError("%s holds a string that is not text" % name) from None


def loads(data) -> object:
    """The value that ``data`` (JSON from ``dumps``) holds; PlainDataError if it is not
    plain data's JSON."""
    data = bytes(data)
    try:
        raw = _decode(data.decode("utf-8"))
    except RecursionError:
        raise PlainDataError(_TOO_DEEP % "the data") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, int too long
        raise PlainDataError("not plain data's JSON: %s" % exc) from None
    if b'"$' not in data and b"\\u" not in data:  # no form, no key that could be one
        # (no more brackets than the limit cannot nest past it: then no walk at all)
        if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _nested_too_deeply(raw):
            raise PlainDataError(_TOO_DEEP % "the data")
        return raw
    return _from_json(raw, 0)


def _nested_too_deeply(raw) -> bool:
    """Whether JSON's value ``raw`` has containers more than ``MAX_DEPTH`` levels deep:
    the quick path of ``loads`` needs this look, as the JSON decoder alone does not
    bound the depth (from Python 3.13 it takes thousands of levels). It goes a level at
    a time and converts nothing; the members of a level are gathered and their types
    taken by C loops (``chain``, ``map``), so it costs less than the decoding did
    (about half, for data made of many small containers)."""
    items, kinds = [raw], {type(raw)}
    for _ in range(MAX_DEPTH):
        if list not in kinds and dict not in kinds:
            return False
        items = _members(items, kinds)
        kinds = set(map(type, items))
    return list in kinds or dict in kinds


def _members(items: list, kinds: set) -> list:
    """The members of the lists and dicts among ``items`` (whose types are ``kinds``)."""
    if kinds == {list}:
        lists, dicts = items, ()
    elif kinds == {dict}:
        lists, dicts = (), items
    else:
        lists = [item for item in items if type(item) is list]
        dicts = [item for item in items if type(item) is dict]
    return list(chain(chain.from_iterable(lists), chain.from_iterable(map(dict.values, dicts))))


def kind_of(value) -> str:
    """A value's type for people: ``a set``, ``an mymod.Point``."""
    cls = type(value)
    name = cls.__qualname__ if cls.__module__ == "builtins" else "%s.%s" % (cls.__module__, cls.__qualname__)
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def _to_json(value, where: str, depth: int, checked: bool = False):
    """``value``, inside ``depth`` containers, as what JSON encodes. Strings are checked
    for text only when ``checked`` (``dumps`` encodes strictly, and looks again if that
    fails), so a list of plain scalars goes as it is."""
    kind = type(value)
    if kind in _CONTAINERS and depth >= MAX_DEPTH:  # it would be one level too many
        raise PlainDataError(_TOO_DEEP % where)
    if kind is list and not checked and all(type(v) in _SCALARS for v in value):
        return value
    if value is None or kind in _SCALARS:
        if kind is str and checked:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise PlainDataError("%s is a string that is not text (a lone surrogate)" % where) from None
        return value
    if kind is list:
        return [_to_json(v, "%s[%d]" % (where, i), depth + 1, checked) for i, v in enumerate(value)]
    if kind is tuple:
        return {"$tuple": [_to_json(v, "%s[%d]" % (where, i), depth + 1, checked)
                           for i, v in enumerate(value)]}
    if kind in (bytes, bytearray, memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if kind is dict:
        if all(type(k) is str for k in value) and not (len(value) == 1 and next(iter(value)).startswith("$")):
            out = {}
            for k, v in value.items():
                if checked:
                    _to_json(k, "a key of %s" % where, depth + 1, checked)
                out[k] = _to_json(v, "%s[%r]" % (where, k), depth + 1, checked)
            return out
        return {"$dict": [[_to_json(k, "a key of %s" % where, depth + 1, checked),
                           _to_json(v, "%s[%r]" % (where, k), depth + 1, checked)]
                          for k, v in value.items()]}
    raise PlainDataError("%s is %s, not plain data (JSON values, tuples and bytes)" % (where, kind_of(value)))


def _from_json(raw, depth: int):
    """The value JSON's ``raw``, inside ``depth`` containers, stands for."""
    kind = type(raw)
    if kind is list:
        _check_depth(depth)
        return [_from_json(v, depth + 1) for v in raw]
    if kind is not dict:
        return raw
    if len(raw) == 1:
        (key, inner), = raw.items()
        if key.startswith("$"):
            return _form(key, inner, depth)
    _check_depth(depth)
    return {k: _from_json(v, depth + 1) for k, v in raw.items()}


def _check_depth(depth: int) -> None:
    """Refuse a container inside ``depth`` others if that puts it past the limit."""
    if depth >= MAX_DEPTH:
        raise PlainDataError(_TOO_DEEP % "the data")


def _form(key: str, inner, depth: int):
    if key == "$tuple" and type(inner) is list:
        _check_depth(depth)
        return tuple(_from_json(v, depth + 1) for v in inner)
    if key == "$bytes" and type(inner) is str:
        try:
            return base64.b64decode(inner.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise PlainDataError("bad $bytes form: %s" % exc) from None
    if key == "$dict" and type(inner) is list:
        _check_depth(depth)
        out = {}
        for pair in inner:
            if type(pair) is not list or len(pair) != 2:
                raise PlainDataError("bad $dict form: each entry must be a [key, value] pair")
            k = _from_json(pair[0], depth + 1)
            try:
                out[k] = _from_json(pair[1], depth + 1)
            except TypeError:  # an unhashable key (a list, a dict)
                raise PlainDataError("bad $dict form: the key %s cannot be a dict key" % kind_of(k)) from None
        return out
    if key in _FORMS:
        raise PlainDataError("bad %s form: it holds %s" % (key, kind_of(inner)))
    raise PlainDataError("unknown form %r (a one-key object whose key starts with $ is one of %s)"
                         % (key[:64], ", ".join(_FORMS)))
