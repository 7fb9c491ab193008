"""A restricted node on this machine, reached as sshd would reach it: the installed agent
runs with the owner's policy, its standard input and output one end of a socket pair
(the SSH channel), and the test is the controller on the other end. So the node is real
(its own process, its workers) and so is the splice; no SSH is needed. (Over a real sshd:
tests/ssh/test_restricted.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clusterctl.node import plain, wire

from helpers import wait_for

pytestmark = pytest.mark.timeout(120)

STUB_COMMAND = "python3 -S -c 'import sys;exec(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())))'"
KEY = bytes(range(32))  # the key the controller derived for the node (any 32 bytes here)

LAB = textwrap.dedent("""
    from os import system
    from subprocess import check_output

    def add(a, b):
        return a + b
""")


class Channel:
    """One SSH session of the controller's key: the agent, and the controller's end."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, first: dict, node: dict) -> None:
        self.proc, self.sock, self.first, self.node = proc, sock, first, node
        self.hello: dict = {}
        self.next_id = 0

    def call(self, mod: str, fun: str, *args, timeout: float = 30):
        """The answer to a call by name: ("ok", value) or (error kind, message)."""
        self.send_call(mod, fun, *args)
        return self.answer(timeout)

    def send_call(self, mod: str, fun: str, *args) -> int:
        self.next_id += 1
        self.sock.sendall(wire.encode({"op": "call", "id": self.next_id, "mod": mod, "fun": fun,
                                       "enc": "json"}, plain.dumps([list(args), {}])))
        return self.next_id

    def answer(self, timeout: float = 30):
        self.sock.settimeout(timeout)
        head, payload = wire.read_message(self.sock)
        if head.get("ok"):
            return "ok", plain.loads(payload)
        return head["error"]["kind"], head["error"]["message"]

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.stderr.close()
        self.proc.wait()


class Host:
    """The test's restricted host: a policy file of the owner's, the lab module, and the
    run directory; every node started is stopped at the end."""

    def __init__(self, env, tmp_path: Path) -> None:
        self.env = env
        self.etc = tmp_path / "etc"
        self.etc.mkdir(mode=0o755)
        self.lib = tmp_path / "lib"
        self.lib.mkdir(mode=0o755)
        (self.lib / "lab.py").write_text(LAB)
        self.channels: list[Channel] = []

    @property
    def node_dir(self) -> Path:
        return self.env.run_dir / "restricted"

    def policy(self, text: str, name: str = "policy") -> Path:
        path = self.etc / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def connect(self, policy: Path, name: str = "r", slots: int = 0, start: bool = True) -> Channel:
        """An SSH session's worth: the agent's conversation, then the node's handshake."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ, XDG_RUNTIME_DIR=str(self.env.run), SSH_ORIGINAL_COMMAND=STUB_COMMAND)
        proc = subprocess.Popen([sys.executable, "-m", "clusterctl.node.restricted", "--policy", str(policy)],
                                stdin=theirs, stdout=theirs, stderr=subprocess.PIPE, env=env)
        theirs.close()
        params = {"name": name, "agent_args": ["--slots", str(slots), "--idle", "60"], "start": start}
        source = b"raise SystemExit('never run')"
        ours.sendall(b"%d\n" % len(source) + source + json.dumps(params).encode() + b"\n0\n"
                     + KEY.hex().encode() + b"\n")
        ours.settimeout(60)
        lines = ours.makefile("rb", buffering=0)  # (unbuffered: the node's frames follow the lines)
        first = json.loads(lines.readline())
        node = json.loads(lines.readline() or b"{}") if "error" not in first else {}
        channel = Channel(proc, ours, first, node)
        self.channels.append(channel)
        if node.get("node") in ("running", "ready"):
            channel.hello = authenticate(ours, KEY)
        return channel

    def pid(self, name: str = "r") -> int:
        return int((self.node_dir / f"{name}.pid").read_text())

    def log(self, name: str = "r") -> str:
        path = self.node_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def stop_all(self) -> None:
        for channel in self.channels:
            channel.close()
        for pid_file in self.node_dir.glob("*.pid") if self.node_dir.exists() else ():
            try:
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            wait_for(lambda pid=pid: not alive(pid), timeout=15, message=f"node {pid} to stop")


def authenticate(sock: socket.socket, key: bytes) -> dict:
    """The controller's handshake, by hand; the node's hello."""
    hello, _ = wire.read_message(sock, max_payload=0)
    assert hello["op"] == "hello", hello
    nonce = wire.new_nonce()
    sock.sendall(wire.encode({"op": "auth", "proto": wire.PROTOCOL_VERSION, "nonce": nonce,
                              "mac": wire.client_mac(key, hello["nonce"], nonce)}))
    answer, _ = wire.read_message(sock, max_payload=0)
    assert answer["op"] == "welcome", answer
    return hello


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.fixture
def restricted_host(env, tmp_path):
    """A local stand-in for a restricted host (``Host``), its nodes stopped after: for restricted nodes."""
    h = Host(env, tmp_path)
    yield h
    h.stop_all()


def pong(channel: Channel) -> dict:
    """The node's answer to a ping: its pid, slots, work in hand."""
    channel.sock.sendall(wire.encode({"op": "ping", "id": 999_999}))
    channel.sock.settimeout(30)
    pong, _ = wire.read_message(channel.sock)
    assert pong["op"] == "pong"
    return pong


