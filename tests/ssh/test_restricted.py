"""Restricted hosts on the SSH test bed: h3's ``authorized_keys`` forces the controller's
key to run the installed agent with an owner's policy (Erlang's lib_chan, held by sshd).

The policy allows ``mathlib.*`` (a module in a directory of the owner's) and
``os.getpid``, with a slot limit, a nice level and a memory limit. Every test brings the
nodes down (through the agent) and checks that nothing is left running on any host.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clusterctl import errors
from clusterctl.node import wire
from sshbed import available_reason
from sshbed import clusterctl_processes as clusterctl_pids

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

_reason = available_reason()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=f"SSH test bed unavailable: {_reason}"))

HOST = "h3"
MATHLIB = textwrap.dedent("""
    import os
    from os import system  # imported, not defined here: 'allow mathlib.*' must not reach it

    def add(a, b):
        return a + b

    def echo(*args, **kwargs):
        return [args, kwargs]

    def boom(message):
        raise ValueError(message)

    def as_set():
        return {1, 2}

    def niceness():
        return os.nice(0)

    def allocate(n):
        return len(bytearray(n))

    def workers():
        with open("/proc/%d/task/%d/children" % (os.getppid(), os.getppid())) as fh:
            return len(fh.read().split())

    def _private():
        return "never"
""")


class Restricted:
    """h3 restricted: the policy file, the owner's library, and a marker file that
    exists only if something the controller sent was unpickled there."""

    def __init__(self, bed, tmp_path: Path) -> None:
        self.bed = bed
        self.keys = bed.host(HOST).authorized_keys
        self.original = self.keys.read_text()
        lib = tmp_path / "lib"
        lib.mkdir()
        (lib / "mathlib.py").write_text(MATHLIB)
        self.policy_dir = tmp_path / "policy"
        self.policy_dir.mkdir(mode=0o755)
        self.policy = self.policy_dir / "policy"
        self.marker = tmp_path / "unpickled"
        self.write_policy(f"allow mathlib.*\nallow os.getpid   # one function\nallow operator.neg\nallow time.sleep\n"
                          f"path {lib}\nslots 2\nnice 5\nmemory 512M\n")
        self.force(f"{sys.executable} -m clusterctl.node.restricted --policy {self.policy}")

    def write_policy(self, text: str, mode: int = 0o644) -> None:
        self.policy.write_text(text)
        self.policy.chmod(mode)

    def force(self, command: str) -> None:
        key = self.original.split()[:2]
        self.keys.write_text(f'command="{command}",restrict {" ".join(key)} restricted\n')

    def restore(self) -> None:
        self.keys.write_text(self.original)

    def node_log(self, name: str) -> str:
        path = self.bed.host(HOST).env_dir / "run" / "clusterctl" / "restricted" / f"{name}.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def restricted_h3(ssh_bed, ssh_clusters, tmp_path, monkeypatch):
    """Bed host h3 made a restricted host (``Restricted``) for one test, given back after: for its tests."""
    # Commands connect directly (``CLUSTERCTL_HUB=off``): a key's forced command binds the
    # SSH logins made after it is written, and a hub keeps its logins; the test that goes
    # through the hub stops it first, and the hub is stopped after every test, so none
    # keeps a restricted login for later tests.
    monkeypatch.setenv("CLUSTERCTL_HUB", "off")
    r = Restricted(ssh_bed, tmp_path)
    yield r
    ssh_clusters.down_everything()  # through the agent, before the key is given back its freedom
    ssh_clusters.made.clear()  # (all down: the fixture's own teardown has nothing left to stop)
    r.restore()
    stopper = ssh_clusters.cluster(f"{HOST}\n", hub=True)
    ssh_clusters.made.clear()
    stopper.stop_hub()


class Unpickled:
    """Unpickling this creates the marker file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_allowed_rpc_works_with_plain_data_and_world_shows_the_restricted_node(ssh_clusters, restricted_h3):
    c = ssh_clusters.cluster(f"{HOST} name=r slots=8\nh1 name=u\n", hub=True)  # through the hub
    c.stop_hub()  # (a hub from an earlier test would still hold its unrestricted login)
    assert c.rpc("r", "mathlib.add", 2, 3) == 5
    assert c.rpc("r", "mathlib.echo", (1, b"\x00\xff"), {1: "one"}, key=None) == [
        ((1, b"\x00\xff"), {1: "one"}), {"key": None}]
    infos = {i.name: i for i in c.world()}
    r, u = infos["r"], infos["u"]
    assert r.ok and r.restricted == 4 and r.version  # four allow rules; its installed version
    assert u.ok and u.restricted is None
    assert r.slots == 2  # the owner's limit, though the hosts file asks for 8
    assert c.rpc("r", "mathlib.workers") == 2  # and so many worker processes
    assert c.rpc("r", "mathlib.niceness") == 5
    with pytest.raises(errors.RemoteError) as info:
        c.rpc("r", "mathlib.allocate", 1 << 30)  # over the 512M the owner allows a worker
    assert info.value.remote_type == "MemoryError"
    with pytest.raises(errors.RemoteError) as info:
        c.rpc("r", "mathlib.boom", "no")
    assert info.value.remote_type == "ValueError" and "boom" in info.value.remote_traceback
    with pytest.raises(errors.UnpicklableResult, match="not plain data.*a set"):
        c.rpc("r", "mathlib.as_set")


