"""Malformed input against real nodes and a real controller: whatever one peer sends, only
that connection ends (with a logged reason), and the node, or the rest of the world, goes on.

The helpers here (a raw client, a fake node) are shared with the fuzz test."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import cloudpickle
import pytest

from clusterctl import Cluster, errors
from clusterctl.session.connection import NodeConnection
from clusterctl.session.outcomes import decode_result
from clusterctl.config.hosts import HostSpec
from clusterctl.node import wire

from helpers import wait_for
from rawclient import frame, handshake, raw_socket, until_closed

pytestmark = pytest.mark.local_only  # raw sockets to local nodes

# the functions below run on nodes, which cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- a hand-made client ---------------------------------------------------------------------

def pong_pid(env, cookie: bytes, node: str = "n1") -> int:
    """An authenticated client's ping: the pid in the node's pong."""
    with raw_socket(env, node) as sock:
        assert handshake(sock, cookie)["op"] == "welcome"
        sock.sendall(wire.encode({"op": "ping", "id": 5}))
        pong, _ = wire.read_message(sock)
        assert pong["op"] == "pong" and pong["id"] == 5
        return pong["pid"]


@pytest.fixture
def started_n1(cluster, env):
    """Local node n1 started (``cluster``, local_only): (its pid, the cookie), for raw sockets to it."""
    [info] = cluster.world(["n1"])
    assert info.ok
    return info.pid, cluster.settings.cookie


def closes_with(env, sock, reason: str) -> None:
    until_closed(sock)
    wait_for(lambda: reason in env.node_log("n1"), timeout=5, message=f"{reason!r} in the log")


# -- before the handshake -------------------------------------------------------------------

def test_deeply_nested_head_before_the_handshake(started_n1, env):
    """100,000 brackets are within the head limit, and deeper than the JSON decoder goes."""
    pid, cookie = started_n1
    with raw_socket(env) as sock:
        sock.sendall(frame(b"[" * 100_000))
        closes_with(env, sock, "nested too deeply")
    assert pong_pid(env, cookie) == pid


@pytest.mark.parametrize("nonce, reason", [
    (b'"\\ud800"', "garbage on the socket: control head holds a string that is not text"),
    (b'"\\udfff\\ud800"', "garbage on the socket: control head holds a string that is not text"),
    (b'["x"]', "refused: malformed 'auth' message: field 'nonce'"),
    (b'"' + b"a" * 65 + b'"', "refused: malformed 'auth' message: field 'nonce'"),
])
def test_auth_with_a_bad_nonce_closes_that_connection(started_n1, env, nonce, reason):
    pid, cookie = started_n1
    with raw_socket(env) as sock:
        wire.read_message(sock, max_payload=0)
        sock.sendall(frame(b'{"op":"auth","nonce":%s,"mac":"00"}' % nonce))
        closes_with(env, sock, reason)
    assert pong_pid(env, cookie) == pid


def test_auth_with_a_heartbeat_too_big_for_a_float(started_n1, env):
    pid, cookie = started_n1
    with raw_socket(env) as sock:
        hello, _ = wire.read_message(sock, max_payload=0)
        nonce = wire.new_nonce()
        mac = wire.client_mac(cookie, hello["nonce"], nonce)
        sock.sendall(frame(b'{"op":"auth","nonce":"%s","mac":"%s","heartbeat":1%s}'
                           % (nonce.encode(), mac.encode(), b"0" * 400)))
        data = until_closed(sock)
    assert b'"op":"refused"' in data and b"heartbeat" in data
    assert pong_pid(env, cookie) == pid


@pytest.mark.parametrize("proto", [wire.PROTOCOL_VERSION + 1, wire.OLDEST_PROTOCOL - 1])
def test_auth_of_a_protocol_out_of_the_nodes_range_is_refused_naming_both(started_n1, env, proto):
    """The right cookie, but a protocol the node does not speak: refused, with the
    controller's protocol, the node's range and version, and whom to ask."""
    pid, cookie = started_n1
    with raw_socket(env) as sock:
        hello, _ = wire.read_message(sock, max_payload=0)
        nonce = wire.new_nonce()
        sock.sendall(wire.encode({"op": "auth", "proto": proto, "nonce": nonce,
                                  "mac": wire.client_mac(cookie, hello["nonce"], nonce)}))
        answer, _ = wire.read_message(sock, max_payload=0)
    assert answer["op"] == "refused"
    reason = answer["reason"]
    assert f"protocol {proto} (the controller's)" in reason
    assert f"protocols {wire.OLDEST_PROTOCOL} to {wire.PROTOCOL_VERSION}" in reason
    assert ("upgrade clusterctl on the controller" if proto < wire.OLDEST_PROTOCOL
            else "ask the host's owner") in reason
    assert pong_pid(env, cookie) == pid


# -- after the handshake --------------------------------------------------------------------

@pytest.mark.parametrize("head, reason", [
    (b'{"op":"call","id":[1]}', "field 'id'"),
    (b'{"op":"map","fk":[1],"id":3}', "field 'fk'"),
    (b'{"op":"call","fk":{"a":1},"id":3}', "field 'fk'"),
    (b'{"op":"cancel","id":[1]}', "field 'id'"),
    (b'{"op":"cancel","id":{}}', "field 'id'"),
    (b'{"op":"defn","key":"\\ud800"}', "lone surrogate"),
    (b'{"op":"ping","id":"x"}', "field 'id'"),
    (b'{"op":"call","id":1,"mod":7,"fun":"f"}', "field 'mod'"),
    (b'{"op":"stop","id":1e999}', "field 'id'"),
])
def test_malformed_message_after_the_handshake_closes_that_connection(started_n1, env, head, reason):
    pid, cookie = started_n1
    with raw_socket(env) as sock:
        assert handshake(sock, cookie)["op"] == "welcome"
        sock.sendall(frame(head))
        closes_with(env, sock, reason)
    log = env.node_log("n1")
    assert "Traceback" not in log
    assert pong_pid(env, cookie) == pid


def test_unknown_operation_is_answered_and_the_connection_stays(started_n1, env):
    pid, cookie = started_n1
    with raw_socket(env) as sock:
        assert handshake(sock, cookie)["op"] == "welcome"
        sock.sendall(wire.encode({"op": "teleport", "id": 9}))
        answer, _ = wire.read_message(sock)
        assert answer == {"op": "error", "id": 9, "message": "unknown operation 'teleport'"}
        sock.sendall(wire.encode({"op": "ping", "id": 10}))
        assert wire.read_message(sock)[0]["pid"] == pid
    # and that answer, reaching a waiting request, reads as what it says
    with pytest.raises(errors.ProtocolError, match="n1: unknown operation 'teleport'"):
        decode_result("n1", answer, b"", None)


# -- the controller's side of the handshake -------------------------------------------------

class FakeNode:
    """A unix socket server at a node's socket path that greets each client with ``hello``
    (raw head bytes, or a function of the connection making them) and then does ``then``."""

    def __init__(self, path: str, hello, then=None) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.hello, self.then = hello, then
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                try:
                    sock.settimeout(10)
                    sock.sendall(frame(self.hello) if isinstance(self.hello, bytes) else self.hello(sock))
                    if self.then is not None:
                        self.then(sock)
                    until_closed(sock)
                except OSError:
                    pass
                except BaseException as exc:  # noqa: BLE001 - shown by the test
                    self.errors.append(exc)

    def close(self) -> None:
        try:  # (wakes the accepting thread: closing alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(15)


GOOD_HELLO = b'{"op":"hello","proto":1,"version":"0","code":"x","python":"3.11.0","pid":1,' \
             b'"slots":1,"node":"n2","nonce":"%s"}'


@pytest.mark.parametrize("hello", [
    b"[" * 100_000,
    b'{"op":"hello","proto":1,"nonce":"\\ud800"}',
    b'{"op":"hello","proto":1,"nonce":["ab"]}',
    b'{"op":"hello","proto":"1","nonce":"ab"}',
    b'{"op":"hello","proto":1,"nonce":"ab","python":3.11}',
    b'{"op":"hello","proto":1,"nonce":"ab","slots":1e999}',
    b'{"op":"welcome"}',
], ids=["deep", "surrogate-nonce", "list-nonce", "string-proto", "number-python", "infinite-slots",
        "no-hello"])
def test_a_bad_greeting_from_one_host_is_that_host_only(env, hello):
    specs = [HostSpec(name="n1", target="local", slots=1), HostSpec(name="n2", target="local", slots=1)]
    env.run_dir.mkdir(mode=0o700, exist_ok=True)
    fake = FakeNode(str(env.run_dir / "n2.sock"), hello)
    try:
        with Cluster(specs, connect_timeout=5) as cluster:
            try:
                infos = {i.name: i for i in cluster.world()}
                assert infos["n1"].ok
                assert not infos["n2"].ok and infos["n2"].reason
            finally:
                cluster.down(["n1"])
    finally:
        fake.close()
    assert not fake.errors


def _welcome_with(mac: bytes):
    """A fake node that greets properly and answers the client's auth with ``mac``."""
    def then(sock):
        wire.read_message(sock, max_payload=0)
        sock.sendall(frame(b'{"op":"welcome","mac":%s}' % mac))
    return then


