"""The controller's half of the handshake: read the node's hello, prove the cookie, check
the node's proof.

See docs/how-it-works.md, section "The handshake".
"""

from __future__ import annotations

import socket

from clusterctl import errors
from clusterctl.node import ops, wire
from clusterctl.session.outcomes import stream_failure


def read_hello(stream, node: str, timeout: float) -> dict:
    """The node's opening message; nothing is sent before it is read. Its fields are
    checked (``ops.CONTROLLER_TAKES``) before anything uses them."""
    stream.settimeout(timeout)
    try:
        head, _ = wire.read_message(stream, max_payload=0)
    except (EOFError, OSError, socket.timeout) as exc:
        raise errors.HandshakeError(node, f"no greeting from the node ({stream_failure(exc)})")
    except wire.FrameError as exc:
        raise errors.ProtocolError(node, f"the peer does not speak clusterctl's protocol ({exc})")
    op = head["op"]
    if op == "refused":
        raise errors.HandshakeError(node, f"the node refused us: {_refusal(head)}")
    if op != "hello":
        raise errors.ProtocolError(node, f"expected a greeting, got {op[:64]!r}")
    problem = ops.check(head, ops.CONTROLLER_TAKES)
    if problem is not None:
        raise errors.ProtocolError(node, f"a malformed greeting: {problem}")
    return head


def authenticate(stream, node: str, hello: dict, *, cookie: bytes, heartbeat_timeout: float,
                 timeout: float, watch: bool = False) -> None:
    """Prove we hold the cookie and check that the node does too. ``heartbeat_timeout``
    goes with our proof: the node gives up on us after that long without a word. A
    ``watch`` (the hub's) only pings: it does not keep the node from exiting when idle."""
    nonce = wire.new_nonce()
    node_nonce = hello.get("nonce", "")  # (checked by ``read_hello``)
    stream.settimeout(timeout)
    try:
        stream.sendall(wire.encode({
            "op": "auth", "proto": wire.PROTOCOL_VERSION, "nonce": nonce,
            "mac": wire.client_mac(cookie, node_nonce, nonce),
            "heartbeat": heartbeat_timeout, **({"watch": True} if watch else {})}))
        head, _ = wire.read_message(stream, max_payload=0)
    except (EOFError, OSError, socket.timeout) as exc:
        raise errors.HandshakeError(node, f"the node closed the handshake ({stream_failure(exc)})")
    except wire.FrameError as exc:
        raise errors.ProtocolError(node, f"a malformed answer to our proof: {exc}")
    if head["op"] == "refused":
        reason = _refusal(head)
        hint = None
        if "cookie" in reason:
            hint = ("another cluster on this account runs a node with this name: give this "
                    "host another name= in the hosts file, or share the cookie file")
        raise errors.HandshakeError(node, f"the node refused us: {reason}", hint=hint)
    if head.get("op") != "welcome" or not wire.macs_equal(
            head.get("mac"), wire.node_mac(cookie, node_nonce, nonce)):
        raise errors.HandshakeError(node, "the node could not prove it holds our cookie")


def _refusal(head: dict) -> str:
    """The reason a refusal gives, if it is text we can show."""
    reason = head.get("reason")
    return reason if ops.TEXT.test(reason) and reason else "refused"
