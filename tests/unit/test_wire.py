"""The wire protocol on its own: framing, limits and the handshake MACs (no processes)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from clusterctl.node import wire

COOKIE = bytes(range(32))


def header(head_len: int, payload_len: int, magic: bytes = wire.MAGIC) -> bytes:
    """A frame header as a peer might send it, valid or not."""
    return wire.HEADER.pack(magic, wire.KIND_MESSAGE, head_len, payload_len)


MESSAGES = [
    ({"op": "ping", "id": 1}, b""),
    ({"op": "call", "id": 7, "mod": "math", "fun": "pow"}, b"\x80\x05pickled"),
    ({"op": "result", "id": 2**40, "ok": True}, bytes(range(256)) * 300),
    ({"op": "hello", "node": "n\u00e9", "nonce": "ab" * 16}, b""),
]


@pytest.mark.parametrize("head, payload", MESSAGES)
def test_round_trip_through_the_decoder(head, payload):
    frame = wire.encode(head, payload)
    [(got_head, got_payload, raw)] = wire.FrameDecoder().feed(frame)
    assert got_head == head
    assert bytes(got_payload) == payload
    assert raw == frame


@pytest.mark.parametrize("head, payload", MESSAGES)
def test_encode_parts_is_encode(head, payload):
    prefix, rest = wire.encode_parts(head, payload)
    assert prefix + rest == wire.encode(head, payload)


def test_many_frames_in_one_chunk_and_split_anywhere():
    stream = b"".join(wire.encode(h, p) for h, p in MESSAGES)
    assert [h for h, _, _ in wire.FrameDecoder().feed(stream)] == [h for h, _ in MESSAGES]
    for cut in (1, wire.HEADER_SIZE - 1, wire.HEADER_SIZE, wire.HEADER_SIZE + 3, len(stream) - 1):
        decoder = wire.FrameDecoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert [(h, bytes(p)) for h, p, _ in got] == MESSAGES


def test_decoder_fed_byte_by_byte():
    stream = b"".join(wire.encode(h, p) for h, p in MESSAGES[:2]) + wire.encode(*MESSAGES[3])
    decoder = wire.FrameDecoder()
    got = []
    for i in range(len(stream)):
        got.extend(decoder.feed(stream[i:i + 1]))
        if got and len(got) < 3:
            assert decoder.wanted() >= 0
    assert [(h, bytes(p)) for h, p, _ in got] == [MESSAGES[0], MESSAGES[1], MESSAGES[3]]
    assert decoder.wanted() == 0


def test_wanted_counts_the_missing_bytes():
    frame = wire.encode({"op": "x"}, b"12345")
    decoder = wire.FrameDecoder()
    assert decoder.feed(frame[:wire.HEADER_SIZE + 2]) == []
    assert decoder.wanted() == len(frame) - wire.HEADER_SIZE - 2


def test_oversized_payload_is_refused_from_the_header_alone():
    decoder = wire.FrameDecoder(max_payload=1000)
    with pytest.raises(wire.FrameError, match="payload of 1001 bytes exceeds the limit of 1000"):
        decoder.feed(header(10, 1001))  # no head, no body: the header is enough


def test_no_payload_allowed_means_none():
    decoder = wire.FrameDecoder(max_payload=0)
    decoder.feed(wire.encode({"op": "auth"}))
    with pytest.raises(wire.FrameError, match="exceeds the limit of 0"):
        decoder.feed(header(10, 1))


@pytest.mark.parametrize("head_len", [0, wire.MAX_HEAD + 1, 2**32 - 1])
def test_bad_head_length_is_refused_from_the_header_alone(head_len):
    with pytest.raises(wire.FrameError, match="control head"):
        wire.FrameDecoder().feed(header(head_len, 0))


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\n", b"SSH-2.0-OpenSSH_9.2\r\n",
                                  b"\x00" * 32, bytes(range(200, 256))])
def test_bad_magic(junk):
    with pytest.raises(wire.FrameError, match="not a clusterctl frame"):
        wire.FrameDecoder().feed(junk)


def test_bad_magic_is_seen_in_the_first_header_bytes():
    decoder = wire.FrameDecoder()
    with pytest.raises(wire.FrameError, match="bad magic"):
        decoder.feed(b"XX" + header(5, 0)[2:])


@pytest.mark.parametrize("raw, why", [
    (b"not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b'["op", "call"]', "no operation"),
    (b'{"id": 1}', "no operation"),
    (b'{"op": 5}', "no operation"),
])
def test_head_that_is_not_a_json_object_with_an_op(raw, why):
    with pytest.raises(wire.FrameError, match=why):
        wire.FrameDecoder().feed(header(len(raw), 0) + raw)


def test_a_pickle_in_the_head_is_never_unpickled():
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.abort, ())

    raw = pickle.dumps(Boom())
    with pytest.raises(wire.FrameError, match="not JSON"):
        wire.FrameDecoder().feed(header(len(raw), 0) + raw)


def test_read_message_from_a_socket():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire.encode({"op": "result", "id": 3, "ok": True}, b"data"))
        head, payload = wire.read_message(b)
        assert head == {"op": "result", "id": 3, "ok": True} and payload == b"data"
        a.sendall(header(10, 5000))
        with pytest.raises(wire.FrameError, match="exceeds the limit"):
            wire.read_message(b, max_payload=4999)
        a.close()
        with pytest.raises(EOFError):
            wire.read_message(b)


@pytest.mark.parametrize("request_id", [0, 7, 10, 2**63 - 1, "abc", None])
def test_the_ok_result_shortcut_is_exactly_json(request_id):
    frame = wire.encode_ok_result(request_id, b"value")
    assert frame == wire.encode({"op": "result", "id": request_id, "ok": True}, b"value")
    [(head, payload, _)] = wire.FrameDecoder().feed(frame)
    assert head == {"op": "result", "id": request_id, "ok": True} and bytes(payload) == b"value"


@pytest.mark.parametrize("raw", [b'{"op":"result","id":007,"ok":true}',
                                 b'{"op":"result","id":,"ok":true}',
                                 b'{"op":"result","id":1 2,"ok":true}'])
def test_the_ok_result_shortcut_accepts_no_more_than_json(raw):
    with pytest.raises(wire.FrameError, match="not JSON"):
        wire.decode_head(raw)


@pytest.mark.parametrize("key", ["pmap-0123abcd", "k", "a.b_c-d", "x" * 64, "x" * 65, 'q"uote',
                                 "sp ace", "\u00e9", ""])
@pytest.mark.parametrize("request_id", [0, 9, 10**18, -1, "7", None])
def test_the_map_request_shortcut_is_exactly_json(key, request_id):
    head = {"op": "map", "fk": key, "id": request_id}
    frame = wire.encode(head, b"items")
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode()
    assert frame == wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, len(text), 5) + text + b"items"
    [(decoded, payload, _)] = wire.FrameDecoder().feed(frame)
    assert decoded == head and bytes(payload) == b"items"


@pytest.mark.parametrize("key", ["pmap-0123abcd", "k", "x" * 65, 'q"uote', ""])
@pytest.mark.parametrize("at", [0, 17, 10**18, -1, True, "3", None])
@pytest.mark.parametrize("request_id", [0, 9, -1, "7"])
def test_the_map_request_shortcut_with_its_first_item_is_exactly_json(key, at, request_id):
    head = {"op": "map", "fk": key, "at": at, "id": request_id}
    frame = wire.encode(head, b"items")
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode()
    assert frame == wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, len(text), 5) + text + b"items"
    [(decoded, payload, _)] = wire.FrameDecoder().feed(frame)
    assert decoded == head and list(decoded) == list(head) and bytes(payload) == b"items"


def test_the_map_request_shortcut_keeps_other_key_orders_json():
    head = {"op": "map", "id": 3, "fk": "k"}
    assert wire.encode(head) == wire.encode_parts(head)[0]
    assert json.loads(wire.encode(head)[wire.HEADER_SIZE:]) == head
    assert list(wire.decode_head(wire.encode(head)[wire.HEADER_SIZE:])) == ["op", "id", "fk"]


@pytest.mark.parametrize("raw", [b'{"op":"map","fk":"k","id":01}',
                                 b'{"op":"map","fk":"k","id":}',
                                 b'{"op":"map","fk":"k","id":1,}',
                                 b'{"op":"map","fk":"k","at":01,"id":1}',
                                 b'{"op":"map","fk":"k","at":,"id":1}',
                                 b'{"op":"map","fk":"k","at":1,"id":1,}',
                                 b'{"op":"map","fk":"k","at":1,"id":}'])
def test_the_map_request_shortcut_accepts_no_more_than_json(raw):
    with pytest.raises(wire.FrameError, match="not JSON"):
        wire.decode_head(raw)


def test_head_is_plain_json():
    frame = wire.encode({"op": "ping", "id": 1})
    head_len, payload_len = wire.check_header(frame[:wire.HEADER_SIZE], 0)
    assert payload_len == 0
    assert json.loads(frame[wire.HEADER_SIZE:wire.HEADER_SIZE + head_len]) == {"op": "ping", "id": 1}


# -- the handshake ---------------------------------------------------------------------

def test_client_mac_verifies_only_with_the_same_cookie():
    node_nonce, client_nonce = wire.new_nonce(), wire.new_nonce()
    mac = wire.client_mac(COOKIE, node_nonce, client_nonce)
    assert wire.macs_equal(mac, wire.client_mac(COOKIE, node_nonce, client_nonce))
    other = os.urandom(32)
    assert not wire.macs_equal(mac, wire.client_mac(other, node_nonce, client_nonce))
    # bound to both nonces
    assert not wire.macs_equal(mac, wire.client_mac(COOKIE, wire.new_nonce(), client_nonce))
    assert not wire.macs_equal(mac, wire.client_mac(COOKIE, node_nonce, wire.new_nonce()))


def test_node_mac_differs_from_client_mac():
    """A node cannot answer by echoing the client's own proof back."""
    node_nonce, client_nonce = wire.new_nonce(), wire.new_nonce()
    node = wire.node_mac(COOKIE, node_nonce, client_nonce)
    assert wire.macs_equal(node, wire.node_mac(COOKIE, node_nonce, client_nonce))
    assert not wire.macs_equal(node, wire.client_mac(COOKIE, node_nonce, client_nonce))
    assert not wire.macs_equal(node, wire.node_mac(os.urandom(32), node_nonce, client_nonce))


