"""A restricted node's payload bound (``sessions.PayloadLimit``): frames over it are cut
out of the stream, head kept and body dropped, however the stream is cut into reads;
the frames around them reach the decoder whole. (The node that uses it:
tests/local/test_restricted_node.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterctl.node import wire
from clusterctl.node.daemon.sessions import PayloadLimit

LIMIT = 64

frames = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 3 * LIMIT)), min_size=1, max_size=8)


def stream_of(specs) -> tuple[bytes, list]:
    """The bytes of frames ``(id, payload size)``, and what must come out of them."""
    data, expected = b"", []
    for number, (task_id, size) in enumerate(specs):
        head = {"op": "call", "id": task_id}
        payload = bytes([number % 251]) * size
        data += wire.encode(head, payload)
        expected.append((head, payload if size <= LIMIT else None, size))
    return data, expected


def through(limit: PayloadLimit, decoder: wire.FrameDecoder, data: bytes, cuts) -> list:
    out, start = [], 0
    for end in sorted(set(cuts)) + [len(data)]:
        if start < end <= len(data):
            out += limit.feed(decoder, data[start:end])
            start = end
    return [(head, bytes(payload) if payload is not None else None,
             len(payload) if payload is not None else raw) for head, payload, raw in out]


@given(frames, st.lists(st.integers(1, 2000), max_size=12))
@settings(max_examples=400, deadline=None)
def test_frames_over_the_bound_are_cut_out_however_the_reads_fall(specs, cuts):
    data, expected = stream_of(specs)
    limit, decoder = PayloadLimit(LIMIT), wire.FrameDecoder(max_payload=LIMIT)
    assert through(limit, decoder, data, cuts) == expected
    assert decoder.idle() and not limit.pending and not limit.passing and not limit.dropping


def test_byte_by_byte():
    data, expected = stream_of([(1, 10), (2, 1000), (3, 0), (4, LIMIT), (5, LIMIT + 1)])
    limit, decoder = PayloadLimit(LIMIT), wire.FrameDecoder(max_payload=LIMIT)
    assert through(limit, decoder, data, range(1, len(data))) == expected


def test_the_body_of_a_frame_over_the_bound_is_never_kept():
    limit, decoder = PayloadLimit(LIMIT), wire.FrameDecoder(max_payload=LIMIT)
    frame = wire.encode({"op": "call", "id": 7}, b"x" * 100_000)
    [(head, payload, size)] = limit.feed(decoder, frame[:50_000]) + limit.feed(decoder, frame[50_000:])
    assert head == {"op": "call", "id": 7} and payload is None and size == 100_000
    assert limit.wanted() == 0 and decoder.idle()
    limit.feed(decoder, frame[:20_000])
    assert len(limit.pending) == 0 and limit.wanted() == len(frame) - 20_000


def test_garbage_is_still_an_error():
    with pytest.raises(wire.FrameError, match="bad magic"):
        PayloadLimit(LIMIT).feed(wire.FrameDecoder(max_payload=LIMIT), b"XX" + b"\0" * 20)
