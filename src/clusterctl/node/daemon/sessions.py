"""Controller connections: accepted, greeted, authenticated, then served op by op.

See docs/how-it-works.md, "Starting the node process" and "Inside a node".
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import sys
import time
import traceback

from .. import ops, wire
from ..workers import tracing
from ..log import log
from ..loop import RECV_SIZE, RECV_SIZE_MAX, Endpoint, Loop, PipeStream

MAX_PENDING_HANDSHAKES = 64  # connections not authenticated yet; past it the oldest gives way
ACCEPT_BACKOFF = 1.0  # seconds the listener rests when no descriptor is left for a connection


class Connection(Endpoint):
    """One controller connection: its frame decoder, its handshake state, and the tasks
    and functions it sent."""

    __slots__ = ("decoder", "authed", "nonce", "opened", "last_rx", "heartbeat", "tasks",
                 "functions", "label", "fds", "watching", "recorder", "number", "limit",
                 "situation")

    def __init__(self, sock, number: int, on_readable, on_broken) -> None:
        super().__init__(sock, on_readable, on_broken)
        self.decoder = wire.FrameDecoder(max_payload=0)  # no payload before the handshake
        self.authed = False
        self.nonce = wire.new_nonce()
        self.opened = self.last_rx = time.monotonic()
        self.heartbeat = 0.0
        self.tasks: dict = {}
        self.functions: dict[str, bytes] = {}
        self.label = "connection %d" % number
        self.number = number
        self.fds: list[int] = []  # descriptors passed with the handshake (see ``splice``)
        self.watching = False  # the hub's watch: only heartbeats and pings, keeps nobody busy
        self.recorder: tracing.Recorder | None = None  # its tasks' trace, once it asked for one
        self.limit: PayloadLimit | None = None  # a restricted node's, once authenticated
        self.situation: bytes | None = None  # its ``situate`` frame: where its tasks run

    def traced(self, head: dict) -> bytes:
        """A ``trace``: start recording this connection's tasks (``start``, a ring of
        ``capacity`` events), or hand over what was recorded since the last time (and
        ``stop``)."""
        if head.get("start"):
            self.recorder = tracing.Recorder(head.get("capacity") or tracing.DEFAULT_CAPACITY)
        events, dropped = self.recorder.take() if self.recorder is not None else ([], 0)
        if head.get("stop"):
            self.recorder = None
        reply = {"op": "traced", "id": head.get("id"), "mono": time.monotonic(), "dropped": dropped}
        return wire.encode(reply, json.dumps(events).encode())


class PayloadLimit:
    """A restricted node's bound on one message's body (the policy's ``payload``), held
    without ending the connection: a frame over it is cut out of the stream before the
    decoder sees it. Its head is kept, its body read and dropped as it comes, never held;
    the message is then handed on as ``(head, None, size)``, to be refused, and the frames
    after it are read as usual. (The decoder is given the same bound: the backstop.)"""

    __slots__ = ("limit", "pending", "passing", "dropping")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = bytearray()  # the start of a frame not judged yet (header, head)
        self.passing = 0  # bytes of a frame within the bound still to go to the decoder
        self.dropping = 0  # body bytes of a frame over the bound still to drop

    def feed(self, decoder: wire.FrameDecoder, data: bytes) -> list:
        """The messages in ``data``, as ``decoder.feed`` gives them, and those over the
        bound as ``(head, None, size)``, in the order they came."""
        out: list = []
        for piece in self.split(data):
            if type(piece) is tuple:
                head, size = piece
                out.append((wire.decode_head(head), None, size))
            else:
                out += decoder.feed(piece)
        return out

    def split(self, data: bytes) -> list:
        """``data`` in pieces: bytes for the decoder, and ``(head bytes, body size)`` for
        each frame over the bound, whose body is dropped."""
        view = memoryview(data)
        pieces: list = []
        pos = run = 0  # run: where the bytes going to the decoder started
        size = len(view)
        while pos < size:
            if self.passing:
                step = min(self.passing, size - pos)
                self.passing -= step
                pos += step
                continue
            if self.dropping:
                step = min(self.dropping, size - pos)
                self.dropping -= step
                pos = run = pos + step
                continue
            if not self.pending and size - pos >= wire.HEADER_SIZE:
                head_len, payload_len = wire.check_header(view, 1 << 62, pos)
                if payload_len <= self.limit:  # the usual case: the frame goes on as it is
                    self.passing = wire.HEADER_SIZE + head_len + payload_len
                    continue
            if run < pos:
                pieces.append(view[run:pos])
            pos = run = self.gather(view, pos, pieces)
        if run < size:
            pieces.append(data if run == 0 else view[run:])
        return pieces

    def gather(self, view: memoryview, pos: int, pieces: list) -> int:
        """Take the start of a frame into ``pending`` until it can be judged: one within
        the bound goes on to the decoder, one over it leaves its head in ``pieces`` and
        its body to drop. Where the bytes not taken start."""
        pending = self.pending
        if len(pending) < wire.HEADER_SIZE:
            taken = view[pos:pos + wire.HEADER_SIZE - len(pending)]
            pending += taken
            pos += len(taken)
            if len(pending) < wire.HEADER_SIZE:
                return pos
        head_len, payload_len = wire.check_header(pending, 1 << 62)
        if payload_len <= self.limit:  # (only its header was cut between two reads)
            pieces.append(bytes(pending))
            pending.clear()
            self.passing = head_len + payload_len
            return pos
        taken = view[pos:pos + wire.HEADER_SIZE + head_len - len(pending)]
        pending += taken
        pos += len(taken)
        if len(pending) == wire.HEADER_SIZE + head_len:
            pieces.append((bytes(pending[wire.HEADER_SIZE:]), payload_len))
            pending.clear()
            self.dropping = payload_len
        return pos

    def wanted(self) -> int:
        """Bytes that may be read at once: the rest of a body being dropped."""
        return self.dropping


def input_waiting(conn: Connection) -> bool:
    """Whether ``conn`` has something to read now (or its end, which the read sees): then
    the node is the one behind (stopped, or starved of CPU, since its last read), not the
    peer silent, and the next turn reads it."""
    probe = select.poll()  # (not select.select: a busy node's descriptors pass 1024)
    probe.register(conn.fd, select.POLLIN)
    try:
        return bool(probe.poll(0))
    except OSError:
        return False


class Acceptor:
    """Takes connections off the listener. It keeps the node up under abuse: past
    ``MAX_PENDING_HANDSHAKES`` unauthenticated connections the oldest of them gives way
    to a new one (so connections that never authenticate cannot lock a client out: a
    client gets in unless that many come after it within its own handshake), and when
    descriptors run out the listener rests instead of spinning."""

    def __init__(self, loop: Loop, listener: socket.socket, stats: dict, *, conns: dict, admit,
                 close) -> None:
        self.loop = loop
        self.listener = listener
        self.endpoint = Endpoint(listener, self.accept)
        self.stats = stats
        self.conns = conns  # the node's connections, oldest first (fd -> Connection)
        self.admit = admit  # (sock) -> serve this accepted socket
        self.close = close  # (conn, reason, quiet) -> that connection ends
        self.paused = 0.0  # while the listener rests: until when (see ``resume``)
        self.failures = 0  # accepts failed in a row (logged at the first and when it ends)
        self.evicted = 0  # connections that gave way since that was last logged
        self.evicted_logged = 0.0

    def listen(self) -> None:
        self.listener.setblocking(False)
        self.loop.watch(self.endpoint)

    def accept(self, _endpoint: Endpoint) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE, ENFILE) or memory: the connection stays in the
                # backlog, and the listener would be ready again at once. It rests instead.
                self.paused = time.monotonic() + ACCEPT_BACKOFF
                self.loop.unwatch(self.endpoint)
                if not self.failures:
                    log("accept failed: %s; trying again every %g s" % (exc, ACCEPT_BACKOFF))
                self.failures += 1
                return
            if self.failures:
                log("accepting connections again (%d attempts failed)" % self.failures)
                self.failures = 0
            waiting = [c for c in self.conns.values() if not c.authed]
            if len(waiting) >= MAX_PENDING_HANDSHAKES:
                self.make_way(waiting[0], len(waiting))
            sock.setblocking(False)
            self.admit(sock)

    def resume(self, now: float) -> None:
        """Housekeeping: the listener's rest is over."""
        if self.paused and now >= self.paused:
            self.paused = 0.0
            self.loop.watch(self.endpoint)

    def make_way(self, oldest: Connection, waiting: int) -> None:
        """Too many connections wait for their handshake: the oldest of them gives way to
        the one just accepted, told why (logged at most once a second)."""
        self.stats["refused"] += 1
        self.evicted += 1
        now = time.monotonic()
        if now - self.evicted_logged >= 1.0:  # (logged before the client hears of it)
            log("%d connection(s) waiting for the handshake gave way to newer ones: %d wait"
                % (self.evicted, waiting))
            self.evicted, self.evicted_logged = 0, now
        reason = "too many connections waiting for the handshake (%d): the oldest gives way" % waiting
        self.loop.send(oldest, wire.encode({"op": "refused", "reason": reason}))
        self.loop.flush(oldest)  # (what the socket takes now: it is not waited for)
        self.close(oldest, "gave way: " + reason, True)


class Gate:
    """A restricted node's policy at its door. Each message of an authenticated
    controller passes ``Policy.refuses``; a call or map must find room under the queue's
    bound (``TaskQueue.full``); a message over the payload bound is dropped unread
    (``PayloadLimit``). What it turns down is answered at once, as refused, in one line
    naming the rule and the policy file; the connection and the node go on."""

    def __init__(self, policy, loop: Loop, queue, stats: dict, name: str, answered) -> None:
        self.policy = policy
        self.loop = loop
        self.queue = queue  # the pool's TaskQueue: a task must find room under its bound
        self.stats = stats
        self.name = name
        self.answered = frozenset(answered)  # kinds whose refusal is their answer

    def authenticated(self, conn: Connection) -> None:
        """From now on the payload bound holds on ``conn`` (the decoder's too, as a backstop)."""
        conn.decoder.max_payload = self.policy.max_payload()
        conn.limit = PayloadLimit(self.policy.max_payload())

    def refuses(self, conn: Connection, head: dict, raw) -> bool:
        """Whether ``head`` is turned down (it was answered then)."""
        reason = self.policy.refuses(head)
        if reason is None and head["op"] in ("call", "map") and self.queue.full(len(raw)):
            reason = self.policy.over_queue(self.queue.bytes, len(raw))
        if reason is None:
            return False
        self.turn_down(conn, head, reason)
        return True

    def too_large(self, conn: Connection, head: dict, size: int) -> None:
        """A message over the payload bound was dropped unread: turned down."""
        self.turn_down(conn, head, self.policy.over_payload(size, head["op"]))

    def turn_down(self, conn: Connection, head: dict, reason: str) -> None:
        """A task or a request about processes gets a refusal as its result (a definition
        has none: the call that uses it gets it)."""
        self.stats["refused"] += 1
        log("%s: refused %r: %s" % (conn.label, head["op"][:64], reason))
        task_id = head.get("id")
        if ops.REQUEST_ID.test(task_id) and head["op"] in self.answered:
            self.loop.send(conn, wire.encode(ops.error_head("refused", task_id, "Refused", reason, self.name)))


class Identity:
    """What a node says of itself in its ``hello``: its name, slots, version and code."""

    __slots__ = ("name", "slots", "version", "code_id")

    def __init__(self, name: str, slots: int, version: str, code_id: str) -> None:
        self.name, self.slots, self.version, self.code_id = name, slots, version, code_id


class Door:
    """How a connection gets in: the cookie it must prove, the seconds it has to, the
    bound on a message's payload once in, and a restricted node's ``Gate`` (or None)."""

    __slots__ = ("cookie", "handshake_timeout", "max_payload", "gate")

    def __init__(self, cookie: bytes, handshake_timeout: float, max_payload: int,
                 gate: Gate | None = None) -> None:
        self.cookie, self.handshake_timeout = cookie, handshake_timeout
        self.max_payload, self.gate = max_payload, gate


class Sessions:
    """The node's controller connections. Each is greeted, must authenticate (or hand
    over an SSH channel, ``splice``) within the handshake timeout, then has each message
    checked against ``ops.NODE_TAKES`` and handed to its handler: the session's own
    (ping, trace, cancel, stop) or a part's (``part.Part.handlers``). One that stops
    sending heartbeats is closed."""

    def __init__(self, loop: Loop, listener: socket.socket, parts: list, *, identity: Identity,
                 door: Door, stats: dict, on_stop) -> None:
        self.loop = loop
        self.parts = parts  # the node's parts (part.Part): the pool's tasks, the processes
        self.identity = identity
        self.name = identity.name
        self.door = door
        self.gate = door.gate  # a restricted node's policy: the gate every message passes
        self.stats = stats
        self.on_stop = on_stop  # () -> the node stops (a controller asked it to)
        self.pid = os.getpid()
        self.started = time.time()
        self.cpus = os.cpu_count()
        self.conns: dict[int, Connection] = {}
        self.conn_count = 0
        self.acceptor = Acceptor(loop, listener, stats, conns=self.conns, admit=self.admit,
                                 close=self.close_conn)
        handlers = {"ping": self.handle_ping, "cancel": self.handle_cancel,
                    "stop": self.handle_stop, "trace": self.handle_trace}
        for part in parts:
            handlers.update(part.handlers)
        self.dispatch = ops.Dispatch(ops.NODE_TAKES, handlers, self.unknown, guard=self.admits)

    def listen(self) -> None:
        self.acceptor.listen()

    def busy(self) -> bool:
        """Whether a controller is connected (the hub watching the node does not count:
        a node nobody uses still exits when idle)."""
        return any(not c.watching for c in self.conns.values())

    def housekeeping(self, now: float) -> None:
        """End connections not authenticated in time, or silent (see ``input_waiting``)."""
        self.acceptor.resume(now)
        for conn in list(self.conns.values()):
            if not conn.authed and now - conn.opened > self.door.handshake_timeout:
                self.close_conn(conn, "no handshake within %g s" % self.door.handshake_timeout)
            elif conn.heartbeat and now - conn.last_rx > conn.heartbeat and not input_waiting(conn):
                self.close_conn(conn, "no heartbeat for %.1f s" % (now - conn.last_rx))

    def close_all(self) -> None:
        """The node is stopping: what is queued goes out, then every connection closes."""
        for conn in list(self.conns.values()):
            self.loop.flush_blocking(conn)
            self.close_conn(conn, "node stopping", quiet=True)

    def close_in_child(self) -> None:
        """In a forked worker: let go of the listener and of every connection."""
        self.acceptor.listener.close()
        for conn in self.conns.values():
            conn.sock.close()
            for fd in conn.fds:
                os.close(fd)

    # -- opening and the handshake -------------------------------------------------------

    def open_conn(self, sock) -> Connection:
        self.conn_count += 1
        conn = Connection(sock, self.conn_count, self.read_conn, self.close_conn)
        self.conns[conn.fd] = conn
        self.loop.watch(conn)
        return conn

    def admit(self, sock: socket.socket) -> None:
        self.greet(self.open_conn(sock))

    def greet(self, conn: Connection) -> None:
        me = self.identity
        self.loop.send(conn, wire.encode(
            {"op": "hello", "proto": wire.PROTOCOL_VERSION, "version": me.version,
             "code": me.code_id, "python": "%d.%d.%d" % sys.version_info[:3],
             "executable": sys.executable, "pid": self.pid, "slots": me.slots,
             "node": me.name, "nonce": conn.nonce, "host": socket.gethostname(),
             **PLATFORM, **(restricted_hello(self.gate.policy) if self.gate is not None else {})}))

    def authenticate(self, conn: Connection, head: dict) -> None:
        op = head["op"]
        if op not in ops.HANDSHAKE:
            self.refuse(conn, "expected the handshake, got %r" % op[:64])
            return
        problem = ops.check(head, ops.HANDSHAKE)
        if problem is not None:
            self.refuse(conn, problem)
            return
        if op == "splice":
            if len(conn.fds) == 2 and isinstance(conn.sock, socket.socket):
                self.splice(conn)
            else:
                self.refuse(conn, "expected the handshake, got 'splice' without a channel")
            return
        proto = head.get("proto", wire.PROTOCOL_VERSION)
        if not wire.OLDEST_PROTOCOL <= proto <= wire.PROTOCOL_VERSION:
            self.refuse(conn, wire.protocol_mismatch(proto, self.identity.version))
            return
        client_nonce = head["nonce"]
        expected = wire.client_mac(self.door.cookie, conn.nonce, client_nonce)
        if not wire.macs_equal(head["mac"], expected):
            self.refuse(conn, "wrong cookie: this client belongs to another cluster")
            return
        conn.authed = True
        conn.decoder.max_payload = self.door.max_payload
        if self.gate is not None:
            self.gate.authenticated(conn)
        heartbeat = head.get("heartbeat")
        if heartbeat:
            conn.heartbeat = float(heartbeat)
        conn.watching = head.get("watch") is True
        self.loop.send(conn, wire.encode(
            {"op": "welcome", "mac": wire.node_mac(self.door.cookie, conn.nonce, client_nonce)}))
        if conn.watching:
            for part in self.parts:
                part.watch_opened(conn)

    def splice(self, conn: Connection) -> None:
        """The boot script of an SSH channel passed the channel's stdin and stdout: serve a
        controller connection on them, greeting it there; the script's own connection
        stays open, untouched, until that connection closes."""
        rfd, wfd = conn.fds
        if not all(stat.S_ISFIFO(m) or stat.S_ISSOCK(m) for m in (os.fstat(fd).st_mode
                                                                   for fd in (rfd, wfd))):
            self.refuse(conn, "the passed descriptors are not a channel's pipes")
            return
        conn.fds = []
        self.conns.pop(conn.fd, None)
        self.loop.unwatch(conn)
        conn.closed = True  # (its queued greeting is dropped: the greeting goes to the channel)
        stream = PipeStream(rfd, wfd, conn.sock)
        try:
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)
            spliced = self.open_conn(stream)
            spliced.label = "connection %d (ssh channel)" % self.conn_count
        except OSError as exc:
            self.conns.pop(rfd, None)
            self.loop.endpoints.pop(rfd, None)
            stream.close()
            log("%s: cannot use the passed channel: %s" % (conn.label, exc))
            return
        self.greet(spliced)

    def refuse(self, conn: Connection, reason: str) -> None:
        self.stats["refused"] += 1
        self.loop.send(conn, wire.encode({"op": "refused", "reason": reason}))
        self.loop.flush_blocking(conn)
        self.close_conn(conn, "refused: " + reason)

    # -- reading -------------------------------------------------------------------------

    def read_conn(self, conn: Connection) -> None:
        try:
            if conn.authed or not isinstance(conn.sock, socket.socket):
                chunk = conn.sock.recv(read_size(conn))
            else:  # before the handshake, a boot script may pass its channel (see splice)
                chunk, fds, flags, _ = socket.recv_fds(conn.sock, RECV_SIZE, 2)
                conn.fds.extend(fds)
                if len(conn.fds) > 2 or flags & socket.MSG_CTRUNC:
                    self.close_conn(conn, "sent more than a channel's two descriptors")
                    return
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close_conn(conn, "read failed: %s" % exc)
            return
        if not chunk:
            self.close_conn(conn, "closed by the controller", quiet=True)
            return
        conn.last_rx = time.monotonic()
        try:
            messages = (conn.decoder.feed(chunk) if conn.limit is None
                        else conn.limit.feed(conn.decoder, chunk))
        except wire.FrameError as exc:
            self.stats["refused"] += 1
            self.close_conn(conn, "garbage on the socket: %s" % exc)
            return
        for head, payload, raw in messages:
            if conn.closed:
                return
            try:
                if payload is None:  # over the payload bound: dropped unread (see PayloadLimit)
                    self.gate.too_large(conn, head, raw)
                elif conn.authed:
                    self.dispatch(head["op"], conn, head, raw)
                else:
                    self.authenticate(conn, head)
            except Exception as exc:  # noqa: BLE001 - a bug in one handler ends one connection
                self.internal_error(conn, head, exc)
                return
        for part in self.parts:
            part.after_read()

    def internal_error(self, conn: Connection, head: dict, exc: Exception) -> None:
        """The last resort: handling a message raised. That connection ends, logged with
        the reason and where it came from; the node and every other connection go on."""
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = "internal error handling %r: %s: %s (%s line %d)" % (
            head.get("op"), type(exc).__name__, exc, os.path.basename(where.filename), where.lineno)
        try:
            self.close_conn(conn, reason)
        except Exception as again:  # noqa: BLE001
            log("%s: %s; closing it failed too: %r" % (conn.label, reason, again))

    # -- the operations ------------------------------------------------------------------

    def admits(self, conn: Connection, head: dict, raw: bytes) -> bool:
        """A message of a known kind from an authenticated controller goes to its handler
        if well formed (``ops.NODE_TAKES``: a malformed one ends the connection) and, on a
        restricted node, if the gate lets it through (else it was answered)."""
        problem = ops.check(head, ops.NODE_TAKES)
        if problem is not None:
            self.refuse(conn, problem)
            return False
        return self.gate is None or not self.gate.refuses(conn, head, raw)

    def unknown(self, op: str, conn: Connection, head: dict, raw: bytes) -> None:
        """A kind no handler takes: answered with an error naming it; the connection goes on."""
        task_id = head.get("id")
        self.loop.send(conn, wire.encode(
            {"op": "error", "id": task_id if ops.REQUEST_ID.test(task_id) else None,
             "message": "unknown operation %r" % op[:64]}))

    def handle_ping(self, conn: Connection, head: dict, raw: bytes) -> None:
        self.loop.send(conn, wire.encode(self.pong(head)))

    def pong(self, head: dict) -> dict:
        """The answer to a ping: the node's clocks, load, counters, and each part's report
        (work in hand)."""
        try:
            load = list(os.getloadavg())
        except OSError:
            load = None
        now = time.time()
        answer = {"op": "pong", "id": head.get("id"), "time": now, "mono": time.monotonic(),
                  "load": load, "slots": self.identity.slots, "pid": self.pid,
                  "uptime": now - self.started, "stats": self.stats, "cpus": self.cpus}
        for part in self.parts:
            answer.update(part.report())
        return answer

    def handle_trace(self, conn: Connection, head: dict, raw: bytes) -> None:
        self.loop.send(conn, conn.traced(head))
        if head.get("processes") or head.get("stop"):
            for part in self.parts:
                part.trace_to(conn, conn.recorder if head.get("processes") else None)

    def handle_cancel(self, conn: Connection, head: dict, raw: bytes) -> None:
        """A cancel: the first part whose request it is answers it."""
        for part in self.parts:
            if part.cancel(conn, head["id"]):
                return

    def handle_stop(self, conn: Connection, head: dict, raw: bytes) -> None:
        log("stop requested by %s" % conn.label)
        self.loop.send(conn, wire.encode({"op": "stopping", "id": head.get("id"), "pid": self.pid}))
        self.on_stop()

    # -- closing -------------------------------------------------------------------------

    def close_conn(self, conn: Connection, reason: str, quiet: bool = False) -> None:
        if conn.closed:
            return
        if not quiet:
            log("%s closed: %s" % (conn.label, reason))
        conn.closed = True
        self.conns.pop(conn.fd, None)
        self.loop.unwatch(conn)
        conn.sock.close()
        for fd in conn.fds:
            os.close(fd)
        conn.fds = []
        for part in self.parts:
            part.connection_gone(conn)


def platform_facts() -> dict:
    """What decides whether a compiled package can load here: the machine and the C
    library (``glibc 2.36``; empty if it is not glibc)."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        libc = ""
    return {"machine": os.uname().machine, "libc": libc}


PLATFORM = platform_facts()  # (said in every hello)


def read_size(conn: Connection) -> int:
    """How much to read from an authenticated connection at once: more while a large
    frame comes in (or a body over a restricted node's bound is being dropped)."""
    wanted = conn.decoder.wanted()
    if conn.limit is not None:
        wanted = max(wanted, conn.limit.wanted())
    return max(RECV_SIZE, min(wanted, RECV_SIZE_MAX)) if wanted else RECV_SIZE


def restricted_hello(policy) -> dict:
    """What a restricted node's hello adds: its count of ``allow`` rules (shown by
    ``world``), and which policy it enforces (its file and the sha256 of its bytes), so
    the agent reaches it only with that same policy (see ``restricted.reach``)."""
    return {"restricted": len(policy.allows), "policy": policy.path, "policy_digest": policy.digest}
