"""The nodes of other worlds, in parts: which local nodes run (from the run directory's
files), what the hub knows (reached, watched, stopped), which of them are another
world's, and the line that names them."""

from __future__ import annotations

import os
import subprocess
import sys

from clusterctl.api.other_worlds import OtherNode, other_nodes
from clusterctl.config.hosts import HostSpec
from clusterctl.hub.known import KnownNodes
from clusterctl.render.tables import other_worlds_text
from clusterctl.transport.local import running_local_nodes


def test_local_nodes_run_where_a_socket_and_the_pid_of_a_running_process_are(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    for name, pid in (("alive", os.getpid()), ("killed", ended.pid), ("garbled", "x1")):
        (run / f"{name}.sock").write_text("")
        (run / f"{name}.pid").write_text(str(pid))
    (run / "nopid.sock").write_text("")  # (a node killed before it wrote its pid)
    (run / "gone.pid").write_text(str(os.getpid()))  # no socket: not a node that runs
    assert running_local_nodes(str(run)) == ["alive"]
    assert running_local_nodes(str(tmp_path / "missing")) == []
    run.chmod(0o755)  # a run directory others may enter is not used
    assert running_local_nodes(str(run)) == []


def ssh_spec(name: str, target: str | None = None) -> HostSpec:
    return HostSpec(name=name, target=target or name, host=target or name)


def test_the_hub_knows_reached_and_watched_nodes_until_they_stop(tmp_path):
    known = KnownNodes(None, lambda ssh: (), lambda line: None)
    known.save = lambda: None  # (no directory: nothing kept on disk)
    known.remember({"specs": [ssh_spec("h1")], "ssh": {"config_file": "/c"}, "timeout": 5.0,
                    "heartbeat": (1.0, 10.0), "limits": {"idle": 60, "max_payload": 1 << 20}})
    known.reached(ssh_spec("h2"), {"config_file": "/c"})
    known.reached(ssh_spec("h1"), {})  # watched already: listed once, as watched
    found = known.describe({"h1": "up"})
    assert [(e["spec"].name, e["ssh"], e["state"]) for e in found] == [
        ("h1", {"config_file": "/c"}, "up"), ("h2", {"config_file": "/c"}, "reached")]
    known.stopped(ssh_spec("h2", "elsewhere"))  # another node of that name: still known
    assert [e["spec"].name for e in known.describe({})] == ["h1", "h2"]
    known.stopped(ssh_spec("h2"))
    assert [(e["spec"].name, e["state"]) for e in known.describe({})] == [("h1", "lost")]


class FakeHub:
    def __init__(self, entries):
        self.entries = entries

    def watched(self, timeout):
        return self.entries


def test_another_worlds_nodes_are_those_not_of_this_one_by_name_and_kind(tmp_path, monkeypatch):
    monkeypatch.setattr("clusterctl.transport.local.running_local_nodes", lambda: ["n1", "solo"])
    hub = FakeHub([{"spec": ssh_spec("h1"), "ssh": {}, "state": "up"},
                   {"spec": ssh_spec("n1"), "ssh": {}, "state": "lost"},  # an SSH n1: not ours
                   {"spec": ssh_spec("h3"), "ssh": {}, "state": "stopped"},
                   {"spec": HostSpec(name="solo", target="local"), "ssh": {}, "state": "up"}])
    own = [HostSpec(name="n1", target="local"), ssh_spec("h1")]
    others = other_nodes(own, hub, 5.0)
    assert [(o.name, o.where, o.state, o.through_hub) for o in others] == [
        ("solo", "local", "running", False), ("n1", "n1", "lost", True)]
    assert [o.name for o in other_nodes(own, None, 5.0)] == ["solo"]


def test_the_line_names_local_nodes_then_ssh_ones_with_where_they_are_if_not_their_name():
    others = [OtherNode(HostSpec(name="n1", target="local")), OtherNode(HostSpec(name="n2", target="local")),
              OtherNode(ssh_spec("h1"), state="up"),
              OtherNode(ssh_spec("web", "alice@10.0.0.5"), state="lost")]
    assert other_worlds_text(others) == \
        "n1, n2 on this machine; h1, web (alice@10.0.0.5, lost) over SSH"
    assert other_worlds_text(others[2:3]) == "h1 over SSH"
    assert other_worlds_text(others[:1]) == "n1 on this machine"