def test_what_the_policy_does_not_allow_is_refused_in_one_line(ssh_clusters, restricted_h3):
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    for name in ("os.system", "mathlib._private", "os.path.join"):
        with pytest.raises(errors.Refused) as info:
            c.rpc("r", name, f"touch {restricted_h3.marker}")
        assert "\n" not in info.value.message
        if name != "os.path.join":
            assert f"{name} is not allowed" in info.value.message
            assert str(restricted_h3.policy) in info.value.message
    with pytest.raises(errors.Refused, match="takes no pickled code"):
        c.rpc("r", lambda: 1)
    with pytest.raises(errors.SerializationError, match=r"arguments\[0\] is a set"):
        c.rpc("r", "mathlib.add", {1}, 2)
    assert not restricted_h3.marker.exists()
    assert "refused" in restricted_h3.node_log("r")


def test_pickled_payloads_are_never_unpickled(ssh_clusters, restricted_h3):
    """Frames a controller of ours would never send: each is refused, and the marker that
    unpickling any of them would create never appears."""
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    conn = c.connect("r")
    assert conn.restricted
    bomb = pickle.dumps(Unpickled(restricted_h3.marker))
    sent = [({"op": "call", "fk": "k1"}, bomb),
            ({"op": "call", "mod": "mathlib", "fun": "add"}, bomb),  # pickled arguments
            ({"op": "call", "mod": "mathlib", "fun": "add", "enc": "json"}, bomb),
            ({"op": "map", "fk": "k1"}, pickle.dumps([Unpickled(restricted_h3.marker)])),
            ({"op": "map", "mod": "mathlib", "fun": "add", "enc": "json"}, bomb)]
    conn.send({"op": "defn", "key": "k1"}, bomb)
    for head, payload in sent:
        pending = conn.request(dict(head), payload)
        assert pending.wait(20)
        assert pending.head["ok"] is False, head
        assert pending.head["error"]["kind"] == "refused", (head, pending.head)
    assert c.rpc("r", "mathlib.add", 1, 1) == 2  # the node and the connection go on
    assert not restricted_h3.marker.exists()


def test_the_key_runs_only_the_agent(ssh_bed, restricted_h3):
    run = ssh_bed.ssh(HOST, "id; touch /tmp/never-made-by-restricted-key")
    assert run.returncode != 0
    assert "uid=" not in run.stdout
    assert "only reaches a restricted clusterctl node" in run.stderr
    assert not Path("/tmp/never-made-by-restricted-key").exists()


def test_port_forwarding_is_refused_by_restrict(ssh_bed, restricted_h3):
    import paramiko

    ssh_bed.set_forwarding(HOST, True)  # sshd would allow it: the key's restrict option refuses it

    def forward(alias: str):
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        host = ssh_bed.host(alias)
        client.connect(**ssh_bed.paramiko_connect_kwargs(alias))
        try:
            return client.get_transport().open_channel("direct-tcpip", (host.address, host.port),
                                                       ("127.0.0.1", 0), timeout=20).close()
        finally:
            client.close()

    forward("h4")  # the jump host, unrestricted, forwards
    with pytest.raises(paramiko.ChannelException):
        forward(HOST)


@pytest.mark.parametrize("policy, mode, expected", [
    ("allow mathlib.*\nalow os.getpid\n", 0o644, "line 2: unknown rule 'alow'"),
    ("allow mathlib.*\n", 0o666, "writable by group or others (mode 666)"),
    ("slots many\n", 0o644, "line 1: 'slots' takes a whole number"),
])
def test_a_bad_policy_keeps_the_node_from_starting(ssh_clusters, restricted_h3, policy, mode, expected):
    restricted_h3.write_policy(policy, mode)
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    info, = c.world()
    assert info.status == "pang"
    assert expected in info.reason and str(restricted_h3.policy) in info.reason
    assert expected in restricted_h3.node_log("r")
    assert clusterctl_pids(ssh_clusters.bed, HOST) == [] or all(
        "daemon" not in cmd for _, cmd in clusterctl_pids(ssh_clusters.bed, HOST))


