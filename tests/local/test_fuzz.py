"""Fuzzing the wire: generated frames (headers, heads of any JSON value, deep nesting,
wrong types, huge numbers, invalid UTF-8, lone surrogates, missing and extra fields,
payload sizes) sent to a real node before and after the handshake, and to the
controller's side of the handshake. After each case, an authenticated client still gets a
pong from the same node process.

The suite runs a short pass (about 30 s). A longer one::

    CLUSTERCTL_FUZZ_EXAMPLES=5000 python3 -m pytest tests/local/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterctl import errors
from clusterctl.session.connection import NodeConnection
from clusterctl.node import wire

from rawclient import frame, handshake, raw_socket
from test_node_input import pong_pid

pytestmark = [pytest.mark.filterwarnings("ignore:Generating overly large repr"),
              pytest.mark.local_only]  # raw sockets to a local node

EXAMPLES = int(os.environ.get("CLUSTERCTL_FUZZ_EXAMPLES", "0")) or None


def fuzz_settings(examples: int):
    return settings(max_examples=EXAMPLES or examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


# -- what a peer might send -----------------------------------------------------------------

# text with anything in it, lone surrogates too (json.dumps writes them as \u escapes)
any_text = st.text(st.characters(blacklist_categories=()), max_size=12)
leaves = (st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
          | st.floats(allow_nan=True, allow_infinity=True) | any_text)
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(any_text, inner, max_size=4), max_leaves=12)
hexes = st.text("0123456789abcdef", min_size=1, max_size=70)
plausible = {
    "id": st.integers(min_value=-1, max_value=2**64) | json_values,
    "fk": st.sampled_from(["k", "pmap-1"]) | any_text | json_values,
    "key": st.sampled_from(["k", "pmap-1"]) | any_text | json_values,
    "mod": st.sampled_from(["math", "os", ""]) | json_values,
    "fun": st.sampled_from(["pow", "getpid"]) | json_values,
    "nonce": hexes | json_values,
    "mac": hexes | json_values,
    "heartbeat": st.floats() | st.integers(min_value=-2**70, max_value=2**70) | json_values,
    "t": st.floats() | json_values,
    "proto": st.integers(min_value=-1, max_value=3) | json_values,
    "reason": any_text | json_values,
}
OPS = ["call", "map", "defn", "ping", "cancel", "auth", "splice", "hello", "welcome", "result"]


@st.composite
def heads(draw, ops=OPS):
    """A head as a dict: a known or odd op, some known fields with odd values, extra fields."""
    head = {"op": draw(st.sampled_from(ops) | any_text | json_values)}
    for name in draw(st.lists(st.sampled_from(sorted(plausible)), max_size=4, unique=True)):
        head[name] = draw(plausible[name])
    head.update(draw(st.dictionaries(any_text, json_values, max_size=2)))
    if draw(st.booleans()) and "op" in head:
        del head["op"]
    return head


def _json(head) -> bytes:
    return json.dumps(head, separators=(",", ":")).encode()  # (ASCII, \u escapes)


@st.composite
def raw_heads(draw, ops=OPS):
    """A head's bytes: JSON of a generated head, deep nesting, a huge number, garbage."""
    kind = draw(st.sampled_from(["json", "json", "json", "deep", "number", "bytes", "mutated"]))
    if kind == "json":
        return _json(draw(heads(ops)))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=200_000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        closer = b"]" if opener == b"[" else b"}"
        inner = opener * depth + b"1" + closer * depth * draw(st.integers(0, 1))
        return b'{"op":"ping","id":%s}' % inner if draw(st.booleans()) else inner
    if kind == "number":
        digits = b"9" * draw(st.integers(min_value=1, max_value=6000))
        field = draw(st.sampled_from([b"id", b"heartbeat", b"t", b"nonce"]))
        op = draw(st.sampled_from([b"ping", b"call", b"auth", b"cancel"]))
        return b'{"op":"%s","%s":%s%s}' % (op, field, digits, draw(st.sampled_from([b"", b".5", b"e999"])))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    raw = bytearray(_json(draw(heads(ops))))
    at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] = draw(st.integers(min_value=0, max_value=255))
    return bytes(raw)


