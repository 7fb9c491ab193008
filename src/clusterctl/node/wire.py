"""The wire protocol, shared by the controller and the node: framing and the handshake.

It ships to remote hosts with the agent, so it imports only the standard library.

Every frame is a fixed 12-byte header, a JSON control head and an optional payload::

    b"CC" | kind (1 byte) | 0 | head length (4 bytes) | payload length (4 bytes)

The head is a closed, non-executable JSON object that names the operation (``op``).
The payload, when present, is the *pickle envelope*: user functions, arguments and
results as cloudpickle bytes. It is only ever unpickled by a worker or by the
controller after the handshake succeeded, never by the framing code. Both lengths
are checked against limits before a single byte of the body is read, so an
oversized or garbage frame costs the receiver nothing but closing the connection.

The handshake proves that both sides hold the cluster cookie without sending it:
the node opens with ``hello`` (versions, pid, slots and a random nonce), the client
answers ``auth`` with an HMAC over both nonces, the node answers ``welcome`` with its
own HMAC (so the client knows it reached a node of its cluster) or ``refused``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct

PROTOCOL_VERSION = 1
MAGIC = b"CC"
KIND_MESSAGE = 1
HEADER = struct.Struct("!2sBxII")
HEADER_SIZE = HEADER.size
MAX_HEAD = 1 << 20  # a control head is small; anything bigger is not ours
DEFAULT_MAX_PAYLOAD = 1 << 30  # one pickled payload (a task's arguments or result)
HANDSHAKE_TIMEOUT = 10.0
COOKIE_BYTES = 32


class FrameError(Exception):
    """The byte stream is not a valid clusterctl frame (garbage, oversized, truncated)."""


def encode(head: dict, payload: bytes = b"") -> bytes:
    """One frame: the header, the JSON head and the payload (if any)."""
    head_bytes = json.dumps(head, separators=(",", ":")).encode()
    return HEADER.pack(MAGIC, KIND_MESSAGE, len(head_bytes), len(payload)) + head_bytes + payload


def encode_parts(head: dict, payload: bytes = b"") -> tuple[bytes, bytes]:
    """Header plus head, and the payload apart: saves copying a large payload."""
    head_bytes = json.dumps(head, separators=(",", ":")).encode()
    return HEADER.pack(MAGIC, KIND_MESSAGE, len(head_bytes), len(payload)) + head_bytes, payload


def check_header(header: bytes, max_payload: int) -> tuple[int, int]:
    """Validate a frame header; return (head length, payload length)."""
    magic, kind, head_len, payload_len = HEADER.unpack(header)
    if magic != MAGIC or kind != KIND_MESSAGE:
        raise FrameError("not a clusterctl frame (bad magic %r)" % (bytes(header[:4]),))
    if head_len == 0 or head_len > MAX_HEAD:
        raise FrameError("control head of %d bytes (limit %d)" % (head_len, MAX_HEAD))
    if payload_len > max_payload:
        raise FrameError("frame payload of %d bytes exceeds the limit of %d bytes"
                         % (payload_len, max_payload))
    return head_len, payload_len


def decode_head(raw: bytes) -> dict:
    """Parse a control head; anything but a JSON object with a string ``op`` is an error."""
    try:
        head = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError("control head is not JSON: %s" % exc) from None
    if not isinstance(head, dict) or not isinstance(head.get("op"), str):
        raise FrameError("control head has no operation")
    return head


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, take whole messages out.

    Each message comes out as ``(head, payload, raw)``: the parsed head, the payload as
    a zero-copy memoryview, and the whole frame's bytes (so a node can forward a frame
    to a worker without encoding it again). The limits are enforced as soon as a
    header is complete, before the body is waited for.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._need: tuple[int, int] | None = None

    def feed(self, data: bytes) -> list[tuple[dict, memoryview, bytes]]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while True:
            if self._need is None:
                if len(buf) - pos < HEADER_SIZE:
                    break
                self._need = check_header(bytes(buf[pos:pos + HEADER_SIZE]), self.max_payload)
            head_len, payload_len = self._need
            end = pos + HEADER_SIZE + head_len + payload_len
            if len(buf) < end:
                break
            raw = bytes(buf[pos:end])
            head = decode_head(raw[HEADER_SIZE:HEADER_SIZE + head_len])
            out.append((head, memoryview(raw)[HEADER_SIZE + head_len:], raw))
            pos = end
            self._need = None
        if pos:
            del buf[:pos]
        return out

    def wanted(self) -> int:
        """Bytes still missing for the frame in progress (0 when unknown)."""
        if self._need is None:
            return 0
        return HEADER_SIZE + self._need[0] + self._need[1] - len(self._buf)


def recv_exact(sock, n: int) -> bytes:
    """Read exactly n bytes from a blocking socket-like object, or raise EOFError."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(sock, max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple[dict, bytes]:
    """Read one message from a blocking socket-like object."""
    head_len, payload_len = check_header(recv_exact(sock, HEADER_SIZE), max_payload)
    head = decode_head(recv_exact(sock, head_len))
    payload = recv_exact(sock, payload_len) if payload_len else b""
    return head, payload


# -- the handshake -------------------------------------------------------------------

def new_nonce() -> str:
    return os.urandom(16).hex()


def client_mac(cookie: bytes, node_nonce: str, client_nonce: str) -> str:
    """What the client proves: it knows the cookie, bound to both nonces."""
    return hmac.new(cookie, b"client:" + node_nonce.encode() + b":" + client_nonce.encode(),
                    hashlib.sha256).hexdigest()


def node_mac(cookie: bytes, node_nonce: str, client_nonce: str) -> str:
    """What the node proves back, so a client never talks to a stranger's node."""
    return hmac.new(cookie, b"node:" + client_nonce.encode() + b":" + node_nonce.encode(),
                    hashlib.sha256).hexdigest()


def macs_equal(a: object, b: str) -> bool:
    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())


def cookie_fingerprint(cookie: bytes) -> str:
    """A short, one-way name for a cookie (safe to log or show)."""
    return hashlib.sha256(b"clusterctl-cookie:" + cookie).hexdigest()[:12]