def test_an_edited_policy_stops_the_node_and_the_next_one_reads_it(ssh_clusters, restricted_h3):
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    assert c.rpc("r", "mathlib.add", 1, 2) == 3
    restricted_h3.write_policy(
        restricted_h3.policy.read_text().replace("allow mathlib.*\n", "allow mathlib.add\n"))
    from helpers import wait_for

    wait_for(lambda: "changed: stopping" in restricted_h3.node_log("r"), message="the node to see the edit")
    c.close()
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    assert c.rpc("r", "mathlib.add", 1, 2) == 3
    with pytest.raises(errors.Refused):
        c.rpc("r", "mathlib.niceness")


def test_multicall_over_a_mixed_world(ssh_clusters, restricted_h3):
    c = ssh_clusters.cluster(f"{HOST} name=r\nh1 name=u\nh2 name=v\n")
    pids = c.multicall("os.getpid")
    assert pids.ok and set(pids) == {"r", "u", "v"}
    assert all(isinstance(p, int) for p in pids.values())
    mixed = c.multicall(lambda: "shipped")  # ordinary nodes run it; the restricted one refuses
    assert mixed["u"] == "shipped" and mixed["v"] == "shipped"
    assert isinstance(mixed["r"], errors.Refused)
    assert not c.world()[1].restricted


def test_down_stops_the_restricted_node(ssh_clusters, restricted_h3):
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    pid = c.world()[0].pid
    assert any(p == pid for p, _ in clusterctl_pids(ssh_clusters.bed, HOST))
    assert c.down() == {"r": "stopped"}
    assert not any(p == pid for p, _ in clusterctl_pids(ssh_clusters.bed, HOST))