def _connection(path: str) -> NodeConnection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return NodeConnection("n2", sock, cookie=b"k" * 32)


@pytest.mark.parametrize("mac", [b'"\\ud800"', b'["00"]', b'"%s"' % (b"0" * 64), b"null"])
def test_a_node_that_cannot_prove_the_cookie_is_refused(tmp_path, mac):
    path = str(tmp_path / "n2.sock")
    fake = FakeNode(path, GOOD_HELLO % b"ab", then=_welcome_with(mac))
    conn = _connection(path)
    try:
        conn.read_hello(5)
        with pytest.raises((errors.HandshakeError, errors.ProtocolError),
                           match="could not prove it holds our cookie|malformed answer to our proof"):
            conn.authenticate(5)
    finally:
        conn.close_unstarted()
        fake.close()
    assert not fake.errors


def test_a_node_with_the_right_mac_is_welcome(tmp_path):
    """The other half of the test above: the fake node is refused for its MAC alone."""
    path = str(tmp_path / "n2.sock")
    cookie = b"k" * 32
    nonce = "ab" * 16
    box = {}

    def then(sock):
        auth, _ = wire.read_message(sock, max_payload=0)
        box["auth"] = auth
        sock.sendall(wire.encode({"op": "welcome", "mac": wire.node_mac(cookie, nonce, auth["nonce"])}))

    fake = FakeNode(path, GOOD_HELLO % nonce.encode(), then=then)
    conn = _connection(path)
    try:
        conn.read_hello(5)
        conn.authenticate(5)
        assert wire.macs_equal(box["auth"]["mac"], wire.client_mac(cookie, nonce, box["auth"]["nonce"]))
    finally:
        conn.close_unstarted()
        fake.close()


