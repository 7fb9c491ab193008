"""Plain data's depth limit (``plain.MAX_DEPTH``: containers nested deeper are refused),
both ways and on every path: the quick ones (a list of scalars encoded as it is; data
with no form and no escape decoded without a walk) as well as the walk.

The decoding tests matter beyond the limit itself: before Python 3.12 the JSON decoder
refused a few thousand levels on its own (RecursionError), from 3.13 it takes them, and
only plain data's own check stands between a deep value and the code that gets it."""

from __future__ import annotations

import json

import pytest

from clusterctl.node import plain

LIMIT = plain.MAX_DEPTH


def nested(levels: int, wrap=lambda inner: [inner], innermost=1):
    """``innermost`` inside ``levels`` containers made by ``wrap``."""
    value = innermost
    for _ in range(levels):
        value = wrap(value)
    return value


SHAPES = {
    "lists": lambda inner: [inner],  # plain JSON: the quick paths both ways
    "lists holding scalars": lambda inner: [0, inner, "s"],
    "dicts": lambda inner: {"k": inner},
    "tuples": lambda inner: (inner,),  # forms: the walk both ways
    "dicts with other keys": lambda inner: {1: inner},
    "a dollar key": lambda inner: {"$k": inner},
}


LEAVES = [1, "x", b"x", None]
EMPTY = [[], (), {}]  # an empty container is a level too


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("leaf", LEAVES, ids=repr)
def test_values_at_the_limit_travel(shape, leaf):
    for value in (nested(LIMIT, SHAPES[shape], leaf), *(nested(LIMIT - 1, SHAPES[shape], e) for e in EMPTY)):
        assert plain.loads(plain.dumps(value)) == value


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("innermost", LEAVES + EMPTY, ids=repr)
def test_values_past_the_limit_are_refused_when_encoded(shape, innermost):
    levels = LIMIT if innermost in EMPTY else LIMIT + 1
    with pytest.raises(plain.PlainDataError, match=r"nested too deeply \(limit %d\)" % LIMIT):
        plain.dumps(nested(levels, SHAPES[shape], innermost))


def json_nested(levels: int, opening: bytes, closing: bytes, innermost: bytes = b"1") -> bytes:
    return opening * levels + innermost + closing * levels


DECODED = {  # one level as JSON: its opening and its closing
    "lists": (b"[", b"]"),  # no form, no escape: the quick path
    "lists holding scalars": (b'[0,"s",', b"]"),
    "objects": (b'{"k":', b"}"),
    "tuples": (b'{"$tuple":[', b"]}"),  # a form: the walk
    "escaped keys": (b'{"\\u006b":', b"}"),  # an escape (a key could be a form's): the walk
}


@pytest.mark.parametrize("shape", DECODED)
def test_json_at_the_limit_is_decoded(shape):
    opening, closing = DECODED[shape]
    for data in (json_nested(LIMIT, opening, closing), json_nested(LIMIT - 1, opening, closing, b"[]")):
        assert plain.loads(plain.dumps(plain.loads(data))) == plain.loads(data)


@pytest.mark.parametrize("shape", DECODED)
@pytest.mark.parametrize("levels, innermost", [(LIMIT + 1, b"1"), (LIMIT, b"{}"), (5000, b"1")])
def test_json_past_the_limit_is_refused_when_decoded(shape, levels, innermost):
    opening, closing = DECODED[shape]
    with pytest.raises(plain.PlainDataError, match=r"nested too deeply \(limit %d\)" % LIMIT):
        plain.loads(json_nested(levels, opening, closing, innermost))


def test_many_shallow_containers_are_not_deep():
    """Past ``MAX_DEPTH`` brackets in all, but two levels: the quick path's walk counts
    levels, not brackets."""
    value = [[i, str(i)] for i in range(10 * LIMIT)] + [{"k": [1, 2]}]
    data = plain.dumps(value)
    assert data.count(b"[") > LIMIT
    assert plain.loads(data) == value == json.loads(data)


def test_a_calls_arguments_are_counted_as_the_worker_reads_them():
    """The controller encodes a restricted call's arguments and keyword arguments apart,
    the worker reads them as one ``[args, kwargs]``: the controller counts that level, so
    what it sends is never refused one level deeper at the worker."""
    from clusterctl import errors
    from clusterctl.api.calls import plain_call_message

    deepest = nested(LIMIT - 2)  # inside [args, kwargs] and the argument list: LIMIT levels
    _, payload = plain_call_message("r", "mod.fun", (deepest,), {"k": nested(LIMIT - 2)})
    assert plain.loads(payload) == [[deepest], {"k": nested(LIMIT - 2)}]
    for args, kwargs in (((nested(LIMIT - 1),), {}), ((), {"k": nested(LIMIT - 1)})):
        with pytest.raises(errors.SerializationError, match="nested too deeply"):
            plain_call_message("r", "mod.fun", args, kwargs)
