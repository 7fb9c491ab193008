"""The hub over the test bed: warm commands reuse its SSH connections; it is started on
demand, one per user, replaced when killed (the nodes are not), stopped by ``down``,
gone when idle; a pmap does not depend on it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from clusterctl import Cluster, errors
from clusterctl.api.pmap import PMap
from clusterctl.hub import place
from clusterctl.hub.client import HubClient
from clusterctl.node import wire

from helpers import processes_mentioning, wait_for

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

HOSTS = "h1 slots=2\nh2 slots=2\n"


def hub_status(c: Cluster) -> dict:
    return HubClient(c.settings).call("status", {}, 10.0, start=False)


def hub_pid(env) -> int | None:
    return place.read_pid(str(env.run_dir / "hub"))


alive = place.process_alive


def test_commands_reach_the_nodes_through_one_hub_and_its_one_connection_per_host(env, ssh_clusters, ssh_bed):
    shutil.rmtree(ssh_bed.host("h1").env_dir / "cache" / "clusterctl", ignore_errors=True)
    first = ssh_clusters.cluster(HOSTS)
    assert first.rpc("h1", "os.getppid") == first.connect("h1").hello["pid"]
    assert first.ssh is None  # no SSH connection of its own: the hub's
    second = ssh_clusters.cluster(HOSTS)
    assert second.rpc("h1", "os.getppid") == first.rpc("h1", "os.getppid")
    status = hub_status(second)
    assert status["pid"] == hub_pid(env)
    hosts = [h for pool in status["pools"] for h in pool["hosts"]]
    assert len(hosts) == 1 and hosts[0]["active"], status  # h1 only, one connection
    assert [pool["shipped"] for pool in status["pools"]] == [1]  # the code, once, by the hub
    assert sorted(s["node"] for s in status["streams"]) == ["h1", "h1"]  # one per command
    assert all(s["up"] > 0 and s["down"] > 0 for s in status["streams"])


def test_a_killed_hub_is_replaced_by_the_next_command_and_no_node_restarts(env, ssh_clusters):
    c = ssh_clusters.cluster(HOSTS)
    pids = {n: c.rpc(n, "os.getppid") for n in ("h1", "h2")}
    conn = c.connect("h1")
    old = hub_pid(env)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), message="the hub to die")
    wait_for(lambda: conn.lost is not None, message="the stream's end to be seen")
    assert c.rpc("h1", "os.getppid") == pids["h1"]  # its stream went: it connects again
    again = ssh_clusters.cluster(HOSTS)
    assert {n: again.rpc(n, "os.getppid") for n in ("h1", "h2")} == pids
    assert hub_pid(env) not in (None, old)


def test_a_hub_killed_during_an_rpc_is_reported_as_a_lost_node_quickly(env, ssh_clusters):
    c = ssh_clusters.cluster(HOSTS)
    c.rpc("h1", "os.getppid")
    threading.Timer(0.5, os.kill, (hub_pid(env), signal.SIGKILL)).start()
    started = time.monotonic()
    with pytest.raises(errors.NodeLost) as caught:
        c.rpc("h1", "time.sleep", 30)
    assert time.monotonic() - started < 10
    assert "unknown" in caught.value.one_line() or "lost" in caught.value.one_line()


def test_a_pmap_through_a_killed_hub_completes_exactly_once_through_a_new_one(env, ssh_clusters):
    """The hub killed mid-run: every node's stream goes with it; their chunks are
    requeued, the nodes join again through a new hub, and every item comes back once."""
    c = ssh_clusters.cluster(HOSTS)
    for node in ("h1", "h2"):  # the hub runs, and carries both nodes' streams when it dies
        c.rpc(node, "os.getpid")
    pid = hub_pid(env)
    run = PMap(c, lambda x: time.sleep(0.01) or x * x, range(800))
    values = run.values()
    first = [next(values) for _ in range(50)]
    os.kill(pid, signal.SIGKILL)
    results = first + list(values)
    assert not alive(pid) and hub_pid(env) not in (None, pid)
    assert results == [x * x for x in range(800)]
    states = {n.name: (n.state, n.reason) for n in run.stats.nodes.values()}
    assert {state for state, _ in states.values()} == {"running"}, states
    assert run.stats.done == 800 and run.stats.failed == 0
    assert sum(n.items for n in run.stats.nodes.values()) == 800  # none delivered twice


def test_two_commands_at_once_start_one_hub(env, ssh_clusters):
    clusters = [ssh_clusters.cluster(HOSTS) for _ in range(4)]
    pids: list = []
    threads = [threading.Thread(target=lambda c=c: pids.append(c.rpc("h1", "os.getppid")))
               for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pids) == 4 and len(set(pids)) == 1
    hubs = [p for p, cmd in processes_mentioning(str(env.run)) if "clusterctl.hub.daemon" in cmd]
    assert hubs == [hub_pid(env)], hubs


def test_down_stops_the_hub_with_the_nodes(env, ssh_clusters):
    c = ssh_clusters.cluster(HOSTS)
    c.world()
    pid = hub_pid(env)
    assert alive(pid)
    assert set(c.down().values()) == {"stopped"}
    wait_for(lambda: not alive(pid), message="the hub to stop")
    assert not (env.run_dir / "hub" / "hub.sock").exists()


def test_an_idle_hub_exits_by_itself(env, ssh_clusters, monkeypatch):
    monkeypatch.setenv(place.IDLE_ENV, "1")
    c = ssh_clusters.cluster(HOSTS)
    c.rpc("h1", "os.getppid")
    pid = hub_pid(env)
    time.sleep(2.0)
    assert alive(pid)  # a connected command keeps it
    c.close()
    wait_for(lambda: not alive(pid), timeout=10, message="the idle hub to exit")


def test_the_hub_refuses_a_wrong_cookie_and_garbage_and_serves_on(env, ssh_clusters):
    c = ssh_clusters.cluster(HOSTS)
    c.rpc("h1", "os.getppid")
    path = str(env.run_dir / "hub" / "hub.sock")
    for sent in (b"\x00" * 64, b"GET / HTTP/1.0\r\n\r\n",
                 wire.encode({"op": "auth", "nonce": "ab", "mac": "00" * 32})):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            wire.read_message(s, max_payload=0)  # the hello
            s.sendall(sent)
            try:
                rest = s.recv(4096)
            except OSError:
                rest = b""
            assert b"welcome" not in rest
    other = Cluster(ssh_clusters.root / "hosts0", ssh_options=ssh_clusters.ssh, cookie=b"x" * 32, hub=True)
    with pytest.raises(errors.ClusterError, match="refused"):
        other.rpc("h1", "os.getppid")
    other.close()
    assert ssh_clusters.cluster(HOSTS).rpc("h1", "os.getppid") == c.rpc("h1", "os.getppid")


def test_a_warm_command_through_the_hub_imports_neither_paramiko_nor_cloudpickle(env, ssh_clusters):
    """The command's side of the hub needs no SSH library: a warm `rpc` pays neither a
    handshake nor paramiko's import; with plain arguments, not cloudpickle's either."""
    c = ssh_clusters.cluster(HOSTS)
    c.rpc("h1", "os.getppid")  # the hub and the node run
    probe = ("import atexit, sys; atexit.register(lambda: sys.stderr.write("
             "'paramiko loaded: %s, cloudpickle loaded: %s' % ("
             "'paramiko' in sys.modules, 'cloudpickle' in sys.modules))); "
             "from clusterctl.cli.main import main; sys.argv[0] = 'clusterctl'; main()")
    hosts = ssh_clusters.root / "hosts0"
    result = subprocess.run(
        [sys.executable, "-c", probe, "--hosts", str(hosts), "--ssh-config", ssh_clusters.ssh["config_file"],
         "--known-hosts", ssh_clusters.ssh["known_hosts"], "rpc", "h1", "os", "getppid"],
        capture_output=True, text=True, timeout=60, cwd=env.cwd)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == c.rpc("h1", "os.getppid")
    assert result.stderr.endswith("paramiko loaded: False, cloudpickle loaded: False"), result.stderr


def test_clusterctl_hub_shows_the_hub_and_stops_it(env, ssh_clusters, ssh_bed):
    c = ssh_clusters.cluster(HOSTS)
    c.rpc("h1", "os.getppid")
    shown = env.cli("hub", env={"COLUMNS": "100"})
    assert shown.returncode == 0, shown.stderr
    pid = hub_pid(env)
    assert f"hub pid {pid}" in shown.stdout and "1 open streams" in shown.stdout
    assert ssh_bed.host("h1").address in shown.stdout and " up" in shown.stdout
    as_json = json.loads(env.cli("--json", "hub").stdout)
    assert as_json["pid"] == pid and [s["node"] for s in as_json["streams"]] == ["h1"]
    assert env.cli("hub", "--stop").stdout == "hub stopped\n"
    assert not alive(pid)
    assert env.cli("hub").stdout.startswith("no hub runs")


def test_a_node_reached_before_is_reached_again_through_a_forward_of_its_socket(env, ssh_clusters, ssh_bed):
    """h4 allows forwarding (as a stock sshd does), h1 does not: after the first boot,
    h4's node is reached through a socket forward, h1's through the boot stub each time;
    a node gone since is found and started again by the boot stub."""
    hosts = "h4 slots=1\nh1 slots=1\n"

    def forwarded() -> int:
        return sum(pool["forwarded"] for pool in hub_status(c)["pools"])

    c = ssh_clusters.cluster(hosts)
    pids = {n: c.rpc(n, "os.getppid") for n in ("h4", "h1")}
    assert forwarded() == 0  # the first time, both booted
    for expected in (1, 2):  # later commands: h4 forwarded, h1 booted (refusal remembered)
        c = ssh_clusters.cluster(hosts)
        assert {n: c.rpc(n, "os.getppid") for n in ("h4", "h1")} == pids
        assert forwarded() == expected
    os.kill(pids["h4"], signal.SIGKILL)
    wait_for(lambda: not alive(pids["h4"]), message="h4's node to die")
    c = ssh_clusters.cluster(hosts)
    new = c.rpc("h4", "os.getppid")
    assert new != pids["h4"] and alive(new)  # the forward failed: booted and started anew
    assert forwarded() == 2
    c = ssh_clusters.cluster(hosts)
    assert c.rpc("h4", "os.getppid") == new and forwarded() == 3


def test_world_asks_the_hub_once_and_the_hub_watches_each_node(env, ssh_clusters):
    """A command's world is one request to the hub, which pings each node on the
    connection it keeps to it (no stream of the command's own): the same pids as the
    nodes' own rpc answers, and the hub lists them as up."""
    c = ssh_clusters.cluster(HOSTS)
    infos = c.world()
    assert [i.status for i in infos] == ["pong", "pong"] and all(i.rtt for i in infos)
    status = hub_status(c)
    assert status["finished"]["streams"] == 0 and status["streams"] == []  # no stream opened
    watched = {n["node"]: n for n in status["nodes"]}
    assert {n: w["state"] for n, w in watched.items()} == {"h1": "up", "h2": "up"}
    assert {n: w["pid"] for n, w in watched.items()} == {i.name: i.pid for i in infos}
    assert {n: c.rpc(n, "os.getppid") for n in ("h1", "h2")} == {i.name: i.pid for i in infos}
    again = ssh_clusters.cluster(HOSTS).world()  # a second command: the same connections
    assert [i.pid for i in again] == [i.pid for i in infos]
    assert len(hub_status(c)["nodes"]) == 2


def test_a_node_lost_is_seen_by_the_hub_within_the_heartbeat_bound(env, ssh_clusters, ssh_bed):
    c = ssh_clusters.cluster(HOSTS, heartbeat_timeout=3.0)
    assert all(i.ok for i in c.world())
    ssh_bed.cut("h2")
    cut = time.monotonic()

    def h2() -> dict:
        return {n["node"]: n for n in hub_status(c)["nodes"]}["h2"]

    wait_for(lambda: h2()["state"] == "lost", timeout=10, message="the hub to see h2 lost")
    assert time.monotonic() - cut < 3.0 + 2.0  # the heartbeat bound, and a check's period
    assert "heartbeat" in h2()["reason"], h2()
    assert {n["node"]: n["state"] for n in hub_status(c)["nodes"]}["h1"] == "up"
    ssh_bed.restore("h2")
    infos = ssh_clusters.cluster(HOSTS, heartbeat_timeout=3.0).world()  # the hub connects again
    assert all(i.ok for i in infos), infos
    assert h2()["state"] == "up"


def test_the_hubs_watch_does_not_keep_an_idle_node_running(env, ssh_clusters):
    c = ssh_clusters.cluster("h1 slots=1 idle=2\n")
    pid = c.world()[0].pid
    assert {n["node"]: n["state"] for n in hub_status(c)["nodes"]} == {"h1": "up"}
    c.close()
    wait_for(lambda: not alive(pid), timeout=15, message="the idle node to exit")
    wait_for(lambda: hub_status(c)["nodes"][0]["state"] == "lost", timeout=5,
             message="the hub to see it go")


def test_a_hub_killed_during_world_is_replaced_and_asked_again(env, ssh_clusters, ssh_bed):
    """The hub dies while it starts the nodes for a world: the command starts a new hub
    and asks it once more; every node answers, and keeps answering with the same pid."""
    for host in ("h1", "h2"):  # a cold start (the code shipped) takes long enough to be cut
        shutil.rmtree(ssh_bed.host(host).env_dir / "cache" / "clusterctl", ignore_errors=True)
    c = ssh_clusters.cluster(HOSTS)
    killed = []

    def kill_the_first_hub() -> None:
        wait_for(lambda: hub_pid(env) is not None, message="a hub to start")
        time.sleep(0.3)
        killed.append(hub_pid(env))
        os.kill(killed[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_first_hub)
    killer.start()
    infos = c.world()
    killer.join()
    assert [i.status for i in infos] == ["pong", "pong"], infos
    assert not alive(killed[0]) and hub_pid(env) not in (None, killed[0])
    assert {i.name: i.pid for i in c.world()} == {i.name: i.pid for i in infos}


def test_world_right_after_down_of_one_node_starts_it_again(ssh_clusters):
    """The hub's watch of a node stopped a moment ago may not have seen its connection
    end: the world's ping finds it broken, and the watch connects anew (starting the
    node) instead of reporting a pang."""
    c = ssh_clusters.cluster("h1\nh2\n")
    assert all(i.ok for i in c.world())
    for _ in range(3):
        assert c.down(["h1"]) == {"h1": "stopped"}
        info, = c.world(["h1"])
        assert info.ok, info


def test_a_down_of_another_world_leaves_the_hub_for_its_nodes_and_down_all_stops_them(env, ssh_clusters):
    """``down`` of a world of one local node says that h1 and h2 (another hosts file's,
    known to the hub) still run, and keeps the hub for them; ``down --all``, from a
    shell that has neither that hosts file nor its SSH files, stops them and the hub."""
    c = ssh_clusters.cluster(HOSTS)
    nodes = {name: c.rpc(name, "os.getppid") for name in ("h1", "h2")}
    c.close()
    pid = hub_pid(env)
    (env.cwd / "solo_hosts").write_text("local name=solo slots=1\n")
    said = env.cli("--hosts", "solo_hosts", "down")
    assert said.returncode == 0, said.stderr
    assert "note: nodes of other hosts files still run: h1, h2 over SSH; the hub keeps " \
           "running for them; `clusterctl down --all` stops them and it" in said.stderr, said.stderr
    assert alive(pid) and all(alive(p) for p in nodes.values())
    assert env.cli("--hosts", "solo_hosts", "world").returncode == 0
    everything = env.cli("--hosts", "solo_hosts", "down", "--all", "--json")
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout) == {"solo": "stopped", "h1": "stopped", "h2": "stopped"}
    wait_for(lambda: not alive(pid), message="the hub to stop")
    assert not any(alive(p) for p in nodes.values())


def test_down_all_finds_the_nodes_a_killed_hub_left_behind(env, ssh_clusters):
    """The hub was killed: no hub runs to ask, but the list of nodes it watched is still
    in its directory; `down --all` from another hosts file stops them."""
    c = ssh_clusters.cluster(HOSTS)
    assert all(i.ok for i in c.world())  # (the hub watches h1 and h2, and keeps the list)
    nodes = {name: c.rpc(name, "os.getppid") for name in ("h1", "h2")}
    c.close()
    killed = hub_pid(env)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not alive(killed), message="the hub to die")
    (env.cwd / "solo_hosts").write_text("local name=solo slots=1\n")
    everything = env.cli("--hosts", "solo_hosts", "down", "--all", "--json")
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout) == {"solo": "not running", "h1": "stopped", "h2": "stopped"}
    assert not any(alive(p) for p in nodes.values())
    wait_for(lambda: hub_pid(env) is None or not alive(hub_pid(env)), message="no hub left")
