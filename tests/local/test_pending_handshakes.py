"""Connections that never authenticate must not lock a client out of a node: past the
limit on connections in their handshake, a new one makes the oldest of them give way."""

from __future__ import annotations

import time

import pytest

from clusterctl.node import wire
from clusterctl.node.daemon import sessions

from helpers import wait_for
from rawclient import handshake, raw_socket, until_closed

pytestmark = pytest.mark.local_only


def pong_pid(env, cookie: bytes) -> int:
    with raw_socket(env) as sock:
        assert handshake(sock, cookie)["op"] == "welcome"
        sock.sendall(wire.encode({"op": "ping", "id": 1}))
        pong, _ = wire.read_message(sock)
        return pong["pid"]


def test_silent_connections_do_not_lock_a_client_out(local_cluster, env):
    [info] = local_cluster.world(["n1"])
    assert info.ok
    cookie = local_cluster.settings.cookie
    silent = []
    try:
        for _ in range(sessions.MAX_PENDING_HANDSHAKES):
            sock = raw_socket(env)
            silent.append(sock)
            assert wire.read_message(sock, max_payload=0)[0]["op"] == "hello"
        t0 = time.monotonic()
        assert pong_pid(env, cookie) == info.pid  # gets in at once, not after the timeout
        assert time.monotonic() - t0 < 3
        oldest = silent[0]
        answer, _ = wire.read_message(oldest, max_payload=0)
        assert answer["op"] == "refused" and "waiting for the handshake" in answer["reason"]
        assert until_closed(oldest) == b""
        for sock in silent[1:10]:  # only the oldest gave way (one new connection)
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        more = [raw_socket(env) for _ in range(3)]  # the silent renew themselves ...
        silent.extend(more)
        for sock in more:
            assert wire.read_message(sock, max_payload=0)[0]["op"] == "hello"
        assert pong_pid(env, cookie) == info.pid  # ... and a client still gets in
        wait_for(lambda: "gave way" in env.node_log("n1"), timeout=5, message="the eviction logged")
    finally:
        for sock in silent:
            sock.close()
