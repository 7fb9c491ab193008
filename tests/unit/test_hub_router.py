"""The hub's router takes what a node sends for that node only, within bounds, and never
sends a node a head it would take for garbage (the end-to-end attack is in
tests/ssh/test_trust.py)."""

from __future__ import annotations

from clusterctl.hub import router as routing
from clusterctl.hub.router import Router
from clusterctl.node import wire


class Link:
    """A node's watch connection, as the router uses it: what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict, bytes]] = []
        self.raw: list[bytes] = []
        self.handler = None

    def listen(self, handler) -> None:
        self.handler = handler

    def send(self, head: dict, payload: bytes = b"") -> None:
        wire.encode(head, payload)  # (a head a node could not take raises here)
        self.sent.append((head, payload))

    def send_raw(self, raw: bytes) -> None:
        self.raw.append(raw)

    def ops(self, op: str) -> list[dict]:
        return [h for h, _ in self.sent if h["op"] == op]


def world(*nodes: str) -> tuple[Router, dict[str, Link], list[str]]:
    logged: list[str] = []
    r = Router(logged.append)
    links = {n: Link() for n in nodes}
    for n, link in links.items():
        r.attach(n, link)
    return r, links, logged


def from_node(r: Router, links: dict, node: str, head: dict, payload: bytes = b"") -> None:
    links[node].handler(head, payload, wire.encode(head, payload))


def test_a_node_relays_only_as_itself():
    r, links, logged = world("a", "b", "r")
    from_node(r, links, "r", {"op": "relay", "node": "a", "src": "b", "s": "x", "q": 1}, b"inner")
    from_node(r, links, "r", {"op": "ack", "node": "a", "src": "b", "s": "x", "q": 1})
    assert links["a"].raw == []
    assert sum("not its own" in line for line in logged) == 2
    from_node(r, links, "r", {"op": "relay", "node": "a", "src": "r", "s": "x", "q": 1}, b"inner")
    assert len(links["a"].raw) == 1  # as itself, it goes


def test_names_are_claimed_and_released_by_their_holders_node_only():
    r, links, _ = world("a", "r")
    from_node(r, links, "a", {"op": "claim", "name": "kvs", "pid": "a.1"})
    assert r.names == {"kvs": "a.1"}
    from_node(r, links, "r", {"op": "release", "name": "kvs", "pid": "a.1"})  # not r's to release
    from_node(r, links, "r", {"op": "claim", "name": "kvs2", "pid": "a.7"})  # not r's id
    from_node(r, links, "r", {"op": "claim", "name": "bad name!", "pid": "r.1"})
    assert r.names == {"kvs": "a.1"}
    from_node(r, links, "a", {"op": "release", "name": "kvs", "pid": "a.2"})  # not the holder
    assert r.names == {"kvs": "a.1"}
    from_node(r, links, "a", {"op": "release", "name": "kvs", "pid": "a.1"})
    assert r.names == {}


def test_a_node_keeps_only_its_own_processes_within_bounds(monkeypatch):
    r, links, logged = world("a", "r")
    keep = {"op": "keep", "name": "x", "restart": "permanent"}
    from_node(r, links, "r", dict(keep, pid="a.1"), b"frame")
    assert r.kept.get("r", {}) == {} and r.kept.get("a", {}) == {}
    monkeypatch.setattr(routing, "MAX_KEPT_PER_NODE", 2)
    for n in range(1, 5):
        from_node(r, links, "r", dict(keep, pid=f"r.{n}"), b"frame")
    assert sorted(r.kept["r"]) == ["r.1", "r.2"]
    assert any("more processes than the hub holds" in line for line in logged)
    from_node(r, links, "r", dict(keep, pid="r.1"), b"newer")  # one it has is replaced
    assert r.kept["r"]["r.1"][1] == b"newer"


def test_claims_stop_at_the_limit_a_node(monkeypatch):
    monkeypatch.setattr(routing, "MAX_NAMES_PER_NODE", 3)
    r, links, _ = world("a", "r")
    for n in range(5):
        from_node(r, links, "r", {"op": "claim", "name": f"n{n}", "pid": f"r.{n}"})
    answers = links["r"].ops("claimed")
    assert [a["ok"] for a in answers] == [True, True, True, False, False]
    assert "limit" in answers[-1]["holder"]
    assert len(r.names) == 3
    from_node(r, links, "a", {"op": "claim", "name": "mine", "pid": "a.1"})  # others unaffected
    assert r.names["mine"] == "a.1"


def test_a_sync_takes_only_the_nodes_own_well_formed_names():
    r, links, logged = world("a", "r")
    from_node(r, links, "a", {"op": "claim", "name": "kvs", "pid": "a.1"})
    names = {"kvs": "r.1",  # a's name: r's process is evicted, not given the name
             "mine": "r.2", "theirs": "a.9", "noid": "kvs", "bad name": "r.3", "num": 5}
    from_node(r, links, "r", {"op": "sync", "names": names, "processes": 2})
    assert r.names == {"kvs": "a.1", "mine": "r.2"}
    assert [e["pid"] for e in links["r"].ops("evict")] == ["r.1"]
    from_node(r, links, "r", {"op": "sync", "names": ["not", "a", "dict"]})  # ignored, no error
    assert r.names == {"kvs": "a.1", "mine": "r.2"}


def test_a_big_name_table_reaches_a_syncing_node_in_frames_it_takes(monkeypatch):
    """About 20,000 names of 120 characters: more than a node's head limit in one frame."""
    r, links, _ = world("a", "b")
    table = {("n%05d" % i) + "x" * 114: f"a.{i}" for i in range(20_000)}
    with r._lock:
        r.names.update(table)
    from_node(r, links, "b", {"op": "sync", "names": {}, "processes": 0})
    frames = links["b"].ops("names")
    assert len(frames) > 1
    assert all(len(wire.encode(h)) < wire.MAX_HEAD // 2 for h in frames)
    got: dict = {}
    for h in frames:
        got.update(h["set"])
    assert got == table
    assert frames[0]["nodes"] == ["a", "b"] and all("nodes" not in h for h in frames[1:])
    assert set(frames[0]["world"]) == {"a", "b"}


def test_a_forgotten_node_leaves_the_world_the_hub_routes_for():
    r, links, _ = world("a")
    r.know(["a", "gone"])
    from_node(r, links, "a", {"op": "relay", "node": "gone", "src": "a", "s": "x", "q": 1}, b"inner")
    assert links["a"].ops("nodedown") == []  # known: the frame waits at its sender
    r.forget(["gone", "a"])  # (a connected node is not forgotten)
    from_node(r, links, "a", {"op": "relay", "node": "gone", "src": "a", "s": "x", "q": 2}, b"inner")
    assert [h["node"] for h in links["a"].ops("nodedown")] == ["gone"]
    assert "a" in r.known


def test_a_name_taken_over_while_its_holder_was_cut_off_evicts_the_old_holder():
    """a holds kvs; a is lost (its names freed) and b takes kvs over; a comes back and
    syncs its names: its kvs is evicted, b keeps the name, and a learns who holds it."""
    r, links, logged = world("a", "b")
    from_node(r, links, "a", {"op": "claim", "name": "kvs", "pid": "a.1"})
    from_node(r, links, "a", {"op": "claim", "name": "log", "pid": "a.2"})
    r.lost("a", links["a"], "no heartbeat")
    assert r.names == {}
    from_node(r, links, "b", {"op": "claim", "name": "kvs", "pid": "b.7"})
    back = Link()
    r.attach("a", back)
    links["a"] = back
    from_node(r, links, "a", {"op": "sync", "names": {"kvs": "a.1", "log": "a.2"}, "processes": 2})
    assert back.ops("evict") == [{"op": "evict", "pid": "a.1", "reason": "its name kvs was taken "
                                  "over by b.7 while its node was out of reach"}]
    assert r.names == {"kvs": "b.7", "log": "a.2"}
    assert any("evicting" in line for line in logged)
    told = {k: v for h in back.ops("names") for k, v in h.get("set", {}).items()}
    assert told.get("kvs") == "b.7"


def test_the_first_claim_of_a_name_wins_and_the_others_are_told_who_holds_it():
    r, links, _ = world("a", "b", "c")
    from_node(r, links, "a", {"op": "claim", "name": "kvs", "pid": "a.1"})
    from_node(r, links, "b", {"op": "claim", "name": "kvs", "pid": "b.1"})
    from_node(r, links, "a", {"op": "claim", "name": "kvs", "pid": "a.1"})  # the holder again: fine
    assert links["a"].ops("claimed") == [{"op": "claimed", "name": "kvs", "pid": "a.1", "ok": True}] * 2
    assert links["b"].ops("claimed") == [{"op": "claimed", "name": "kvs", "pid": "b.1", "ok": False,
                                          "holder": "a.1"}]
    assert r.names == {"kvs": "a.1"}
    assert [h["set"] for h in links["c"].ops("names")] == [{"kvs": "a.1"}] * 2  # the winner's only
