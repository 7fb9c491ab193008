"""The frame decoder taking in a large frame in small pieces, as a node reads one: the
work must be linear in the bytes fed, with no copy of the whole frame (when it completes,
or whenever its buffer grows), since a node's one loop does that work between serving
its other connections (a 1 GiB argument once held a node's loop for 3.5 s).

The work is counted, not timed: every copy the decoder makes allocates, so the memory it
allocates over all the pieces (as tracemalloc sees it) bounds the bytes it copied."""

from __future__ import annotations

import tracemalloc

import pytest

from clusterctl.node import wire

PIECE = 64 << 10  # what a node reads at a time when the frame is new to it


def pieces_of(data: bytes, size: int = PIECE) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def feed_counting(decoder: wire.FrameDecoder, pieces: list[bytes]) -> tuple[list, int]:
    """What the decoder gives for ``pieces`` fed one at a time, and the bytes it allocated
    doing so: for each feed, the peak of its allocations over what was held before it."""
    out = []
    allocated = 0
    tracemalloc.start()
    try:
        for piece in pieces:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            out.extend(decoder.feed(piece))
            allocated += tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return out, allocated


@pytest.mark.parametrize("megabytes", [16, 64])
def test_a_large_frame_in_small_pieces_costs_linear_work(megabytes):
    payload = bytes(range(256)) * (megabytes << 12)
    frame = wire.encode({"op": "call", "id": 1, "mod": "builtins", "fun": "len"}, payload)
    [(head, got, raw)], allocated = feed_counting(wire.FrameDecoder(), pieces_of(frame))
    assert head == {"op": "call", "id": 1, "mod": "builtins", "fun": "len"}
    assert got == payload and raw == frame
    # gathering the frame copies it once (its buffer grows in place: slack of an eighth);
    # a second copy of the whole frame would make this twice the frame
    assert allocated < 1.25 * len(frame), "the decoder allocated %.2f times the frame" % (
        allocated / len(frame))


def test_frames_before_and_after_a_large_one_in_the_same_pieces():
    small = [wire.encode({"op": "ping", "id": i}, b"x" * i) for i in range(1, 4)]
    large = wire.encode({"op": "call", "id": 9}, bytes(range(256)) * 12289)  # past 3 MiB
    stream = small[0] + small[1] + large + small[2] + small[0]
    for size in (PIECE, PIECE + 1, 1 << 20, 5, len(stream)):
        decoder = wire.FrameDecoder()
        got = []
        for piece in pieces_of(stream, size):
            got.extend(decoder.feed(piece))
        assert [bytes(raw) for _, _, raw in got] == [small[0], small[1], large, small[2], small[0]]
        assert [bytes(payload) for _, payload, _ in got][2] == bytes(range(256)) * 12289
        assert decoder.idle() and decoder.wanted() == 0


def test_a_large_frame_can_be_forwarded_as_it_came():
    """What a node or the hub does with a frame's raw bytes: send it on as it is, or
    behind a prefix of its own."""
    frame = wire.encode({"op": "call", "id": 3}, bytes(3 << 20))
    decoder = wire.FrameDecoder()
    [(_, payload, raw)] = [m for piece in pieces_of(frame) for m in decoder.feed(piece)]
    assert len(raw) == len(frame) and len(payload) == 3 << 20
    assert raw + b"" == frame and b"prefix" + raw == b"prefix" + frame
    assert wire.frame_payload(raw) == payload
    assert wire.encode({"op": "relay"}, raw)[-len(frame):] == frame


def test_the_limits_hold_before_a_large_frame_is_gathered():
    decoder = wire.FrameDecoder(max_payload=8 << 20)
    header = wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, 10, (8 << 20) + 1)
    decoder.feed(header[:5])
    with pytest.raises(wire.FrameError, match="exceeds the limit"):
        decoder.feed(header[5:])
