"""Inside a spawned process: its mailbox, and what its code calls to talk to the world.

A spawned process runs one function in an OS process of its own, forked by its node.
Its code imports these from ``clusterctl.actor`` (the same functions)::

    from clusterctl.actor import receive, send, call, reply

    def serve():
        table = {}
        while True:
            match receive():
                case ("store", key, value): table[key] = value; reply(True)
                case ("lookup", key): reply(table.get(key))

Messages travel as frames on the channel to the node, which routes them. ``send`` does
not wait (as Erlang's ``!``); a message the receiver's mailbox had no room for comes
back as a refusal, which one of the sender's next ``send``s (they look every 16), or
its next ``call`` or ``receive``, raises as ``MailboxFull``. Ships to hosts: the standard library only (and cloudpickle, which the
bundle carries). See docs/how-it-works.md, section "Spawned processes".
"""

from __future__ import annotations

import itertools
import os
import pickle
import socket
import time
from collections import deque

from .. import aliases, ops, wire
from ..failures import (CallFailed, MailboxFull, NameTaken, NoProcess, NotInProcess,  # noqa: F401
                        ProcessError, ReceiveTimeout, process_error)
from ..notices import Down, Exit
from ..addresses import address_problem
from ..workers import envs, output
from ..workers.worker import (describe_exception, dumps_result, qualified_type, resolve_by_name,
                              run_child)

RECV_SIZE = 1 << 16
POLL_EVERY = 15  # a sender looks for refusals every 16 sends (and at every receive and call)
TOOK_MAX = 1 << 16  # consumed bytes are reported to the node at least this often


# -- what a process may see: errors and notices ---------------------------------------------

class _Exiting(BaseException):
    """``exit(reason)``: ends the process's function with that reason."""

    def __init__(self, reason) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the process's side of the channel ---------------------------------------------------------

class Envelope:
    """A message in the mailbox, with who sent it and, for a call, its reference."""

    __slots__ = ("msg", "sender", "ref", "size")

    def __init__(self, msg, sender, ref, size: int) -> None:
        self.msg, self.sender, self.ref, self.size = msg, sender, ref, size