# -- 6: a pattern reaches only what its module defines -------------------------------------

def test_a_pattern_does_not_reach_what_the_module_imported(restricted_host, tmp_path):
    policy = restricted_host.policy(f"allow lab.*\npath {restricted_host.lib}\n")
    marker = tmp_path / "ran"
    channel = restricted_host.connect(policy)
    assert channel.call("lab", "add", 2, 3) == ("ok", 5)
    kind, message = channel.call("lab", "system", f"touch {marker}")
    assert kind == "refused", message
    assert "lab.system" in message and "posix.system" in message and str(policy) in message
    assert "\n" not in message
    kind, message = channel.call("lab", "check_output", ["touch", str(marker)])
    assert kind == "refused" and "subprocess.check_output" in message
    assert not marker.exists()
    assert channel.call("lab", "add", 1, 1) == ("ok", 2)  # the worker and connection go on


def test_an_exact_rule_still_names_an_imported_function(restricted_host):
    policy = restricted_host.policy("allow os.getpid\n")
    channel = restricted_host.connect(policy)
    kind, pid = channel.call("os", "getpid")
    assert kind == "ok" and isinstance(pid, int)


# -- 7: a node runs only under the policy it was reached with -------------------------------

def test_a_node_under_another_policy_file_is_replaced(restricted_host):
    loose = restricted_host.policy("allow math.*\nallow os.getpid\n", "loose")
    strict = restricted_host.policy("allow operator.neg\n", "strict")
    first = restricted_host.connect(loose)
    assert first.first["restricted"] == 2
    assert first.call("math", "sqrt", 16.0) == ("ok", 4.0)
    old_pid = restricted_host.pid()
    second = restricted_host.connect(strict)  # the owner pointed the forced command at another file
    assert second.first["restricted"] == 1  # the agent's count ...
    assert second.hello["restricted"] == 1  # ... is the node's: a new one was started for it
    assert second.node["node"] == "ready"
    kind, message = second.call("math", "sqrt", 16.0)
    assert kind == "refused" and str(strict) in message
    assert second.call("operator", "neg", 2) == ("ok", -2)
    wait_for(lambda: not alive(old_pid), timeout=15, message="the node of the other policy to stop")
    assert restricted_host.pid() != old_pid
    assert "another policy" in restricted_host.log()


def test_a_node_under_the_same_policy_is_reached_again(restricted_host):
    policy = restricted_host.policy("allow math.*\n")
    first = restricted_host.connect(policy)
    pid = restricted_host.pid()
    second = restricted_host.connect(policy)
    assert second.node["node"] == "running" and restricted_host.pid() == pid
    assert first.call("math", "floor", 2.5) == ("ok", 2)
    assert second.call("math", "floor", 3.5) == ("ok", 3)


def test_a_replaced_policy_file_of_the_same_name_is_not_reached_through_the_old_node(restricted_host):
    """Replaced between two sessions, faster than the node notices (it looks twice a
    second): the agent compares the content and stops the old node itself."""
    policy = restricted_host.policy("allow math.*\n")
    first = restricted_host.connect(policy)
    old_pid = restricted_host.pid()
    staged = restricted_host.policy("allow operator.neg\n", "staged")
    os.replace(staged, policy)
    second = restricted_host.connect(policy)
    kind, _ = second.call("math", "floor", 2.5)
    assert kind == "refused"
    assert restricted_host.pid() != old_pid
    first.close()


# -- 8: the owner's bounds on the node -------------------------------------------------------

