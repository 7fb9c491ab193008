"""Node names for people: ranges (``h1-h3, h7, db1-db2``) and the nearest name to a typo."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from clusterctl.config import names


@pytest.mark.parametrize("given_names, text", [
    (["h1", "h2", "h3", "h7", "db1", "db2"], "h1-h3, h7, db1-db2"),
    ([f"h{i}" for i in range(1, 101)], "h1-h100"),
    (["h1", "db1", "h2", "db2"], "h1-h2, db1-db2"),  # grouped by prefix, first seen first
    (["node08", "node09", "node10", "node11"], "node08-node11"),  # padding kept
    (["node9", "node10"], "node9-node10"),
    (["n1", "n01", "n2"], "n1, n01, n2"),  # n01 is not the name after n1, and cuts the run
    (["h3", "h1", "h2"], "h3, h1-h2"),  # the file's order within a prefix
    (["local", "gpu", "web-1", "web-2"], "local, gpu, web-1-web-2"),
    (["1", "2", "3"], "1-3"),
    ([], ""),
])
def test_compress_and_expand(given_names, text):
    assert names.compress(given_names) == text
    assert names.expand(text) == sorted(given_names, key=_first_seen_prefix(given_names))


def _first_seen_prefix(given_names):
    order: dict[str, int] = {}
    for name in given_names:
        order.setdefault(_prefix(name), len(order))
    return lambda name: order[_prefix(name)]


def _prefix(name: str) -> str:
    return name.rstrip("0123456789") if name[-1:].isdigit() else "\0" + name


NODE_NAME = st.from_regex(r"[a-z][a-z0-9._-]{0,6}", fullmatch=True)
NUMBERED = st.builds(lambda prefix, number, width: prefix + str(number).zfill(width),
                     st.sampled_from(["h", "db", "node", "web-", "r1.", "x"]),
                     st.integers(0, 120), st.integers(1, 3))


@given(st.lists(st.one_of(NUMBERED, NODE_NAME), unique=True, max_size=40))
def test_expanding_the_ranges_gives_back_the_names(given_names):
    assume(not any(len(names.expand(name)) > 1 for name in given_names))  # no name reads as a range
    text = names.compress(given_names)
    assert names.expand(text) == sorted(given_names, key=_first_seen_prefix(given_names))
    assert len(names.ranges(given_names)) <= len(given_names)


@given(st.lists(NUMBERED, unique=True, max_size=40).map(sorted))
def test_one_prefix_in_order_comes_back_in_order(given_names):
    given_names = [n for n in given_names if n.startswith("node")]
    assert names.expand(names.compress(given_names)) == given_names


def test_abbreviated_stops_near_the_limit_and_counts_the_rest():
    odd = [f"h{i}" for i in range(1, 60, 2)]  # 30 single names
    text = names.abbreviated(odd, limit=20)
    assert text == "h1, h3, h5, h7, h9, h11, ... (24 more)"
    assert names.abbreviated([f"h{i}" for i in range(1, 101)]) == "h1-h100"


@pytest.mark.parametrize("typed, meant", [
    ("h1O", "h10"), ("H10", "h10"), ("hl0", "h10"), ("h100", "h100"), ("h1000", "h100"),
    ("gpu", None), ("db", None),
])
def test_nearest_name(typed, meant):
    assert names.nearest(typed, [f"h{i}" for i in range(1, 101)]) == meant


def test_nearest_among_unlike_names():
    known = ["local", "gpu1", "gpu2", "storage"]
    assert names.nearest("storgae", known) == "storage"
    assert names.nearest("lcoal", known) == "local"
    assert names.nearest("n9", ["n1", "n2"]) is None


def test_unknown_node_message():
    assert names.unknown_node("h1O", [f"h{i}" for i in range(1, 101)]) == (
        "no node named 'h1O'; did you mean 'h10'?", "100 nodes: h1-h100")
    assert names.unknown_node("x", ["local"]) == ("no node named 'x'", "1 node: local")