def test_cli_rpc_and_world_on_a_restricted_host(ssh_clusters, restricted_h3, tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{HOST} name=r\n")
    ssh_clusters.made.append((ssh_clusters.cluster(f"{HOST} name=r\n"), hosts))  # brought down after the test
    base = [sys.executable, "-m", "clusterctl", "--hosts", str(hosts), "--ssh-config",
            str(ssh_clusters.bed.ssh_config), "--known-hosts", str(ssh_clusters.bed.known_hosts)]

    def cli(*args, input=None):
        return subprocess.run(base + list(args), capture_output=True, text=True, timeout=90,
                              **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}))

    run = cli("rpc", "r", "mathlib", "add", "2", "40")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "42"
    run = cli("rpc", "r", "os", "system", "'id'")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "os.system is not allowed" in run.stderr
    run = cli("--json", "world")
    node, = json.loads(run.stdout)
    assert node["restricted"] == 4 and node["status"] == "pong"
    run = cli("world")
    assert "restricted" in run.stdout
    run = cli("pmap", "--call", "operator.neg", "--no-summary", input="1\n2\n3\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["-1", "-2", "-3"]


def test_an_agent_of_another_protocol_is_refused_naming_both_versions(ssh_clusters, restricted_h3, tmp_path):
    """The agent installed on the host does not change when the controller does: one that
    speaks only a newer protocol is refused with both versions and what to do."""
    import clusterctl

    copy = tmp_path / "newer"
    shutil.copytree(Path(clusterctl.__file__).parent, copy / "clusterctl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wire_py = copy / "clusterctl" / "node" / "wire.py"
    source = wire_py.read_text()
    for name in ("PROTOCOL_VERSION", "OLDEST_PROTOCOL"):
        source = source.replace(f"{name} = {getattr(wire, name)} ", f"{name} = 99 ")
    assert source.count(" = 99 ") == 2
    wire_py.write_text(source)
    restricted_h3.force(f"env PYTHONPATH={copy} {sys.executable} -m clusterctl.node.restricted "
                     f"--policy {restricted_h3.policy}")
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    info, = c.world()
    assert info.status == "pang"
    assert "protocol 99" in info.reason
    assert f"speaks protocols {wire.OLDEST_PROTOCOL} to {wire.PROTOCOL_VERSION}" in info.reason
    assert "upgrade clusterctl here" in info.reason
    pid_file = ssh_clusters.bed.host(HOST).env_dir / "run" / "clusterctl" / "restricted" / "r.pid"
    assert not pid_file.exists()  # refused at the agent's first answer: no node was started


def test_pmap_by_name_runs_on_restricted_and_ordinary_nodes_pickled_code_on_ordinary_only(
        ssh_clusters, restricted_h3):
    from clusterctl.api.pmap import PMap

    c = ssh_clusters.cluster(f"{HOST} name=r\nh1 name=u\n")
    assert list(c.pmap("operator.neg", range(300), chunksize=3)) == [-i for i in range(300)]
    assert all(i.ok for i in c.world())
    run = PMap(c, "time.sleep", [0.05] * 80, chunksize=1)  # 1 s of work on 4 slots
    assert list(run.values()) == [None] * 80
    assert run.stats.nodes["r"].items > 0 and run.stats.nodes["u"].items > 0
    shipped = PMap(c, lambda x: x + 1, range(50))
    assert list(shipped.values()) == list(range(1, 51))
    r = shipped.stats.nodes["r"]
    assert r.state == "failed" and r.items == 0 and "takes no pickled code" in r.reason
    with pytest.raises(errors.Refused, match="r: a restricted host takes no pickled code"):
        list(c.pmap(lambda x: x, range(5), nodes=["r"]))
    assert not restricted_h3.marker.exists()


def test_a_pipeline_keeps_off_a_restricted_host_and_says_why(ssh_clusters, restricted_h3):
    """A pipeline's stages travel pickled: a restricted node is left out, refused in one
    line, and the others do the work; on the restricted host alone the refusal is the error."""
    from clusterctl.api.pipeline import Pipeline

    c = ssh_clusters.cluster(f"{HOST} name=r\nh1 name=u\n")
    run = Pipeline(c, [lambda x: x + 1, lambda x: x * 2], range(50))
    assert list(run.values()) == [(x + 1) * 2 for x in range(50)]
    assert run.stats.nodes["r"].startswith("failed: a restricted host takes no pickled code")
    with pytest.raises(errors.Refused, match="a pipeline's stages .* travel pickled"):
        list(c.pipeline([abs], range(5), nodes=["r"]))
    assert not restricted_h3.marker.exists()



def test_a_restricted_host_runs_no_spawned_process(ssh_clusters, restricted_h3):
    """Spawned processes run code that travels pickled: the controller refuses in one line
    before sending; sent anyway, the node's gate refuses every request about processes
    (as an error result, and nothing runs); ps lists none and says nothing is wrong."""
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    with pytest.raises(errors.Refused, match="a restricted host runs no spawned processes") as info:
        c.spawn(abs, -1, node="r")
    assert "\n" not in info.value.message
    conn = c.connect("r")
    bomb = pickle.dumps(Unpickled(restricted_h3.marker))
    for head, payload in [({"op": "spawn", "restart": "permanent"}, pickle.dumps((None, (), {}))),
                          ({"op": "spawn", "mod": "os", "fun": "system"}, bomb),
                          ({"op": "send", "to": "r.1"}, bomb),
                          ({"op": "send", "to": "kvs", "call": True}, bomb),
                          ({"op": "kill", "to": "r.1"}, b""), ({"op": "ps"}, b""),
                          ({"op": "whereis", "name": "kvs"}, b""), ({"op": "monitor", "to": "r.1"}, b"")]:
        pending = conn.request(dict(head), payload)
        assert pending.wait(20), head
        assert pending.head["ok"] is False and pending.head["error"]["kind"] == "refused", (head, pending.head)
    with pytest.raises(errors.Refused, match="restricted"):
        c.send("r.1", "hello")
    assert list(c.processes()) == [] and not c.processes().errors
    assert c.rpc("r", "mathlib.add", 1, 1) == 2  # the node and the connection go on
    assert not restricted_h3.marker.exists()


def test_a_pattern_does_not_reach_what_the_module_imported(ssh_clusters, restricted_h3):
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    with pytest.raises(errors.Refused) as info:
        c.rpc("r", "mathlib.system", f"touch {restricted_h3.marker}")
    assert "posix.system" in info.value.message and str(restricted_h3.policy) in info.value.message
    assert not restricted_h3.marker.exists()
    assert c.rpc("r", "mathlib.add", 1, 1) == 2


def test_another_policy_file_does_not_reach_the_node_of_the_old_one(ssh_clusters, restricted_h3):
    """The owner points the forced command at a stricter file: the next session reaches a
    node under that file, not the one still running under the old."""
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    assert c.rpc("r", "mathlib.add", 1, 2) == 3
    old_pid = c.world()[0].pid
    stricter = restricted_h3.policy_dir / "stricter"
    stricter.write_text("allow operator.neg\n")
    stricter.chmod(0o644)
    restricted_h3.force(f"{sys.executable} -m clusterctl.node.restricted --policy {stricter}")
    c.close()
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    info, = c.world()
    assert info.ok and info.restricted == 1 and info.pid != old_pid
    with pytest.raises(errors.Refused, match="stricter"):
        c.rpc("r", "mathlib.add", 1, 2)
    assert c.rpc("r", "operator.neg", 2) == -2
    assert not any(p == old_pid for p, _ in clusterctl_pids(ssh_clusters.bed, HOST))


def test_a_call_over_the_payload_limit_is_refused_and_the_node_goes_on(ssh_clusters, restricted_h3):
    c = ssh_clusters.cluster(f"{HOST} name=r\n")
    with pytest.raises(errors.Refused) as info:
        c.rpc("r", "mathlib.echo", "x" * (17 << 20))
    assert "'payload'" in info.value.message and str(restricted_h3.policy) in info.value.message
    assert c.rpc("r", "mathlib.add", 1, 1) == 2  # the same connection goes on