def test_an_oversized_frame_from_the_node_is_refused_before_its_body(tmp_path):
    """After the handshake, a node announces a payload over the controller's limit and sends
    no byte of it: the controller fails the connection at once, it does not wait for it."""
    path = str(tmp_path / "n2.sock")
    cookie = b"k" * 32
    nonce = "ab" * 16

    def then(sock):
        auth, _ = wire.read_message(sock, max_payload=0)
        sock.sendall(wire.encode({"op": "welcome", "mac": wire.node_mac(cookie, nonce, auth["nonce"])}))
        wire.read_message(sock)  # the ping
        sock.sendall(wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, 20, 1001))
        sock.settimeout(10)  # the body never comes: wait until the controller hangs up
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass

    fake = FakeNode(path, GOOD_HELLO % nonce.encode(), then=then)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    conn = NodeConnection("n2", sock, cookie=cookie, max_payload=1000, heartbeat_timeout=30)
    try:
        conn.read_hello(5)
        conn.authenticate(5)
        conn.start()
        t0 = time.monotonic()
        with pytest.raises(errors.ProtocolError, match="payload of 1001 bytes exceeds the limit of 1000"):
            conn.ping(8)
        assert time.monotonic() - t0 < 5
    finally:
        conn.close()
        fake.close()


