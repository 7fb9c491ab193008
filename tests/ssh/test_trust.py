"""Trust boundaries over the SSH test bed: the owner of a restricted host is not trusted.

h3's ``authorized_keys`` forces the controller's key to run an agent of the owner's: here
a hostile one, which speaks the boot conversation, then acts as a node and sends the hub
what only a node of the user's may (relayed frames carrying a pickle, a process to restart
elsewhere, claims and releases of names). Nothing of it may reach another node, be
unpickled anywhere, or change the world's names; the host never learns the cookie; and a
host the hosts file says is restricted gets nothing when it answers as an ordinary one.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

from clusterctl.actor import receive, reply
from clusterctl.node import wire

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

HOST = "h3"

# The owner's agent. argv: mode ("restricted": says so at boot and in its greeting;
# "lying": restricted at boot, an ordinary node in its greeting; "ordinary": an ordinary
# host at boot), a file to log every line it was sent, the marker that unpickling its
# payloads anywhere would create, and the protocol to speak (the controller's).
HOSTILE_AGENT = textwrap.dedent('''
    import json, os, pickle, sys, threading, time
    from clusterctl.node import wire

    mode, log_path, marker, proto = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sys.stderr = open(log_path + ".err", "a")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    log = open(log_path, "a")

    class Channel:  # what wire.read_message reads from
        recv = staticmethod(stdin.read1)

    def line():
        text = stdin.readline()
        log.write(json.dumps(text.decode(errors="replace")) + "\\n")
        log.flush()
        return text

    def say(obj):
        stdout.write(json.dumps(obj).encode() + b"\\n")
        stdout.flush()

    class Bomb:
        def __reduce__(self):
            return (os.system, ("touch " + marker,))

    stdin.read(int(stdin.readline()))  # the boot script, not run
    params = json.loads(line())
    if "wait_stopped" in params:
        say({"stopped": True})
        sys.exit(0)
    if mode == "ordinary":
        say({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
             "need_code": False})
    else:
        say({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
             "need_code": False, "restricted": 1, "version": "hostile", "proto": proto})
    if line().strip() != b"0":
        sys.exit(0)
    key = params.get("cookie") or line().strip().decode()  # (the cookie, where a controller sent it)
    key = bytes.fromhex(key)
    say({"node": "ready", "socket": "/nonexistent", "restricted": True})

    nonce = wire.new_nonce()
    hello = {"op": "hello", "proto": proto, "version": "hostile", "code": "x",
             "python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
             "pid": os.getpid(), "slots": 1, "node": "r", "nonce": nonce, "host": "h3"}
    if mode == "restricted":
        hello["restricted"] = 1
    stdout.write(wire.encode(hello))
    stdout.flush()
    auth, _ = wire.read_message(Channel)
    stdout.write(wire.encode({"op": "welcome", "mac": wire.node_mac(key, nonce, auth["nonce"])}))
    stdout.flush()
    writing = threading.Lock()

    def write(frame):
        with writing:
            stdout.write(frame)
            stdout.flush()

    def answer_pings():  # (so that it looks alive to world)
        while True:
            head, _ = wire.read_message(Channel)
            if head.get("op") == "ping":
                write(wire.encode({"op": "pong", "id": head.get("id"), "time": time.time(),
                                   "mono": time.monotonic(), "load": [0, 0, 0], "running": 0,
                                   "queued": 0, "slots": 1, "pid": os.getpid(), "uptime": 1.0,
                                   "stats": {}, "cpus": 1, "processes": 0}))

    threading.Thread(target=answer_pings, daemon=True).start()

    bomb = pickle.dumps(Bomb())
    inner = wire.encode({"op": "send", "to": "victim", "from": "a.999"}, bomb)
    attacks = [
        # a message for a process on a, relayed as if a had sent it
        wire.encode({"op": "relay", "node": "a", "src": "b", "s": "hostile.1", "q": 1}, inner),
        wire.encode({"op": "relay", "node": "a", "src": "r", "s": "hostile.2", "q": 1}, inner),
        # the victim's name taken over
        wire.encode({"op": "release", "name": "victim", "pid": open(marker + ".victim").read()}),
        wire.encode({"op": "claim", "name": "victim", "pid": "r.1"}),
        wire.encode({"op": "claim", "name": "squatted", "pid": "r.2"}),
        # a process to start again elsewhere once this node is lost
        wire.encode({"op": "keep", "pid": "r.3", "name": "adopted", "label": "bomb", "restart": "permanent",
                     "intensity": 3, "period": 5.0, "mailbox": 1 << 20, "restarts": 0},
                    wire.encode({"op": "spawn"}, pickle.dumps((Bomb(), (), {})))),
    ]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for frame in attacks:
            try:
                write(frame)
            except OSError:
                sys.exit(0)
        time.sleep(0.3)
    # and now it is lost: what it asked to keep would be restarted elsewhere
''')


def collect():
    """The victim: answers 'got' with what it was sent."""
    got = []
    while True:
        msg = receive()
        if msg == "got":
            reply(got)
        else:
            got.append(msg)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def hostile_h3(ssh_bed, env, tmp_path):
    """Host h3's key forced to run the hostile agent: (force, log, marker), the key given back after."""
    keys = ssh_bed.host(HOST).authorized_keys
    original = keys.read_text()
    agent = tmp_path / "agent.py"
    agent.write_text(HOSTILE_AGENT)
    log = tmp_path / "agent.log"
    marker = tmp_path / "unpickled"

    def force(mode: str) -> None:
        key = original.split()[:2]
        command = f"{sys.executable} {agent} {mode} {log} {marker} {wire.PROTOCOL_VERSION}"
        keys.write_text(f'command="{command}",restrict {" ".join(key)} hostile\n')

    yield force, log, marker
    keys.write_text(original)


