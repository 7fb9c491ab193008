"""What a call sends: plain data with plain pickle (no cloudpickle import), the rest with
cloudpickle; both load alike."""

from __future__ import annotations

import pickle
import threading

import pytest

from clusterctl import errors
from clusterctl.api.pickling import MAX_PLAIN_CHECK, dumps, is_plain


@pytest.mark.parametrize("value", [1, -2.5, "é", b"\x00", None, True, 1j, (), [1, (2, "x")],
                                   {"a": [1, {2: b"b"}]}, {1, 2}, frozenset({"f"})])
def test_plain_data_is_plain_and_round_trips(value):
    assert is_plain(value)
    assert pickle.loads(dumps(value, "arguments")) == value


def test_what_is_not_plain_goes_to_cloudpickle_and_still_loads():
    def local(x):
        return x + 1

    for value in ((local,), [object], {"k": range(3)}):
        assert not is_plain(value)
    assert pickle.loads(dumps((local,), "arguments"))[0](1) == 2  # by value
    assert not is_plain(list(range(MAX_PLAIN_CHECK + 1)))  # too long to look at


def test_what_cannot_be_pickled_is_named():
    with pytest.raises(errors.SerializationError, match="cannot pickle the arguments"):
        dumps((threading.Lock(),), "arguments")