@pytest.mark.parametrize("bad", [None, 5, b"bytes", ["list"], ""])
def test_macs_equal_rejects_non_strings(bad):
    assert not wire.macs_equal(bad, wire.client_mac(COOKIE, "a", "b"))


def test_nonces_are_fresh_and_fingerprints_one_way():
    assert len({wire.new_nonce() for _ in range(100)}) == 100
    fp = wire.cookie_fingerprint(COOKIE)
    assert len(fp) == 12 and COOKIE.hex()[:12] != fp
    assert fp == wire.cookie_fingerprint(COOKIE) != wire.cookie_fingerprint(os.urandom(32))


# -- what a head may hold ----------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"op":"x","a":' + b"[" * 40 + b"]" * 40 + b"}",
                                 b'{"op":"x","a":' + b'{"b":' * 40 + b"1" + b"}" * 41])
def test_a_head_nested_too_deeply_is_a_frame_error(raw):
    with pytest.raises(wire.FrameError, match="nested too deeply"):
        wire.decode_head(raw)


def test_a_head_nested_within_the_limit_is_taken():
    depth = wire.MAX_DEPTH - 1
    raw = b'{"op":"x","a":' + b"[" * depth + b"]" * depth + b"}"
    assert wire.decode_head(raw)["op"] == "x"