@st.composite
def frames(draw, ops=OPS):
    """Bytes of one frame as a peer might send it: header, head and payload."""
    head = draw(raw_heads(ops))
    payload = draw(st.sampled_from([b"", b"", b"\x80\x05N.", b"x" * 70_000]) | st.binary(max_size=64))
    magic = draw(st.sampled_from([wire.MAGIC] * 8 + [b"CX", b"\x00\x00"]))
    kind = draw(st.sampled_from([wire.KIND_MESSAGE] * 8 + [0, 255]))
    head_len = len(head) if draw(st.integers(0, 7)) else draw(st.integers(0, 2**32 - 1))
    payload_len = len(payload) if draw(st.integers(0, 7)) else draw(st.integers(0, 2**32 - 1))
    data = wire.HEADER.pack(magic, kind, head_len, payload_len) + head + payload
    if draw(st.integers(0, 9)) == 0:  # cut short
        data = data[:draw(st.integers(0, len(data)))]
    return data


def send(sock: socket.socket, data: bytes) -> None:
    """Send what the node takes: it may close the connection before the end (rightly)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def drain(sock: socket.socket, seconds: float) -> None:
    """Read what the node sends until it closes, or ``seconds`` of silence."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except (socket.timeout, OSError):
        pass


# -- against a real node ----------------------------------------------------------------------

@pytest.fixture
def started_n1(cluster):
    """Local node n1 started (``cluster``, local_only): (its pid, the cookie), for raw sockets to it."""
    [info] = cluster.world(["n1"])
    assert info.ok
    return info.pid, cluster.settings.cookie


@fuzz_settings(250)
@given(data=frames(), then=st.sampled_from([b"", wire.encode({"op": "ping", "id": 1})]))
def test_frames_before_the_handshake(started_n1, env, data, then):
    pid, cookie = started_n1
    with raw_socket(env) as sock:
        wire.read_message(sock, max_payload=0)
        send(sock, data + then)
        drain(sock, 0.05)
    assert pong_pid(env, cookie) == pid


# after the handshake: everything but "stop", which an authenticated controller may send
AFTER = [op for op in OPS if op != "stop"]


@fuzz_settings(250)
@given(data=frames(AFTER))
def test_frames_after_the_handshake(started_n1, env, data):
    pid, cookie = started_n1
    if b"stop" in data:
        data = data.replace(b"stop", b"stip")
    with raw_socket(env) as sock:
        assert handshake(sock, cookie)["op"] == "welcome"
        send(sock, data + wire.encode({"op": "ping", "id": 999_999}))
        drain(sock, 0.05)
    assert pong_pid(env, cookie) == pid


def test_the_fuzzed_node_logged_no_traceback(started_n1, env):
    """(Each run above ends every malformed connection with a reason, never a traceback.)"""
    pid, cookie = started_n1
    assert pong_pid(env, cookie) == pid
    assert "Traceback" not in env.node_log("n1")


# -- against the controller's side of the handshake ------------------------------------------

COOKIE = b"c" * 32


@fuzz_settings(400)
@given(hello=st.one_of(frames(["hello", "refused", "welcome"]),
                       heads(["hello"]).map(lambda h: wire.encode(h)),
                       heads(["hello"]).map(lambda h: frame(_json(h)))),
       welcome=st.one_of(frames(["welcome", "refused"]), heads(["welcome"]).map(lambda h: frame(_json(h)))))
def test_the_controller_handshake(hello, welcome):
    ours, theirs = socket.socketpair()

    def fake_node():  # (a thread: what it sends may be more than the socket holds)
        try:
            theirs.sendall(hello + welcome)
            theirs.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    writer = threading.Thread(target=fake_node, daemon=True)
    writer.start()
    conn = NodeConnection("n9", ours, cookie=COOKIE, max_payload=1000)
    try:
        conn.read_hello(0.5)
        conn.authenticate(0.5)
    except errors.ClusterError:
        return  # refused cleanly: any ClusterError is a clear message
    else:
        raise AssertionError("a node that cannot know the cookie was welcomed")
    finally:
        conn.close_unstarted()
        theirs.close()
        writer.join(5)


@fuzz_settings(300)
@given(data=st.lists(frames(), min_size=1, max_size=3).map(b"".join), cut=st.integers(0, 1 << 20))
def test_the_decoder_raises_only_frame_errors(data, cut):
    decoder = wire.FrameDecoder(max_payload=1 << 20)
    try:
        for part in (data[:cut], data[cut:]):
            for head, payload, raw in decoder.feed(part):
                assert type(head) is dict and type(head["op"]) is str
                wire.encode(head)  # what came in can go out again
    except wire.FrameError:
        pass