# -- bounded under abuse --------------------------------------------------------------------

def _answers(env, cookie, pid) -> bool:
    try:
        return pong_pid(env, cookie) == pid
    except (OSError, EOFError, AssertionError, wire.FrameError):
        return False


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_the_node_rests_instead_of_spinning(started_n1, env):
    import resource

    pid, cookie = started_n1
    log_path = env.run_dir / "n1.log"
    old_limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    open_fds = len(os.listdir(f"/proc/{pid}/fd"))
    clients = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds + 2, old_limit[1]))  # (soft)
        for _ in range(8):  # two are accepted, the rest wait in the listener's backlog
            clients.append(raw_socket(env))
        wait_for(lambda: "accept failed" in env.node_log("n1"), timeout=5, message="accept to fail")
        time.sleep(0.2)
        cpu, size = cpu_seconds(pid), log_path.stat().st_size
        time.sleep(1.0)
        used, grew = cpu_seconds(pid) - cpu, log_path.stat().st_size - size
        assert used < 0.25, f"the node used {used:.2f} s of CPU in 1 s with accept failing"
        assert grew < 2000, f"the log grew by {grew} bytes in 1 s"
    finally:
        for sock in clients:
            sock.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old_limit)
    wait_for(lambda: _answers(env, cookie, pid), timeout=10, message="a pong once they closed")
    assert "accepting connections again" in env.node_log("n1")


def _print_a_lot(megabytes: int) -> int:
    import os

    line = b"x" * 1023 + b"\n"  # (to the descriptor: what Python's streams print goes
    for _ in range(megabytes * 1024):  # to the controller, what bypasses them to the log)
        os.write(2, line)
    return megabytes


def test_the_log_stays_bounded_while_the_node_runs(cluster, env):
    from clusterctl.node import log

    [info] = cluster.world(["n1"])
    log_path = env.run_dir / "n1.log"
    assert cluster.rpc("n1", _print_a_lot, 3) == 3  # written to descriptor 2: the node's log
    wait_for(lambda: log_path.stat().st_size <= getattr(log, "LOG_BYTES", 1 << 20), timeout=5,
             message="the log to be cut back")
    assert (env.run_dir / "n1.log.1").stat().st_size <= getattr(log, "LOG_BYTES", 1 << 20)
    cluster.rpc("n1", "os.getpid")
    assert cluster.world(["n1"])[0].pid == info.pid


# -- the hub ----------------------------------------------------------------------------------

def test_a_request_the_hub_fails_on_is_answered_with_why_and_the_hub_serves_on(env, local_node_specs):
    """A request the hub cannot handle (here ``wait_stopped`` without its arguments) gets an
    error that names the failure and the hub's log, not a closed connection; the hub, and
    its log, go on."""
    from clusterctl.hub.client import HubClient

    cluster = Cluster(local_node_specs)
    hub = HubClient(cluster.settings)
    try:
        with pytest.raises(errors.HubError, match=r"failed on the request 'wait_stopped': KeyError") as caught:
            hub.call("wait_stopped", {}, 10.0)
        assert "hub.log" in caught.value.hint
        assert hub.call("status", {}, 10.0)["requests"] == 2
        log = (env.run_dir / "hub" / "hub.log").read_text()
        assert "the request 'wait_stopped' failed" in log and "Traceback" in log
    finally:
        hub.stop(10.0)
        cluster.close()