@pytest.mark.parametrize("raw", [b'{"op":"x","nonce":"\\ud800"}', b'{"op":"\\udc00"}',
                                 b'{"op":"x","\\ud800":1}', b'{"op":"x","a":[["\\udfff"]]}'])
def test_a_lone_surrogate_in_a_head_is_a_frame_error(raw):
    with pytest.raises(wire.FrameError, match="lone surrogate"):
        wire.decode_head(raw)


def test_a_surrogate_pair_escape_is_text():
    assert wire.decode_head(b'{"op":"x","s":"\\ud83d\\ude00"}')["s"] == "\U0001F600"


def test_text_goes_out_as_utf8_and_a_lone_surrogate_as_a_question_mark():
    frame = wire.encode({"op": "x", "s": "\u00e9\ud800"})
    assert frame[wire.HEADER_SIZE:] == '{"op":"x","s":"\u00e9?"}'.encode()
    assert wire.decode_head(frame[wire.HEADER_SIZE:])["s"] == "\u00e9?"


@pytest.mark.parametrize("bad", ["\ud800", "\u00e9" * 64, "0" * 63 + "\ud800"])
def test_macs_equal_takes_any_string(bad):
    assert not wire.macs_equal(bad, "0" * 64)


@pytest.mark.parametrize("head, problem", [
    ({"op": "call", "id": 1}, None),
    ({"op": "call", "id": 1, "extra": [[]]}, None),
    ({"op": "call"}, "field 'id' is missing"),
    ({"op": "call", "id": True}, "field 'id' must be"),
    ({"op": "call", "id": 2**63}, "field 'id' must be"),
    ({"op": "map", "id": 1, "fk": ""}, "field 'fk' must be"),
    ({"op": "ping", "t": float("nan")}, "field 't' must be"),
    ({"op": "ping", "t": 10**400}, "field 't' must be"),
    ({"op": "defn", "key": "k" * 257}, "field 'key' must be"),
    ({"op": "cancel", "id": None}, "field 'id' must be"),
])
def test_the_table_of_what_a_node_takes(head, problem):
    from clusterctl.node import ops

    got = ops.check(head, ops.NODE_TAKES)
    assert got is None if problem is None else problem in got


@pytest.mark.parametrize("head, problem", [
    ({"op": "auth", "nonce": "ab", "mac": "cd"}, None),
    ({"op": "auth", "nonce": "AB", "mac": "cd"}, "field 'nonce'"),
    ({"op": "auth", "nonce": "ab", "mac": "cd", "heartbeat": -1}, "field 'heartbeat'"),
    ({"op": "auth", "nonce": "ab", "mac": "cd", "heartbeat": 10**400}, "field 'heartbeat'"),
    ({"op": "auth", "nonce": "ab"}, "field 'mac' is missing"),
])
def test_the_table_of_the_handshake(head, problem):
    from clusterctl.node import ops

    got = ops.check(head, ops.HANDSHAKE)
    assert got is None if problem is None else problem in got
