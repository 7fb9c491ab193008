"""A large argument coming in to a real local node: the node's one loop goes on answering
another connection's pings while the frame comes in, and it gathers the frame without
copying it whole (a 1 GiB argument once held a node's loop for 3.5 s on that copy).

The copy is looked for in the node's memory, not in time: copying the frame whole would
hold it twice at once, which the node's peak resident size shows."""

from __future__ import annotations

import pickle
import threading

import pytest

from clusterctl.node import wire

from rawclient import handshake, raw_socket

SIZE = 256 << 20


def peak_resident_bytes(pid: int) -> int:
    """The most memory process ``pid`` has held at once (Linux's VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def ping(sock, number: int) -> None:
    sock.sendall(wire.encode({"op": "ping", "id": number}))
    pong, _ = wire.read_message(sock)
    assert pong["op"] == "pong" and pong["id"] == number


def send_all(sock, *parts: bytes) -> None:
    for part in parts:
        sock.sendall(part)


@pytest.mark.slow
def test_a_node_answers_pings_while_a_large_argument_comes_in(local_cluster, env):
    [info] = local_cluster.world(["n1"])
    assert info.ok
    cookie = local_cluster.settings.cookie
    prefix, payload = wire.encode_parts({"op": "call", "id": 1, "mod": "builtins", "fun": "len"},
                                        pickle.dumps((None, (bytes(SIZE),), {}), protocol=5))
    with raw_socket(env, timeout=120) as big, raw_socket(env) as pinger:
        assert handshake(big, cookie)["op"] == "welcome"
        assert handshake(pinger, cookie)["op"] == "welcome"
        peak_before = peak_resident_bytes(info.pid)
        sender = threading.Thread(target=send_all, args=(big, prefix, payload), daemon=True)
        sender.start()
        try:
            answered_while_sending = 0
            while sender.is_alive():  # the node reads the frame as the send goes on
                ping(pinger, answered_while_sending + 1)
                answered_while_sending += sender.is_alive()
        finally:
            sender.join(120)
        result, value = wire.read_message(big)
        assert result["ok"] is True and pickle.loads(value) == SIZE
        ping(pinger, 0)
    assert answered_while_sending > 0
    grown = peak_resident_bytes(info.pid) - peak_before
    assert grown < 1.5 * SIZE, "the node held %.2f times the frame at once" % (grown / SIZE)
