"""One table per wire (``node/ops.py``): every kind the code sends is declared there,
every receiver handles exactly what the other end of its channel sends (one dispatch,
one rule for a kind it does not know), and docs/how-it-works.md lists the kinds as the
tables do.

Run as a script, this prints the docs' section from the tables."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import pytest

import clusterctl
from clusterctl.node import ops

PACKAGE = Path(clusterctl.__file__).resolve().parent
DOCS = PACKAGE.parents[1] / "docs" / "how-it-works.md"
BEGIN, END = "<!-- kinds from node/ops.py: begin -->", "<!-- kinds from node/ops.py: end -->"
SENT = re.compile(r"""["']op["']\s*:\s*["']([a-z_]+)["']|\bop=["']([a-z_]+)["']""")


def declared() -> set[str]:
    return {kind for channel in ops.CHANNELS for table in channel.sends.values() for kind in table}


def sent_kinds(source: str) -> set[str]:
    """The kinds a module's source sends: its literal heads ``{"op": "kind"}`` and
    ``dict(op="kind")``."""
    return {a or b for a, b in SENT.findall(source)}


def test_every_kind_the_code_sends_is_declared_in_a_table():
    undeclared = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "ops.py":
            for kind in sent_kinds(path.read_text()) - declared():
                undeclared.setdefault(kind, []).append(str(path.relative_to(PACKAGE)))
    assert undeclared == {}


def test_the_scan_finds_a_kind_sent_and_not_declared():
    source = 'conn.send({"op": "frobnicate", "id": 1})\nhead = dict(op="twiddle")\n'
    assert sent_kinds(source) == {"frobnicate", "twiddle"}
    assert sent_kinds(source) - declared() == {"frobnicate", "twiddle"}


def test_every_declared_kind_is_sent_somewhere():
    sent = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name != "ops.py":
            sent |= sent_kinds(path.read_text())
    passed_on = {"link", "unlink"}  # (requests.py sends a process's own head's kind on)
    assert declared() - sent - passed_on == set()


@pytest.fixture
def node(tmp_path):
    """A node's daemon, built but not serving (no worker or process is started)."""
    from clusterctl.node.daemon.node import Node
    from clusterctl.node.daemon.sessions import Identity

    path = str(tmp_path / "n.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    built = Node(Identity("n", 1, "v", "c"), listener, cookie=b"k" * 16, idle=60,
                 max_payload=1 << 20, sock_path=path)
    yield built
    built.loop.close_in_child()
    listener.close()


def test_a_node_takes_from_its_controllers_exactly_what_they_and_the_hub_send(node):
    takes = {**ops.CONTROLLER_NODE.takes("node"), **ops.HUB_NODE.takes("node")}
    assert set(node.sessions.dispatch.handlers) == set(takes) - set(ops.HANDSHAKE)
    assert set(ops.HANDSHAKE) <= set(ops.CONTROLLER_NODE.sends["controller"])


def test_no_two_parts_of_a_node_handle_the_same_kind(node):
    kinds = [kind for part in node.parts for kind in part.handlers]
    assert len(kinds) == len(set(kinds))


def test_a_node_takes_from_its_processes_and_from_other_nodes_what_they_send(node):
    actors = node.actors
    assert set(actors.from_processes.handlers) == set(ops.NODE_PROCESS.takes("node"))
    assert set(actors.peers.from_nodes.handlers) == set(ops.NODE_NODE.takes("receiver"))
    assert set(actors.peers.from_the_hub.handlers) == set(ops.HUB_NODE.takes("node"))


def test_a_process_takes_what_its_node_sends():
    from clusterctl.node.processes.runtime import Runtime

    ours, theirs = socket.socketpair()
    with ours, theirs:
        runtime = Runtime(ours, "n.1", "n", 1 << 20)
        handled = set(runtime.takes.handlers) | set(Runtime.READ_AT_START)
    assert handled == set(ops.NODE_PROCESS.takes("process"))


def test_a_worker_takes_what_its_node_sends():
    from clusterctl.node.workers.worker import Worker

    ours, theirs = socket.socketpair()
    with ours, theirs:
        handled = set(Worker(ours, "n").dispatch().handlers) | set(Worker.READ_APART)
    assert handled == set(ops.NODE_WORKER.takes("worker"))


def test_the_hub_takes_what_nodes_send_on_its_watches():
    from clusterctl.hub.router import Router

    assert set(Router(lambda line: None).takes.handlers) == set(ops.HUB_NODE.takes("hub"))


def test_the_hub_takes_a_commands_handshake_then_its_request():
    from clusterctl.hub import protocol

    assert set(ops.COMMAND_HUB.takes("hub")) == {"auth", "request"}
    assert "open" in protocol.OPS


def test_each_channel_says_what_each_end_does_with_a_kind_it_does_not_know():
    for channel in ops.CHANNELS:
        assert set(channel.unknown) == set(channel.ends) == set(channel.sends), channel.name
        assert all(rule.strip() for rule in channel.unknown.values())


def test_a_dispatch_refuses_a_handler_for_an_undeclared_kind():
    table = ops.NODE_WORKER.takes("worker")
    with pytest.raises(ValueError, match="frobnicate"):
        ops.Dispatch(table, {"call": print, "frobnicate": print}, print)


def test_a_dispatch_gives_an_unknown_kind_to_its_rule_and_a_known_one_past_its_guard():
    seen = []
    dispatch = ops.Dispatch(ops.NODE_WORKER.takes("worker"),
                            {"call": lambda head: seen.append(("call", head))},
                            lambda op, head: seen.append(("unknown", op)),
                            guard=lambda head: head.get("ok", True))
    dispatch("call", {"id": 1})
    dispatch("call", {"id": 2, "ok": False})
    dispatch("map", {"id": 3})
    dispatch("nosuch", {})
    assert seen == [("call", {"id": 1}), ("unknown", "map"), ("unknown", "nosuch")]


def kinds_markdown() -> str:
    """docs/how-it-works.md's list of kinds, from the tables."""
    lines = []
    for channel in ops.CHANNELS:
        lines += ["", "**%s%s**" % (channel.name[0].upper(), channel.name[1:]), ""]
        lines += ["| from | kind | fields (\\* required) |", "|---|---|---|"]
        for end, table in channel.sends.items():
            for kind, op in table.items():
                fields = ", ".join("`%s`%s" % (name, "\\*" if required else "")
                                   for name, (_, required) in op.fields.items())
                lines.append("| %s | `%s` | %s |" % (end, kind, fields))
        lines += [""] + ["A kind the %s does not know: %s." % (end, rule)
                         for end, rule in channel.unknown.items()]
    return "\n".join(lines[1:])


def test_the_docs_list_the_kinds_as_the_tables_do():
    text = DOCS.read_text()
    assert BEGIN in text and END in text
    section = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == kinds_markdown().strip(), (
        "docs/how-it-works.md lists other kinds than node/ops.py: "
        "print the section with `python tests/unit/test_wire_tables.py`")


if __name__ == "__main__":
    sys.stdout.write(kinds_markdown() + "\n")