def cookie(env) -> str:
    return (env.config / "clusterctl" / "cookie").read_text().strip()


def received(log: Path) -> str:
    return "".join(json.loads(line) for line in log.read_text().splitlines()) if log.exists() else ""


@pytest.mark.parametrize("mode", ["restricted", "lying"])
def test_a_restricted_hosts_owner_cannot_reach_the_other_nodes(env, ssh_clusters, hostile_h3, mode):
    force, log, marker = hostile_h3
    users = ssh_clusters.cluster("h1 name=a\nh2 name=b\n", hub=True)
    victim = users.spawn(collect, name="victim", node="a")
    Path(str(marker) + ".victim").write_text(victim)
    force(mode)
    mixed = ssh_clusters.cluster("h1 name=a\nh2 name=b\nh3 name=r\n", hub=True)
    infos = {i.name: i for i in mixed.world()}
    assert infos["a"].ok and infos["b"].ok
    if mode == "restricted":
        assert infos["r"].ok and infos["r"].restricted == 1
    else:  # an ordinary node must prove the cookie, which the host was never given
        assert not infos["r"].ok and "prove" in infos["r"].reason
    time.sleep(3.5)  # its attacks go on for 3 s, then it is lost, and what it kept would move
    assert cookie(env) not in received(log)
    assert not marker.exists()
    assert users.whereis("victim") == victim
    assert users.whereis("squatted") is None
    assert users.call("victim", "got", timeout=30) == []
    assert all(p["name"] != "adopted" for p in users.processes())


def test_a_host_said_restricted_that_answers_as_ordinary_gets_nothing(env, ssh_clusters, hostile_h3):
    force, log, marker = hostile_h3
    force("ordinary")
    c = ssh_clusters.cluster("h3 name=r restricted=yes\n", hub=True)
    info, = c.world()
    assert info.status == "pang"
    assert "answered as an ordinary host" in info.reason and "restricted" in info.reason
    sent = received(log)
    assert sent and cookie(env) not in sent
    # the boot parameters, then at most the "-1" that ends it (the agent may be ended first)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert json.loads(lines[0])["name"] == "r" and lines[1:] in ([], ["-1\n"])
    assert not marker.exists()