class Runtime:
    """The running process's end of its channel to the node: the mailbox (messages read
    ahead of ``receive``, so a selective receive can pass over some), the calls waiting
    for replies, and the answers to requests (register, spawn, ...)."""

    def __init__(self, sock, ident: str, node: str, limit: int) -> None:
        self.sock = sock
        self.ident = ident
        self.node = node
        self.decoder = wire.FrameDecoder()
        self.box: deque = deque()
        self.replies: dict = {}  # call ref -> ("ok", value) | ("failed", reason)
        self.answers: dict = {}  # request number -> head
        self.refused: deque = deque()  # heads of sends that were refused
        self.took = 0
        self.took_every = max(1, min(TOOK_MAX, limit // 8))
        self.last: Envelope | None = None
        self.numbers = itertools.count(1)
        self.frames = 0  # frames taken in so far
        self.heads: dict = {}  # to -> the head of a message to it, encoded
        self.sends = 0
        self.takes = self.dispatch()
        self.output: output.TaskOutput | None = None  # what it prints (see ``run``)

    # -- writing and reading ---------------------------------------------------------------

    def write(self, head: dict, payload: bytes = b"") -> None:
        self.sock.sendall(wire.encode(head, payload))

    def read(self, deadline: float | None) -> bool:
        """Read what the node sent, waiting until ``deadline`` for at least one frame;
        False if none came. (The socket blocks, with a timeout only while waiting here.)
        What the process printed goes to the node first: it may wait long."""
        if self.output is not None:
            self.output.task_ended()
        sock = self.sock
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:  # (still, what is there already is taken)
                    before = self.frames
                    self.poll()
                    return self.frames > before
                sock.settimeout(left)
            try:
                chunk = sock.recv(RECV_SIZE)
            except socket.timeout:
                return False
            finally:
                if deadline is not None:
                    sock.settimeout(None)
            if not chunk:
                os._exit(0)  # the node is gone: so are its processes
            frames = self.decoder.feed(chunk)
            for head, payload, _raw in frames:
                self.take(head, payload)
            if frames:
                return True

    def poll(self) -> None:
        """Take in whatever the node sent already, without waiting."""
        recv = self.sock.recv
        try:
            while True:
                chunk = recv(RECV_SIZE, socket.MSG_DONTWAIT)
                if not chunk:
                    os._exit(0)
                for head, payload, _raw in self.decoder.feed(chunk):
                    self.take(head, payload)
        except (BlockingIOError, InterruptedError):
            pass

    def take(self, head: dict, payload) -> None:
        """A frame from the node (``ops.NODE_PROCESS``), to the mailbox or to whoever waits."""
        self.frames += 1
        self.takes(head["op"], head, payload)

    def take_message(self, head: dict, payload) -> None:  # (forwarded as its sender wrote it)
        self.box.append(Envelope(pickle.loads(payload), head.get("from"), head.get("ref"),
                                 len(payload)))

    def take_reply(self, head: dict, payload) -> None:
        self.replies[head["ref"]] = ("ok", pickle.loads(payload))

    def take_failed(self, head: dict, payload) -> None:
        self.replies[head["ref"]] = ("failed", head)

    def take_answer(self, head: dict, payload) -> None:
        self.answers[head["id"]] = head

    def take_down(self, head: dict, payload) -> None:
        down = Down(head["ref"], head["who"], head["reason"], head.get("tb", ""))
        self.box.append(Envelope(down, None, None, 0))

    def take_exit(self, head: dict, payload) -> None:
        exit = Exit(head["who"], head["reason"], head.get("tb", ""))
        self.box.append(Envelope(exit, None, None, 0))

    def take_refused(self, head: dict, payload) -> None:
        self.refused.append(head)

    READ_AT_START = ("start", "spawn")  # (read by ``run`` before the mailbox exists)

    def dispatch(self) -> ops.Dispatch:
        return ops.Dispatch(ops.NODE_PROCESS.takes("process"), {
            "send": self.take_message, "reply": self.take_reply, "failed": self.take_failed,
            "answer": self.take_answer, "down": self.take_down, "exit": self.take_exit,
            "refused": self.take_refused,
        }, lambda op, head, payload: None)  # (its node is of its own version)

    def check_refused(self) -> None:
        if self.refused:
            head = self.refused.popleft()
            raise process_error(head.get("kind"), head.get("reason", "a message was refused"), NoProcess)

    def consumed(self, envelope: Envelope) -> None:
        self.last = envelope
        self.took += envelope.size
        if self.took >= self.took_every:
            self.write({"op": "took", "bytes": self.took})
            self.took = 0

    # -- requests that have an answer ------------------------------------------------------

    def request(self, head: dict, payload: bytes = b"") -> dict:
        number = next(self.numbers)
        head["id"] = number
        self.write(head, payload)
        while number not in self.answers:
            self.read(None)
        answer = self.answers.pop(number)
        if not answer.get("ok"):
            raise process_error(answer.get("kind"), answer.get("message", "refused"))
        return answer

    # -- messages ---------------------------------------------------------------------------

    def receive(self, timeout, match):
        self.check_refused()
        deadline = None if timeout is None else time.monotonic() + timeout
        box = self.box
        seen = 0
        while True:
            if match is None:
                if box:
                    envelope = box.popleft()
                    self.consumed(envelope)
                    return envelope.msg
            else:
                for index in range(seen, len(box)):
                    envelope = box[index]
                    if match(envelope.msg):
                        del box[index]
                        self.consumed(envelope)
                        return envelope.msg
                seen = len(box)
            if not self.read(deadline):
                raise ReceiveTimeout("no %smessage within %g s"
                                     % ("matching " if match is not None else "", timeout))
            self.check_refused()

    def send(self, to, msg) -> None:
        head = self.heads.get(to)
        if head is None:
            head = self.heads[to] = wire.encode({"op": "send", "to": address(to), "from": self.ident})[
                wire.HEADER_SIZE:]
            if len(self.heads) > 1024:
                self.heads.clear()
        if self.refused:
            self.check_refused()
        payload = dumps_result(msg)
        self.sock.sendall(wire.HEADER.pack(wire.MAGIC, wire.KIND_MESSAGE, len(head), len(payload))
                          + head + payload)
        self.sends += 1
        if not self.sends & POLL_EVERY:  # (a refusal is raised by one of the next sends)
            self.poll()

    def call(self, to, msg, timeout):
        to = address(to)
        self.check_refused()
        ref = "%s#%d" % (self.ident, next(self.numbers))
        self.write({"op": "send", "to": to, "from": self.ident, "ref": ref}, dumps_result(msg))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies = self.replies
        while ref not in replies:
            if not self.read(deadline):
                self.write({"op": "forget", "ref": ref})
                raise ReceiveTimeout("%s did not reply within %g s" % (to, timeout))
        kind, value = replies.pop(ref)
        if kind == "ok":
            return value
        raise process_error(value.get("kind"), value.get("reason", "the call failed"), CallFailed)

    def reply(self, value, to=None) -> bool:
        envelope = self.last if to is None else to
        if to is not None and not isinstance(envelope, Envelope):
            raise ProcessError("reply(to=...) takes what caller() returned, not %r" % (to,))
        if envelope is None or envelope.ref is None:
            return False  # (the message was sent, not called: there is no one to answer)
        self.write({"op": "reply", "ref": envelope.ref}, dumps_result(value))
        envelope.ref = None  # one reply per call
        return True


def address(to) -> str:
    """A process id (``n2.17``) or a registered name, checked to be one."""
    problem = address_problem(to)
    if problem is not None:
        raise ProcessError(problem)
    return to


# -- the module-level functions a process's code calls -------------------------------------------

_runtime: Runtime | None = None


def _current() -> Runtime:
    if _runtime is None:
        raise NotInProcess("this works only inside a spawned process (clusterctl spawn, "
                           "Cluster.spawn); from a program, use Cluster.send and Cluster.call")
    return _runtime


def receive(timeout: float | None = None, match=None):
    """The next message; with ``match``, the first message for which ``match(msg)`` is
    true (the others stay in the mailbox, in order: Erlang's selective receive).
    ``ReceiveTimeout`` after ``timeout`` seconds with none."""
    return _current().receive(timeout, match)


def send(to: str, msg) -> None:
    """Send ``msg`` (any picklable value) to a process id or a registered name; does not
    wait. Messages between two processes arrive in the order sent."""
    _current().send(to, msg)


def call(to: str, msg, timeout: float | None = None):
    """Send ``msg`` and wait for the receiver's ``reply``; ``CallFailed`` if the receiver
    ends first, ``NoProcess`` if there is none, ``ReceiveTimeout`` after ``timeout``."""
    return _current().call(to, msg, timeout)


def reply(value, to=None) -> bool:
    """Answer the call whose message ``receive`` returned last (or the one ``caller()``
    returned then, given as ``to``); False, and nothing sent, if that message was sent
    rather than called (so a server may take both)."""
    return _current().reply(value, to)


def caller():
    """The call just received, to ``reply(value, to=...)`` later; None if it was no call."""
    last = _current().last
    return last if last is not None and last.ref is not None else None


def sender() -> str | None:
    """Who sent the message ``receive`` returned last: a process id, or None for a
    program or a command outside any process."""
    last = _current().last
    return None if last is None else last.sender


def self() -> str:  # noqa: A001 - Erlang's name, in its own namespace
    """This process's id, like ``n2.17``."""
    return _current().ident


def register(name: str) -> None:
    """Give this process a name, unique in its world; ``NameTaken`` names the holder."""
    _current().request({"op": "register", "name": name})


def whereis(name: str) -> str | None:
    """The id of the process registered as ``name``, or None."""
    return _current().request({"op": "whereis", "name": name}).get("pid")


def spawn(fn, *args, name: str | None = None, restart: str = "temporary", **kwargs) -> str:
    """Start ``fn(*args, **kwargs)`` as a new process on this node; its id."""
    head = {"op": "spawn", "restart": restart, "label": getattr(fn, "__qualname__", repr(fn))[:200]}
    if name is not None:
        head["name"] = name
    return _current().request(head, dumps_result((fn, args, kwargs)))["pid"]


def link(to: str) -> None:
    """Link to a process: when one of the two ends abnormally, the other is ended too
    (or, if it traps exits, gets an ``Exit`` message)."""
    _current().request({"op": "link", "to": address(to)})


def unlink(to: str) -> None:
    _current().request({"op": "unlink", "to": address(to)})


def monitor(to: str) -> str:
    """Watch a process: when it ends, a ``Down(ref, process, reason)`` message arrives
    (at once if there is no such process). Returns the reference."""
    rt = _current()
    ref = "%s#%d" % (rt.ident, next(rt.numbers))
    rt.request({"op": "monitor", "to": address(to), "ref": ref})
    return ref


def demonitor(ref: str) -> None:
    _current().request({"op": "demonitor", "ref": ref})


def kill(to: str) -> None:
    """End a process of this node for good (it is not restarted); its links and monitors
    hear "killed"."""
    _current().request({"op": "kill", "to": address(to)})


def trap_exits(on: bool = True) -> None:
    """Take linked processes' ends as ``Exit`` messages instead of ending with them."""
    _current().request({"op": "trap", "on": bool(on)})


def exit(reason="normal") -> None:  # noqa: A001 - Erlang's name, in its own namespace
    """End this process with ``reason`` ("normal" is a normal end)."""
    raise _Exiting(reason)


# -- the forked process -------------------------------------------------------------------------

def alias_modules() -> None:
    """User code imports ``clusterctl.actor`` (and pickles refer to the controller's names
    of this module, the errors and the notices); here they are this node's modules,
    whichever clusterctl (if any) the host has installed (see ``aliases``)."""
    aliases.install()


def _load(head: dict, payload):
    envs.use(head.get("env"))  # (the packages it needs, shipped: first on the path; a new
    # process has looked nothing up by name yet)
    packed, args, kwargs = pickle.loads(payload)
    if packed is not None:
        return packed, args, kwargs
    return resolve_by_name(head["mod"], head["fun"]), args, kwargs


def describe(exc: BaseException, node: str, skip: int = 1) -> tuple[str, str]:
    """An exception as (``Type: message``, its traceback without our frames)."""
    info = describe_exception(exc, node, skip_frames=skip)
    text = "%s: %s" % (info["type"], info["message"]) if info["message"] else info["type"]
    return text, info["traceback"]


def run(sock, node: str) -> int:
    """Read who this process is and what it runs, run it, and tell the node how it ended."""
    global _runtime
    head, payload = wire.read_message(sock)  # {"op": "start", "pid", "limit"}
    spawn_head, spawn_payload = wire.read_message(sock)
    _runtime = rt = Runtime(sock, head["pid"], node, head.get("limit") or (1 << 26))
    rt.output = output.install(sock.sendall, threaded=False)  # (kept by the node for ``logs``)
    alias_modules()
    try:
        fn, args, kwargs = _load(spawn_head, spawn_payload)
    except BaseException as exc:  # noqa: BLE001 - told to whoever spawned it
        kind = "import" if isinstance(exc, (ImportError, AttributeError)) else "unpickle"
        text, _ = describe(exc, node, 0)
        rt.write({"op": "exiting", "kind": kind, "reason": "cannot load the function: " + text})
        return 1
    rt.write({"op": "started"})
    try:
        try:
            fn(*args, **kwargs)
        finally:
            rt.output.task_ended()  # (its last lines, ahead of its end)
        rt.write({"op": "exiting", "kind": "normal", "reason": "normal"})
    except _Exiting as exc:
        reason = exc.reason if isinstance(exc.reason, str) else repr(exc.reason)
        rt.write({"op": "exiting", "kind": "normal" if reason == "normal" else "exit",
                  "reason": reason[:4000]})
    except BaseException as exc:  # noqa: BLE001 - the process's end, told with its traceback
        text, tb = describe(exc, node)
        rt.write({"op": "exiting", "kind": "error", "reason": text[:4000], "tb": tb[-4000:],
                  "type": qualified_type(exc)[:200]})
    return 0


def process_main(sock, node: str, parent_pid: int) -> None:
    """Entry point in the forked child. Never returns."""
    def body() -> int:
        sock.setblocking(True)
        return run(sock, node)

    run_child(body, parent_pid)
