"""A reply callback that raises, on a real connection to a real node, with Python's
own ``sys.unraisablehook`` in place (as outside the tests: pytest puts in a hook of its
own, which takes what the default one refuses). The failure is told on stderr, once,
naming the callback, and the connection's reader goes on serving callbacks. The reader is
the controller's, so the test takes ``cluster``: it runs over local nodes and over SSH."""

from __future__ import annotations

import queue
import sys


def test_a_raising_callback_leaves_the_connection_reading(cluster, capsys, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    conn = cluster.connect("n1")

    def broken_callback(head, payload, error):
        raise ValueError("bug in a callback")

    conn.request({"op": "ping"}, callback=broken_callback)
    replies: queue.Queue = queue.Queue()
    for _ in range(3):  # read by the same thread as the broken one's, after it
        conn.request({"op": "ping"}, callback=lambda head, payload, error: replies.put(error or head["op"]))
    assert [replies.get(timeout=10) for _ in range(3)] == ["pong"] * 3
    assert cluster.rpc("n1", "operator.add", 2, 3) == 5
    assert conn.lost is None
    told = capsys.readouterr().err
    assert told.count("ValueError: bug in a callback") == 1
    assert "broken_callback" in told and "Traceback (most recent call last)" in told
