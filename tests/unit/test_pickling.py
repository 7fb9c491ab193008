"""What a call sends: plain data with plain pickle (no cloudpickle import), the rest with
cloudpickle; both load alike."""

from __future__ import annotations

import pickle
import sys
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


def test_a_function_sent_by_value_keeps_its_files_name(tmp_path):
    import importlib.util
    import pickle as std_pickle

    import cloudpickle

    from clusterctl.api.pickling import dumps

    path = tmp_path / "by_value_mod.py"
    path.write_text("def nested():\n    def inner(x):\n        return 1 / x\n    return inner\n")
    spec = importlib.util.spec_from_file_location("by_value_mod", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["by_value_mod"] = module
    try:
        spec.loader.exec_module(module)
        cloudpickle.register_pickle_by_value(module)
        fn = std_pickle.loads(dumps(module.nested(), "function"))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["by_value_mod"]
    assert fn.__code__.co_filename == str(path)  # (cloudpickle alone: "<dynamic-code>")
    assert fn(4) == 0.25


def test_a_remote_traceback_gets_the_source_lines_the_host_could_not_show(tmp_path):
    from clusterctl import errors

    path = tmp_path / "job.py"
    path.write_text("import os\n\ndef task(x):\n    return 10 / x\n")
    shown_there = '  File "/usr/lib/x.py", line 3, in f\n    already = shown\n'
    text = (f'Traceback (most recent call last):\n{shown_there}  File "{path}", line 4, in task\n'
            '  File "/nowhere/gone.py", line 9, in g\nZeroDivisionError: division by zero\n')
    error = errors.RemoteError("n1", "ZeroDivisionError", "division by zero", text)
    assert error.remote_traceback == (
        f'Traceback (most recent call last):\n{shown_there}  File "{path}", line 4, in task\n'
        '    return 10 / x\n  File "/nowhere/gone.py", line 9, in g\n'
        'ZeroDivisionError: division by zero\n')
