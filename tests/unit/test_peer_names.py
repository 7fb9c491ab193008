"""A node's table of the world's names, as the hub's ``names`` frames set it: a new hub's
table replaces what the node holds of the nodes it lists, and names of nodes outside the
world that hub watches, left from an earlier hub, go."""

from __future__ import annotations

from types import SimpleNamespace

from clusterctl.node.processes.peers import Peers


def peers(name: str = "a") -> Peers:
    return Peers(SimpleNamespace(name=name, loop=None))


def test_a_new_hubs_table_drops_names_of_nodes_outside_its_world():
    p = peers()
    p.from_hub(None, {"op": "names", "set": {"kvs": "b.1", "old": "gone.3", "cache": "c.2"}}, b"")
    assert p.names == {"kvs": "b.1", "old": "gone.3", "cache": "c.2"}
    # a new hub watches a, b and c; c has not synced with it yet, so its names stay
    p.from_hub(None, {"op": "names", "set": {"kvs": "b.1"}, "nodes": ["a", "b"],
                      "world": ["a", "b", "c"]}, b"")
    assert p.names == {"kvs": "b.1", "cache": "c.2"}


def test_frames_after_the_first_add_to_the_table():
    p = peers()
    p.from_hub(None, {"op": "names", "set": {"x": "b.1"}, "nodes": ["b"], "world": ["a", "b"]}, b"")
    p.from_hub(None, {"op": "names", "set": {"y": "b.2"}}, b"")
    assert p.names == {"x": "b.1", "y": "b.2"}
    p.from_hub(None, {"op": "names", "set": {"own": "a.1"}, "world": "not a list"}, b"")  # ignored parts
    assert p.names == {"x": "b.1", "y": "b.2"}
