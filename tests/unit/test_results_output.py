"""Results as a program reads them: JSON that strict readers take (numbers as numbers,
NaN as null, bytes as base64, a note of what was converted), and the pickle records
that keep every result exactly."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import math

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterctl import errors, read_results
from clusterctl.api.results_file import MAGIC, ResultsWriter
from clusterctl.render.jsonvalues import JsonValues
from clusterctl.render.plain import dump_json, outcome_json


def strict(text: str):
    """JSON as a strict reader takes it: NaN, Infinity and -Infinity are refused."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_numpy_numbers_and_arrays_are_written_as_numbers_and_lists():
    values = JsonValues()
    result = {"i": np.int64(7), "f": np.float32(0.5), "d": np.float64(2.25), "b": np.bool_(True),
              "a": np.arange(6).reshape(2, 3), "m": np.array([0.5, np.nan])}
    back = strict(values.dumps(result))
    assert back == {"i": 7, "f": 0.5, "d": 2.25, "b": True, "a": [[0, 1, 2], [3, 4, 5]],
                    "m": [0.5, None]}
    assert type(back["i"]) is int and type(back["b"]) is bool
    assert values.converted == {"numpy.ndarray → list": 2, "NaN/Infinity → null": 1}


def test_nan_and_infinities_become_null_and_the_output_is_strict_json():
    values = JsonValues()
    line = values.dumps([math.nan, math.inf, -math.inf, 1.5])
    assert strict(line) == [None, None, None, 1.5]
    assert values.converted == {"NaN/Infinity → null": 3}


def test_bytes_become_base64_that_decodes_back():
    values = JsonValues()
    data = bytes(range(256))
    assert base64.b64decode(strict(values.dumps(data))) == data
    assert base64.b64decode(strict(values.dumps(bytearray(b"\x00\xff")))) == b"\x00\xff"
    assert values.converted == {"bytes → base64 text": 2}


def test_plain_json_is_written_as_it_is_and_nothing_is_told():
    values = JsonValues()
    result = {"a": [1, 2.5, "x", None, True], "t": (1, 2), 3: "int key"}
    assert strict(values.dumps(result)) == json.loads(json.dumps(result))
    assert values.converted == {} and values.note() is None


def test_what_json_has_no_form_for_is_its_repr_and_each_kind_is_counted_in_the_note():
    @dataclasses.dataclass
    class Point:
        x: int
        y: float

    class Opaque:
        def __repr__(self):
            return "<opaque>"

    values = JsonValues()
    cyclic: list = [1]
    cyclic.append(cyclic)
    result = [Point(1, math.nan), Opaque(), Opaque(), {2, 1}, complex(1, 2),
              datetime.date(2026, 12, 7), {(1, 2): "tuple key"}, cyclic]
    back = strict(values.dumps(result))
    assert back == [{"x": 1, "y": None}, "<opaque>", "<opaque>", [1, 2], "(1+2j)", "2026-12-07",
                    {"(1, 2)": "tuple key"}, [1, "<cycle>"]]
    note = values.note()
    for told in ("Point → object", "NaN/Infinity → null", "Opaque → its repr (2)",
                 "set → list", "complex → its repr", "date → ISO text", "dict keys → text",
                 "--format pickle"):
        assert told in note, note


def test_json_of_rpc_and_multicall_never_holds_a_bare_nan():
    text = dump_json({"n1": outcome_json([math.nan, np.float32(1.5), np.int16(3)])})
    assert strict(text) == {"n1": {"ok": True, "result": [None, 1.5, 3]}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
    | st.sampled_from([np.int32(3), np.float64(math.nan), np.array([1.0, math.inf])]),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text() | st.integers() | st.floats(allow_nan=False), inner, max_size=4)
    | st.frozensets(st.integers(), max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_result_gives_one_line_of_strict_json(value):
    line = JsonValues().dumps(value)
    assert "\n" not in line
    strict(line)


def test_pickle_records_give_back_every_result_exactly(tmp_path):
    class Mine:  # a class defined here, not importable by name: it travels by value
        def __init__(self, v):
            self.v = v

    path = tmp_path / "results.pkl"
    with open(path, "wb") as fh:
        writer = ResultsWriter(fh)
        for value in (np.arange(4) * 0.5, math.nan, b"\x00" * 10, {1, 2}, (3, Mine(9))):
            writer.write(value)
    back = list(read_results(str(path)))
    assert isinstance(back[0], np.ndarray) and back[0].tolist() == [0.0, 0.5, 1.0, 1.5]
    assert math.isnan(back[1]) and back[2] == b"\x00" * 10 and back[3] == {1, 2}
    assert back[4][0] == 3 and back[4][1].v == 9


def test_a_torn_last_record_gives_the_whole_ones_then_says_so(tmp_path):
    path = tmp_path / "results.pkl"
    with open(path, "wb") as fh:
        writer = ResultsWriter(fh)
        for value in range(3):
            writer.write({"value": value})
    whole = path.read_bytes()
    last = 8 + len(cloudpickle.dumps({"value": 2}, protocol=5))
    for cut in (1, last - 4, last - 8):  # into its payload; into its length; its whole payload
        path.write_bytes(whole[:-cut])
        got = []
        with pytest.raises(errors.UsageError, match="torn record after 2 results"):
            for value in read_results(str(path)):
                got.append(value)
        assert got == [{"value": 0}, {"value": 1}]


def test_a_file_that_is_not_a_results_file_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n')
    with pytest.raises(errors.UsageError, match="not a results file"):
        list(read_results(str(path)))
    with pytest.raises(errors.UsageError, match="cannot read"):
        list(read_results(str(tmp_path / "missing.pkl")))
    (tmp_path / "empty.pkl").write_bytes(MAGIC)
    assert list(read_results(str(tmp_path / "empty.pkl"))) == []
