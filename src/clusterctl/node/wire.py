"""The wire protocol, shared by the controller and the node: framing and the handshake.

Ships to hosts, so it imports only the standard library. See docs/how-it-works.md,
sections "Frames" and "The handshake".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct

PROTOCOL_VERSION = 2  # the protocol this code speaks best (2: a restricted host is given a key, not the cookie)
OLDEST_PROTOCOL = 2  # the oldest it still speaks: an installed (restricted) agent in between works
MAGIC = b"CC"
KIND_MESSAGE = 1
HEADER = struct.Struct("!2sBxII")
HEADER_SIZE = HEADER.size
MAX_HEAD = 1 << 20  # a control head is small; anything bigger is not ours
MAX_DEPTH = 32  # a control head is flat; one nested deeper is not ours
DEFAULT_MAX_PAYLOAD = 1 << 30  # one pickled payload (a task's arguments or result)
LARGE_FRAME = 1 << 20  # a frame this big gathered over several reads is handed out, not copied
HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE = 1800.0  # seconds a node with no connection and no task waits, then exits
COOKIE_BYTES = 32


class FrameError(Exception):
    """The byte stream is not a valid clusterctl frame (garbage, oversized, truncated)."""


# one encoder and decoder for every head: json.dumps with options builds a new one per call.
# Text goes out as UTF-8 (not as \u escapes), so a head that arrives with a \u escape is
# rare and can be checked closely; a lone surrogate, which is not text, goes out as "?".
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode_json = json.JSONDecoder().decode
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


# The two most common heads, a pmap request ``{"op": "map", "fk": KEY, "id": N}`` (or
# with its first item, ``{"op": "map", "fk": KEY, "at": A, "id": N}``) and a successful
# result ``{"op": "result", "id": N, "ok": true}``, are formatted and recognised without
# the JSON machinery. The bytes are exactly what JSON makes of them, and anything that
# is not exactly that form goes through JSON.
_OK_PREFIX = b'{"op":"result","id":'
_OK_SUFFIX = b',"ok":true}'
_MAP_PREFIX = b'{"op":"map","fk":"'
_MAP_ID = b'","id":'
_MAP_AT = b'","at":'
_MAP_AT_ID = b',"id":'
_MAP_KEYS = ["op", "fk", "id"]
_MAP_AT_KEYS = ["op", "fk", "at", "id"]
_simple_key = re.compile("[A-Za-z0-9_.-]{1,64}").fullmatch  # JSON writes these as they are
_simple_key_bytes = re.compile(b"[A-Za-z0-9_.-]{1,64}").fullmatch


_map_prefixes: dict[str, bytes] = {}  # function key -> the head's bytes up to its end


def _head_bytes(head: dict) -> bytes:
    if 3 <= len(head) <= 4 and head.get("op") == "map":
        key, request_id = head.get("fk"), head.get("id")
        if type(request_id) is int and request_id >= 0:
            keys = list(head)
            at = head.get("at")
            if keys == _MAP_KEYS or keys == _MAP_AT_KEYS and type(at) is int and at >= 0:
                prefix = _map_prefixes.get(key)  # (a key that is not a str is never in it)
                if prefix is None and type(key) is str and _simple_key(key):
                    if len(_map_prefixes) > 1024:
                        _map_prefixes.clear()
                    prefix = _map_prefixes[key] = _MAP_PREFIX + key.encode()
                if prefix is not None:
                    if at is None:
                        return b"%s%s%d}" % (prefix, _MAP_ID, request_id)
                    return b"%s%s%d%s%d}" % (prefix, _MAP_AT, at, _MAP_AT_ID, request_id)
    return _encode_json(head).encode("utf-8", "replace")


def encode(head: dict, payload: bytes = b"") -> bytes:
    """One frame: the header, the JSON head and the payload (if any)."""
    head_bytes = _head_bytes(head)
    return _pack_header(MAGIC, KIND_MESSAGE, len(head_bytes), len(payload)) + head_bytes + payload


def encode_parts(head: dict, payload: bytes = b"") -> tuple[bytes, bytes]:
    """Header plus head, and the payload apart: saves copying a large payload."""
    head_bytes = _head_bytes(head)
    return _pack_header(MAGIC, KIND_MESSAGE, len(head_bytes), len(payload)) + head_bytes, payload


def encode_ok_result(request_id, payload: bytes) -> bytes:
    """The frame of a successful result: ``{"op": "result", "id": ID, "ok": true}``."""
    if type(request_id) is not int:
        return encode({"op": "result", "id": request_id, "ok": True}, payload)
    head = b'%s%d%s' % (_OK_PREFIX, request_id, _OK_SUFFIX)
    return _pack_header(MAGIC, KIND_MESSAGE, len(head), len(payload)) + head + payload


def frame_payload(raw: bytes) -> memoryview:
    """The payload of a whole frame (the header says where its head ends)."""
    head_len, _ = check_header(raw[:HEADER_SIZE], 1 << 62)
    return memoryview(raw)[HEADER_SIZE + head_len:]


def frame_head(raw) -> dict:
    """The head of a whole frame, decoded (FrameError if it is not one)."""
    head_len, _ = check_header(raw[:HEADER_SIZE], 1 << 62)
    return decode_head(raw[HEADER_SIZE:HEADER_SIZE + head_len])


def check_header(header, max_payload: int, offset: int = 0) -> tuple[int, int]:
    """Validate the frame header at ``offset``; return (head length, payload length)."""
    magic, kind, head_len, payload_len = _unpack_header(header, offset)
    if magic != MAGIC or kind != KIND_MESSAGE:
        raise FrameError("not a clusterctl frame (bad magic %r)"
                         % (bytes(header[offset:offset + 4]),))
    if head_len == 0 or head_len > MAX_HEAD:
        raise FrameError("control head of %d bytes (limit %d)" % (head_len, MAX_HEAD))
    if payload_len > max_payload:
        raise FrameError("frame payload of %d bytes exceeds the limit of %d bytes"
                         % (payload_len, max_payload))
    return head_len, payload_len


def _json_int(digits: bytes) -> bool:
    """``digits`` is a non-negative integer as JSON writes it (no sign, no leading zero)."""
    return 0 < len(digits) < 20 and digits.isdigit() and (digits[0] != 48 or len(digits) == 1)


def _check_value(value) -> None:
    """Raise FrameError if ``value`` nests deeper than ``MAX_DEPTH`` or holds a string that
    is not text (a lone surrogate, which JSON's \\u escapes can make)."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str:
            try:
                item.encode()
            except UnicodeEncodeError:
                raise FrameError("control head holds a string that is not text (a lone surrogate)") from None
        elif kind is dict or kind is list:
            if depth > MAX_DEPTH:
                raise FrameError("control head is nested too deeply (limit %d)" % MAX_DEPTH)
            if kind is dict:
                for key, member in item.items():
                    push((key, depth))
                    push((member, depth + 1))
            else:
                for member in item:
                    push((member, depth + 1))


_SEND_PREFIX = b'{"op":"send","to":'
_send_heads: dict[bytes, dict] = {}  # a message's head -> its parse (one per pair of processes)


def decode_head(raw) -> dict:
    """Parse a control head; anything but a UTF-8 JSON object with a string ``op`` is an
    error, and so is one nested deeper than ``MAX_DEPTH`` or holding a lone surrogate.
    (A spawned process's message head, the same for every message between two processes,
    is parsed once: the dict it gives is shared, and is only read.)"""
    if type(raw) is not bytes:
        raw = bytes(raw)
    if raw[:18] == _SEND_PREFIX:
        head = _send_heads.get(raw)
        if head is not None:
            return head
        head = _decode_checked(raw)
        if "ref" not in head and len(raw) < 512:
            if len(_send_heads) > 4096:
                _send_heads.clear()
            _send_heads[raw] = head
        return head
    if raw[:20] == _OK_PREFIX and raw[-11:] == _OK_SUFFIX:
        digits = raw[20:-11]
        if _json_int(digits):
            return {"op": "result", "id": int(digits), "ok": True}
    elif raw[:18] == _MAP_PREFIX and raw[-1:] == b"}":
        end = raw.find(b'"', 18)
        key = raw[18:end]
        if end > 0 and raw[end:end + 7] == _MAP_ID and _simple_key_bytes(key):
            digits = raw[end + 7:-1]
            if _json_int(digits):
                return {"op": "map", "fk": key.decode(), "id": int(digits)}
        elif end > 0 and raw[end:end + 7] == _MAP_AT and _simple_key_bytes(key):
            comma = raw.find(b",", end + 7)
            if comma > 0 and raw[comma:comma + 6] == _MAP_AT_ID:
                at, digits = raw[end + 7:comma], raw[comma + 6:-1]
                if _json_int(at) and _json_int(digits):
                    return {"op": "map", "fk": key.decode(), "at": int(at), "id": int(digits)}
    return _decode_checked(raw)


def _decode_checked(raw: bytes) -> dict:
    try:
        head = _decode_json(str(raw, "utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FrameError("control head is not JSON: %s" % exc) from None
    except RecursionError:
        raise FrameError("control head is nested too deeply (limit %d)" % MAX_DEPTH) from None
    # only a head with many brackets can be deep, only one with a \u escape hold a surrogate
    if b"\\u" in raw or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_value(head)
    if type(head) is not dict or type(head.get("op")) is not str:
        raise FrameError("control head has no operation")
    return head


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, take whole messages out.

    Each message comes out as ``(head, payload, raw)``: the parsed head, the payload as
    a zero-copy memoryview, and the whole frame's bytes (so a node can forward a frame
    to a worker without encoding it again). The limits are enforced as soon as a
    header is complete, before the body is waited for.

    A frame that comes in over several reads is gathered in a buffer of its own, and each
    read adds to it only what that frame still lacks. A large one (``LARGE_FRAME``) is
    then handed out as that buffer, a bytearray, instead of being copied once more: so
    the work of every ``feed`` is in proportion to what it is fed, however large the
    frame, and a node's loop taking in a 1 GiB argument still serves its other
    connections between two reads.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()  # the start of a frame not whole yet (nothing beyond it)
        self._need: tuple[int, int] | None = None  # its (head, payload) lengths, once known

    def feed(self, data: bytes) -> list[tuple[dict, memoryview, bytes | bytearray]]:
        out: list = []
        if self._buf:
            data = self._complete(data, out)
        if data:
            self._split(data, out)
        return out

    def _complete(self, data, out: list) -> memoryview:
        """Add to the frame in progress what it lacks from ``data``, and take it out if
        it is whole; the rest of ``data``, where the next frame starts."""
        buf = self._buf
        view = memoryview(data)
        if self._need is None:  # its header is not all in yet
            taken = HEADER_SIZE - len(buf)
            buf += view[:taken]
            view = view[taken:]
            if len(buf) < HEADER_SIZE:
                return view
            self._need = check_header(buf, self.max_payload)
        head_len, payload_len = self._need
        taken = HEADER_SIZE + head_len + payload_len - len(buf)
        buf += view[:taken]
        if len(buf) == HEADER_SIZE + head_len + payload_len:
            self._buf, self._need = bytearray(), None
            out.append(_message(buf if len(buf) >= LARGE_FRAME else bytes(buf), head_len))
        return view[taken:]

    def _split(self, data, out: list) -> None:
        """Take out the frames that are whole in ``data`` (where a frame starts), and keep
        the start of the one after them."""
        view = memoryview(data)
        pos, size = 0, len(data)
        while size - pos >= HEADER_SIZE:
            head_len, payload_len = need = check_header(view, self.max_payload, pos)
            end = pos + HEADER_SIZE + head_len + payload_len
            if end > size:
                self._need = need
                break
            # a frame that is the whole chunk is taken as it is, without a copy
            raw = data if end - pos == size and type(data) is bytes else bytes(view[pos:end])
            out.append(_message(raw, head_len))
            pos = end
        self._buf += view[pos:]

    def idle(self) -> bool:
        """Nothing of a frame is buffered: the next byte starts a new frame."""
        return not self._buf

    def wanted(self) -> int:
        """Bytes still missing for the frame in progress (0 when unknown)."""
        if self._need is None:
            return 0
        return HEADER_SIZE + self._need[0] + self._need[1] - len(self._buf)


def _message(raw, head_len: int) -> tuple[dict, memoryview, bytes | bytearray]:
    """A whole frame as ``(head, payload, raw)``; the payload is read-only, as a view of
    bytes is, also when ``raw`` is the bytearray a large frame was gathered in."""
    start = HEADER_SIZE + head_len
    view = memoryview(raw) if type(raw) is bytes else memoryview(raw).toreadonly()
    return decode_head(raw[HEADER_SIZE:start]), view[start:], raw


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

def protocol_mismatch(theirs, our_version: str) -> str:
    """Why a peer speaking protocol ``theirs`` is refused, naming both sides (a node
    says it to a controller; ``our_version`` is clusterctl's)."""
    side = "older" if type(theirs) is int and theirs < OLDEST_PROTOCOL else "newer"
    return ("protocol %s (the controller's) is %s than this node speaks (protocols %d to %d, "
            "clusterctl %s): %s" % (theirs, side, OLDEST_PROTOCOL, PROTOCOL_VERSION, our_version,
                                   "upgrade clusterctl on the controller" if side == "older"
                                   else "ask the host's owner to upgrade the clusterctl installed there"))

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
    """``a`` is the MAC ``b`` (a peer's ``a`` may be anything, even a string that is not text)."""
    return type(a) is str and a.isascii() and hmac.compare_digest(a, b)


def cookie_fingerprint(cookie: bytes) -> str:
    """A short, one-way name for a cookie (safe to log or show)."""
    return hashlib.sha256(b"clusterctl-cookie:" + cookie).hexdigest()[:12]