def test_slots_are_at_most_the_cpu_count_without_a_slots_line(restricted_host):
    policy = restricted_host.policy("allow os.getpid\n")
    cpus = os.cpu_count() or 1
    channel = restricted_host.connect(policy, slots=cpus + 3)
    assert channel.hello["slots"] == pong(channel)["slots"] == cpus
    assert "with %d slots" % cpus in restricted_host.log()


def test_a_slots_line_may_allow_more_than_the_cpus(restricted_host):
    cpus = os.cpu_count() or 1
    policy = restricted_host.policy(f"allow os.getpid\nslots {cpus + 1}\n")
    channel = restricted_host.connect(policy, slots=cpus + 3)
    assert pong(channel)["slots"] == cpus + 1


def test_a_call_over_the_payload_limit_is_refused_and_the_connection_goes_on(restricted_host):
    policy = restricted_host.policy("allow builtins.len\n")  # no 'payload' line: 16 MiB
    channel = restricted_host.connect(policy)
    kind, message = channel.call("builtins", "len", "x" * (17 << 20))
    assert kind == "refused", message
    assert "'payload'" in message and str(policy) in message and "\n" not in message
    assert channel.call("builtins", "len", "x" * (1 << 20)) == ("ok", 1 << 20)
    assert pong(channel)["pid"] == restricted_host.pid()


def test_a_payload_line_sets_the_limit(restricted_host):
    policy = restricted_host.policy("allow builtins.len\npayload 64K\n")
    channel = restricted_host.connect(policy)
    kind, message = channel.call("builtins", "len", "x" * (100 << 10))
    assert kind == "refused" and "'payload 64K'" in message and str(policy) in message
    assert channel.call("builtins", "len", "x" * 1000) == ("ok", 1000)


def test_calls_waiting_for_a_slot_are_bounded(restricted_host):
    """The one slot is busy: calls queue up to 64 MiB (the default), the next are refused
    at once naming the rule, and those queued run once the slot is free."""
    policy = restricted_host.policy("allow builtins.len\nallow time.sleep\nslots 1\n")
    channel = restricted_host.connect(policy)
    busy = channel.send_call("time", "sleep", 60)
    for _ in range(70):
        channel.send_call("builtins", "len", "x" * (1 << 20))
    refused = [message for kind, message in answers_before_a_pong(channel)]
    assert refused, "every call was queued"
    assert all("'queue'" in m and str(policy) in m and "\n" not in m for m in refused)
    assert 60 <= 70 - len(refused) <= 64  # 64 MiB's worth, and one handed to the busy worker
    channel.sock.sendall(wire.encode({"op": "cancel", "id": busy}))
    answers = [channel.answer(60) for _ in range(71 - len(refused))]
    assert answers[0][0] == "cancelled"
    assert answers[1:] == [("ok", 1 << 20)] * (70 - len(refused))  # the queued ones ran
    assert channel.call("builtins", "len", "abc") == ("ok", 3)


def test_a_queue_line_sets_the_limit(restricted_host):
    policy = restricted_host.policy("allow builtins.len\nallow time.sleep\nslots 1\nqueue 4M\n")
    channel = restricted_host.connect(policy)
    channel.send_call("time", "sleep", 60)
    for _ in range(10):
        channel.send_call("builtins", "len", "x" * (1 << 20))
    refused = [message for kind, message in answers_before_a_pong(channel)]
    assert 6 <= len(refused) <= 7 and all("'queue 4M'" in m for m in refused)


def answers_before_a_pong(channel: Channel) -> list:
    """The answers that came before the pong to a ping sent now: the refusals (the calls
    queued behind a busy slot are not answered yet)."""
    channel.sock.sendall(wire.encode({"op": "ping", "id": 999_999}))
    channel.sock.settimeout(30)
    answers = []
    while True:
        head, payload = wire.read_message(channel.sock)
        if head["op"] == "pong":
            return answers
        assert head["op"] == "result" and head["error"]["kind"] == "refused", head
        answers.append(("refused", head["error"]["message"]))


# -- 9: the import path is the owner's ---------------------------------------------------

def test_a_path_directory_others_can_write_keeps_the_node_from_starting(restricted_host):
    policy = restricted_host.policy(f"allow lab.*\n\npath {restricted_host.lib}\n")
    restricted_host.lib.chmod(0o777)
    channel = restricted_host.connect(policy)
    assert "error" in channel.first
    assert f"policy {policy} line 3" in channel.first["error"]
    assert f"{restricted_host.lib} is writable by group or others" in channel.first["error"]
    assert not (restricted_host.node_dir / "r.sock").exists()
