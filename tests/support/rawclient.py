"""A hand-made client for a node's socket: raw frames and the handshake done by hand, for
tests that send what the real controller never would."""

from __future__ import annotations

import socket

from clusterctl.node import wire


def raw_socket(env, node: str = "n1", timeout: float = 10) -> socket.socket:
    """A plain connection to the test's node ``node``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(env.run_dir / f"{node}.sock"))
    except BaseException:
        sock.close()
        raise
    return sock


def frame(head: bytes, payload: bytes = b"") -> bytes:
    """A frame around a head given as raw bytes (which ``wire.encode`` would not make)."""
    return wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, len(head), len(payload)) + head + payload


def until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the peer still sends, up to the moment it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def handshake(sock: socket.socket, cookie: bytes, heartbeat: float | None = None,
              watch: bool = False) -> dict:
    """Authenticate as a client holding ``cookie`` (which the node ends when it is silent
    for ``heartbeat`` seconds, if given; a ``watch``, as a hub's); the node's answer (a
    welcome is checked to carry the node's proof of the same cookie)."""
    hello, _ = wire.read_message(sock, max_payload=0)
    assert hello["op"] == "hello"
    nonce = wire.new_nonce()
    auth = {"op": "auth", "proto": wire.PROTOCOL_VERSION, "nonce": nonce,
            "mac": wire.client_mac(cookie, hello["nonce"], nonce)}
    if heartbeat is not None:
        auth["heartbeat"] = heartbeat
    if watch:
        auth["watch"] = True
    sock.sendall(wire.encode(auth))
    answer, _ = wire.read_message(sock, max_payload=0)
    if answer["op"] == "welcome":
        assert wire.macs_equal(answer["mac"], wire.node_mac(cookie, hello["nonce"], nonce))
    return answer
