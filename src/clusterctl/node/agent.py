"""The node: a detached daemon that owns a unix socket and a pool of worker processes.

Ships to hosts, so it imports only the standard library and its own modules.
``CLUSTERCTL_HANDSHAKE_TIMEOUT`` (seconds) in its environment overrides
``wire.HANDSHAKE_TIMEOUT``. See docs/how-it-works.md, sections "Starting the node
process", "Inside a node" and "Cancellation, crashes and kills".
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import socket
import stat
import sys
import time
import traceback
from collections import OrderedDict, deque

from . import boot, ops, wire
from .worker import CHANNEL, DROP_FLAG, HOLD_FLAG, SEQ_MASK, worker_main

PIPELINE_DEPTH = 2  # tasks handed to one worker ahead, so it never waits for the node
FAST_PIPELINE_DEPTH = 8  # ... for a worker whose tasks take less than FAST_TASK_SECONDS,
FAST_TASK_SECONDS = 0.001  # so tiny tasks travel several to a write and a wake-up
WORKER_FUNCTION_CACHE = 256
HOUSEKEEPING_INTERVAL = 0.5
EXIT_GRACE_SECONDS = 2.0  # a killed worker not gone by then is reported without its status
SHUTDOWN_REAP_SECONDS = 2.0  # how long a stopping node waits for its killed workers to exit
DEFAULT_IDLE = wire.DEFAULT_IDLE
HANDSHAKE_TIMEOUT_ENV = "CLUSTERCTL_HANDSHAKE_TIMEOUT"
SOCKET_PATH_MAX = 107
RECV_SIZE = 1 << 16
RECV_SIZE_MAX = 1 << 22  # one read while a large frame comes in
SENDMSG_PARTS = 64
SMALL_FRAME = 1 << 14
MAX_PENDING_HANDSHAKES = 64  # connections not authenticated yet; more are turned away at once
ACCEPT_BACKOFF = 1.0  # seconds the listener rests when no descriptor is left for a connection
LOG_BYTES = 1 << 20  # the log is cut past this size, one older part kept (see ``bound_log``)

if hasattr(select, "epoll"):  # Linux
    new_poller, POLL_SECONDS = select.epoll, 1.0
    READ, WRITE, BROKEN = select.EPOLLIN, select.EPOLLOUT, select.EPOLLHUP | select.EPOLLERR
else:  # other POSIX systems: poll has the same interface, in milliseconds
    new_poller, POLL_SECONDS = select.poll, 1000.0
    READ, WRITE, BROKEN = select.POLLIN, select.POLLOUT, select.POLLHUP | select.POLLERR


# -- where things live on a host -------------------------------------------------------

def run_dir() -> str:
    """The per-user directory for sockets, pid files and logs (0700)."""
    return boot.run_dir()


def cache_dir() -> str:
    """Where shipped code is kept, content-addressed."""
    return boot.cache_root()


def ensure_private_dir(path: str, create: bool = True) -> bool:
    """Create ``path`` 0700, or check that an existing one is ours and private (the check
    the boot script and the local transport make too, before they connect to a socket in
    it); RuntimeError naming the path and its owner if not. False if it is missing and
    not ``create``."""
    return boot.private_dir(path, create)


def socket_path(directory: str, name: str) -> str:
    return boot.socket_path(directory, name)


_log_path: str | None = None  # the log file on descriptors 1 and 2, once ``main`` set it up


def log(message: str) -> None:
    sys.stderr.write("%s [%d] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message))
    sys.stderr.flush()
    bound_log()


def bound_log() -> None:
    """Keep the log under ``LOG_BYTES``: past it, its last ``LOG_BYTES`` are copied to
    ``LOG.1`` and it is emptied in place. The node and its workers (and what user code
    prints) append to the one open file, so all of them go on writing to the new start."""
    if _log_path is None:
        return
    try:
        size = os.fstat(2).st_size
        if size <= LOG_BYTES:
            return
        old = _log_path + ".1"
        with open(_log_path, "rb") as src, open(old + ".tmp", "wb") as dst:
            src.seek(max(0, size - LOG_BYTES))
            dst.write(src.read(LOG_BYTES))
        os.replace(old + ".tmp", old)
        os.ftruncate(2, 0)
    except OSError:
        pass


# -- endpoints ---------------------------------------------------------------------------

class Endpoint:
    """A non-blocking socket with an output queue, registered with the poller."""

    __slots__ = ("sock", "fd", "wfd", "out", "writing", "closed", "dirty")
    is_worker = False

    def __init__(self, sock) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.wfd = getattr(sock, "wfd", self.fd)  # a PipeStream writes to a descriptor of its own
        self.out: deque = deque()
        self.writing = False
        self.closed = False
        self.dirty = False  # has output not tried yet (written at the end of the loop's turn)


class PipeStream:
    """An SSH channel's own stdin and stdout, handed to the node by the boot script on the
    host (``boot.splice``), with the socket methods the node uses. The node then reads
    and writes the channel's pipes itself: no process copies the bytes in between.
    ``companion`` is the boot script's unix connection; closing it lets the script exit."""

    def __init__(self, rfd: int, wfd: int, companion: socket.socket) -> None:
        self.rfd, self.wfd, self.companion = rfd, wfd, companion

    def fileno(self) -> int:
        return self.rfd

    def recv(self, size: int) -> bytes:
        return os.read(self.rfd, size)

    def send(self, data) -> int:
        return os.write(self.wfd, data)

    def sendmsg(self, parts) -> int:
        return os.writev(self.wfd, parts)

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.companion.close()


class Conn(Endpoint):
    """A controller connection."""

    __slots__ = ("decoder", "authed", "nonce", "opened", "last_rx", "heartbeat", "tasks",
                 "functions", "label", "fds")

    def __init__(self, sock, number: int) -> None:
        super().__init__(sock)
        self.decoder = wire.FrameDecoder(max_payload=0)  # no payload before the handshake
        self.authed = False
        self.nonce = wire.new_nonce()
        self.opened = self.last_rx = time.monotonic()
        self.heartbeat = 0.0
        self.tasks: dict = {}
        self.functions: dict[str, bytes] = {}
        self.label = "connection %d" % number
        self.fds: list[int] = []  # descriptors passed with the handshake (see ``splice``)


class WorkerSlot(Endpoint):
    """The node's end of one worker process."""

    __slots__ = ("pid", "inbox", "assigned", "functions", "index", "depth", "pace",
                 "last_result", "ended", "crashed", "failing", "reaper")
    is_worker = True

    def __init__(self, sock: socket.socket, pid: int, index: int) -> None:
        super().__init__(sock)
        self.pid = pid
        self.index = index
        self.inbox = bytearray()
        self.assigned: deque = deque()
        self.functions: OrderedDict = OrderedDict()
        self.depth = PIPELINE_DEPTH  # tasks it may hold (see ``paced``)
        self.pace: float | None = None  # seconds per result while busy, smoothed
        self.last_result: float | None = None  # when it last answered, if it had more to do
        self.ended = 0.0  # when it was killed (see ``Node.end_worker``)
        self.crashed = False  # it crashed and is not reaped yet: its end is reported then
        self.failing: Task | None = None  # ... and the task it crashed in answered
        self.reaper: Reaper | None = None

    def paced(self, now: float, results: int) -> None:
        """Learn how fast this worker answers, and hold more tasks ahead for a fast one."""
        if self.last_result is not None:
            sample = (now - self.last_result) / results
            self.pace = sample if self.pace is None else 0.7 * self.pace + 0.3 * sample
            self.depth = FAST_PIPELINE_DEPTH if self.pace < FAST_TASK_SECONDS else PIPELINE_DEPTH
        self.last_result = now if self.assigned else None


class Reaper(Endpoint):
    """A killed worker's pidfd in the poller: readable once the process has exited, so the
    node reaps it without waiting (see ``Node.reap``)."""

    __slots__ = ("worker",)
    is_worker = True  # (the loop hands its events to ``read_worker``)

    def __init__(self, fd: int, worker: WorkerSlot) -> None:
        self.sock = None
        self.fd = self.wfd = fd
        self.out: deque = deque()
        self.writing = self.closed = self.dirty = False
        self.worker = worker


class Spawner(Endpoint):
    """Replacement workers are forked one a turn of the loop, so the loop answers everyone
    else in between (see ``Node.respawn``): a pipe in the poller that holds a byte
    (``armed``) while that needs a turn."""

    __slots__ = ("wfd_pipe", "waiting", "armed", "forked")
    is_worker = True  # (the loop hands its events to ``read_worker``)

    def __init__(self) -> None:
        rfd, self.wfd_pipe = os.pipe()
        for fd in (rfd, self.wfd_pipe):
            os.set_blocking(fd, False)
        self.sock = None
        self.fd = self.wfd = rfd
        self.out: deque = deque()
        self.writing = self.closed = self.dirty = False
        self.waiting: deque = deque()  # slots of ended workers, to be forked again
        self.armed = False
        self.forked = False  # a worker was forked since the last turn of the spawner


class Task:
    __slots__ = ("seq", "conn", "id", "frame", "fk", "worker", "cancelled", "is_map", "held",
                 "suspect", "failed", "dropping")

    def __init__(self, seq: int, conn: Conn, task_id, frame: bytes, fk, is_map: bool) -> None:
        self.seq = seq
        self.conn = conn
        self.id = task_id
        self.frame = frame
        self.fk = fk
        self.worker = None
        self.cancelled = False
        self.is_map = is_map  # a pmap chunk: safe to run again (pmap keeps exactly-once)
        self.held = False  # its worker may hold its reply back (see worker.HOLD_FLAG)
        self.suspect = False  # it was in a worker that crashed holding replies back
        self.failed = False  # answered as failed (crashed, or cancelled while running)
        self.dropping = False  # cancelled after it was handed ahead: its worker must skip it


# -- the node ----------------------------------------------------------------------------

class Node:
    """The daemon's state and its event loop."""

    def __init__(self, *, name: str, slots: int, listener: socket.socket, cookie: bytes,
                 idle: float, version: str, code_id: str, max_payload: int,
                 sock_path: str, handshake_timeout: float = wire.HANDSHAKE_TIMEOUT) -> None:
        self.name = name
        self.slots = slots
        self.listener = listener
        self.cookie = cookie
        self.idle = idle
        self.version = version
        self.code_id = code_id
        self.max_payload = max_payload
        self.handshake_timeout = handshake_timeout
        self.sock_path = sock_path
        self.sock_ino = os.stat(sock_path).st_ino
        self.pid = os.getpid()
        self.poller = new_poller()
        self.endpoints: dict[int, Endpoint] = {}  # fd -> connection or worker
        self.conns: dict[int, Conn] = {}
        self.workers: list[WorkerSlot] = []
        self.dying: dict[int, WorkerSlot] = {}  # pid -> a killed worker not reaped yet
        self.spawner: Spawner | None = None  # made when a worker first needs replacing
        self.queue: deque = deque()
        self.tasks_by_seq: dict[int, Task] = {}
        self.dirty: list[Endpoint] = []  # endpoints with output to write this turn
        self.seq = 0
        self.conn_count = 0
        self.stopping = False
        self.last_busy = time.monotonic()
        self.started = time.time()
        self.stats = {"tasks": 0, "failed": 0, "worker_crashes": 0, "refused": 0, "rerun": 0}
        self.cpus = os.cpu_count()

    # -- lifecycle -----------------------------------------------------------------------

    def serve(self) -> None:
        self.listener.setblocking(False)
        listener_fd = self.listener.fileno()
        self.poller.register(listener_fd, READ)
        for index in range(self.slots):
            self.workers.append(self.spawn_worker(index))
        log("node %s serving on %s with %d slots (version %s, code %s)"
            % (self.name, self.sock_path, self.slots, self.version, self.code_id))
        endpoints = self.endpoints
        poll = self.poller.poll
        timeout = HOUSEKEEPING_INTERVAL * POLL_SECONDS
        monotonic = time.monotonic
        next_housekeeping = monotonic() + HOUSEKEEPING_INTERVAL
        while not self.stopping:
            try:
                events = poll(timeout)
            except InterruptedError:
                events = ()
            for fd, mask in events:
                ep = endpoints.get(fd)
                if ep is None:
                    if fd == listener_fd:
                        self.accept()
                    continue
                if fd != ep.fd:  # the write side of a PipeStream
                    if mask & BROKEN:
                        self.close_conn(ep, "the channel's output was closed")
                    elif mask & WRITE:
                        self.flush(ep)
                    continue
                if mask & WRITE:
                    self.flush(ep)
                if mask & (READ | BROKEN) and not ep.closed:
                    if ep.is_worker:
                        self.read_worker(ep)
                    else:
                        self.read_conn(ep)
            if self.dirty:
                self.write_dirty()
            now = monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_INTERVAL
                self.housekeeping(now)
        self.shutdown()

    def watch(self, ep: Endpoint) -> None:
        self.endpoints[ep.fd] = ep
        self.poller.register(ep.fd, READ)

    def unwatch(self, ep: Endpoint) -> None:
        if self.endpoints.pop(ep.fd, None) is not None:
            try:
                self.poller.unregister(ep.fd)
            except (KeyError, ValueError, OSError):
                pass
        if ep.wfd != ep.fd and self.endpoints.pop(ep.wfd, None) is not None:
            try:
                self.poller.unregister(ep.wfd)
            except (KeyError, ValueError, OSError):
                pass

    def housekeeping(self, now: float) -> None:
        if self.accept_paused and now >= self.accept_paused:
            self.accept_paused = 0.0
            self.poller.register(self.listener.fileno(), READ)
        bound_log()  # (workers write to it too)
        for conn in list(self.conns.values()):
            if not conn.authed and now - conn.opened > self.handshake_timeout:
                self.close_conn(conn, "no handshake within %g s" % self.handshake_timeout)
            elif conn.heartbeat and now - conn.last_rx > conn.heartbeat:
                self.close_conn(conn, "no heartbeat for %.1f s" % (now - conn.last_rx))
        if self.dying:
            self.reap_dying(now)
        if self.conns or self.tasks_by_seq:
            self.last_busy = now
        elif now - self.last_busy > self.idle:
            log("idle for %.0f s with nothing to do: exiting" % self.idle)
            self.stopping = True

    def shutdown(self) -> None:
        for conn in list(self.conns.values()):
            self.flush_blocking(conn)
            self.close_conn(conn, "node stopping", quiet=True)
        for worker in self.workers:
            self.end_worker(worker)
        self.workers = []
        deadline = time.monotonic() + SHUTDOWN_REAP_SECONDS
        while self.dying:  # killed: they exit at once, unless stuck in the kernel
            for worker in list(self.dying.values()):
                self.reap(worker)
            if not self.dying or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        for worker in list(self.dying.values()):
            log("worker %d (pid %d) had not exited %g s after it was killed"
                % (worker.index, worker.pid, SHUTDOWN_REAP_SECONDS))
            self.forget_dying(worker)
        try:
            if os.stat(self.sock_path).st_ino == self.sock_ino:
                os.unlink(self.sock_path)
        except OSError:
            pass
        pid_path = self.sock_path[:-len(".sock")] + ".pid"
        try:
            with open(pid_path) as fh:
                if fh.read().strip() == str(self.pid):
                    os.unlink(pid_path)
        except OSError:
            pass
        self.listener.close()
        log("node %s stopped" % self.name)

    # -- workers -------------------------------------------------------------------------

    def spawn_worker(self, index: int) -> WorkerSlot:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the child: keep only its channel and stdio
            try:
                ours.close()
                self.poller.close()
                self.listener.close()
                for conn in self.conns.values():
                    conn.sock.close()
                    for fd in conn.fds:
                        os.close(fd)
                for worker in self.workers:
                    worker.sock.close()
                for worker in self.dying.values():
                    if worker.reaper is not None:
                        os.close(worker.reaper.fd)
                if self.spawner is not None:
                    os.close(self.spawner.fd)
                    os.close(self.spawner.wfd_pipe)
            finally:
                worker_main(theirs, self.name, self.pid)
        try:  # its own process group (it does so too: whichever comes first)
            os.setpgid(pid, pid)
        except OSError:
            pass
        theirs.close()
        ours.setblocking(False)
        worker = WorkerSlot(ours, pid, index)
        self.watch(worker)
        return worker

    def end_worker(self, worker: WorkerSlot) -> str | None:
        """Kill a worker with its process group (what its tasks started goes with it) and
        reap it if it has exited; return how it ended, or None if it has not exited yet:
        then it is reaped later (``reap``), for the loop never waits for a process."""
        if worker.ended:
            return None
        worker.ended = time.monotonic()
        if not worker.closed:
            worker.closed = True
            self.unwatch(worker)
            worker.sock.close()
        # (a process that is exiting already keeps its own exit status)
        for kill in (os.killpg, os.kill):
            try:
                kill(worker.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            pid, status = os.waitpid(worker.pid, os.WNOHANG)
        except ChildProcessError:
            return "is gone"
        if pid:
            return describe_status(status)
        self.dying[worker.pid] = worker
        try:
            reaper = Reaper(os.pidfd_open(worker.pid), worker)
        except (AttributeError, OSError):  # no pidfd here: housekeeping reaps it
            return None
        worker.reaper = reaper
        self.watch(reaper)
        return None

    def reap(self, worker: WorkerSlot) -> bool:
        """Collect a killed worker's exit status if it has exited; True once reaped."""
        try:
            pid, status = os.waitpid(worker.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = worker.pid, None
        if not pid:
            return False
        self.forget_dying(worker)
        self.worker_ended(worker, "is gone" if status is None else describe_status(status))
        return True

    def reap_dying(self, now: float) -> None:
        """Housekeeping: reap killed workers; answer for one stuck in the kernel."""
        for worker in list(self.dying.values()):
            if not self.reap(worker) and worker.crashed \
                    and now - worker.ended > EXIT_GRACE_SECONDS:
                self.worker_ended(worker, "did not exit when it was killed")

    def forget_dying(self, worker: WorkerSlot) -> None:
        self.dying.pop(worker.pid, None)
        reaper, worker.reaper = worker.reaper, None
        if reaper is not None:
            self.unwatch(reaper)
            os.close(reaper.fd)

    def worker_ended(self, worker: WorkerSlot, how: str) -> None:
        """A crashed worker's status is known: log it, and answer for the task it ran."""
        if not worker.crashed:
            return
        worker.crashed = False
        task, worker.failing = worker.failing, None
        log("worker %d (pid %d) %s" % (worker.index, worker.pid, how))
        if task is not None and not task.failed:
            self.finish_failed(task, how, worker)

    def replace_worker(self, worker: WorkerSlot, reason: str | None = None) -> None:
        """A worker died or was killed: fail or requeue its tasks and fork a new one."""
        if worker.ended:
            return
        how = self.end_worker(worker)
        assigned = list(worker.assigned)
        worker.assigned.clear()
        running = None
        if assigned:
            running, waiting = assigned[0], assigned[1:]
            if reason is None and running.held:
                # It crashed while it may have been holding replies back, so which of these
                # it was running is not known: they all run again, and none of them with
                # replies held back, so a task that crashes again is the one to blame.
                for task in assigned:
                    task.suspect = True
                running, waiting = None, assigned
                self.stats["rerun"] += len(assigned)
            for task in reversed(waiting):
                task.worker = None
                task.held = False
                if task.cancelled or task.conn.closed:
                    self.tasks_by_seq.pop(task.seq, None)
                else:
                    self.queue.appendleft(task)
        if reason is None:
            self.stats["worker_crashes"] += 1
            if how is None:  # not exited yet: logged and answered once it is reaped
                worker.crashed, worker.failing = True, running
            else:
                log("worker %d (pid %d) %s" % (worker.index, worker.pid, how))
                if running is not None:
                    self.finish_failed(running, how, worker)
        else:
            log("worker %d (pid %d) %s" % (worker.index, worker.pid, reason))
            if running is not None:
                self.finish_failed(running, reason, worker)
        if not self.stopping:
            self.respawn(worker)

    def respawn(self, worker: WorkerSlot) -> None:
        """Fork a replacement for an ended worker: at once, unless one was forked this turn
        of the loop already; then on a later turn (a fork takes milliseconds on a busy
        host, and killing 64 busy workers must not hold up everyone else's pings)."""
        spawner = self.spawner
        if spawner is None:
            spawner = self.spawner = Spawner()
            self.watch(spawner)
        if spawner.forked:
            spawner.waiting.append(worker)
        else:
            self.fork_again(worker)
        if not spawner.armed:
            spawner.armed = True
            os.write(spawner.wfd_pipe, b"x")

    def fork_again(self, worker: WorkerSlot) -> None:
        self.spawner.forked = True
        self.workers[self.workers.index(worker)] = self.spawn_worker(worker.index)
        self.dispatch()

    def spawn_next(self) -> None:
        """The spawner's turn: fork the next replacement, if one waits."""
        spawner = self.spawner
        spawner.forked = False
        if spawner.waiting and not self.stopping:
            self.fork_again(spawner.waiting.popleft())
        else:
            spawner.waiting.clear()
            spawner.armed = False
            try:
                os.read(spawner.fd, 16)
            except (BlockingIOError, InterruptedError):
                pass

    def finish_failed(self, task: Task, how: str, worker: WorkerSlot) -> None:
        task.failed = True
        self.tasks_by_seq.pop(task.seq, None)
        conn = task.conn
        if conn.tasks.get(task.id) is task:
            del conn.tasks[task.id]
        if conn.closed or task.dropping:  # (a dropped task was answered when it was cancelled)
            return
        if task.cancelled:
            head = ops.error_head("cancelled", task.id, "Cancelled", "cancelled while running",
                                  self.name)
        else:
            self.stats["failed"] += 1
            head = ops.error_head("crashed", task.id, "WorkerCrashed",
                                  "worker process %d %s while running this task; it was replaced"
                                  % (worker.pid, how), self.name)
        self.send(conn, wire.encode(head))

    def read_worker(self, worker: WorkerSlot) -> bool:
        """Take in what a worker sent; False if there was nothing to read."""
        if worker.__class__ is not WorkerSlot:
            if worker.__class__ is Reaper:  # a killed worker has exited
                self.reap(worker.worker)
            else:
                self.spawn_next()
            return True
        inbox = worker.inbox
        header = CHANNEL.size
        want = RECV_SIZE
        if len(inbox) >= header:  # in the middle of a large result: take more at once
            missing = header + CHANNEL.unpack_from(inbox)[1] - len(inbox)
            want = max(want, min(missing, RECV_SIZE_MAX))
        try:
            chunk = worker.sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.replace_worker(worker)
            return True
        if inbox:
            inbox += chunk
            data = inbox
        else:
            data = chunk
        view = memoryview(data)
        size = len(data)
        pos = 0
        results = []
        while size - pos >= header:
            seq, length = CHANNEL.unpack_from(data, pos)
            end = pos + header + length
            if size < end:
                break
            # frames are forwarded as slices of what was read; the inbox is copied from
            results.append((seq, view[pos + header:end] if data is chunk
                            else bytes(view[pos + header:end])))
            pos = end
        if data is inbox:
            view.release()
            del inbox[:pos]
        elif pos < size:
            inbox += view[pos:]
        for seq, frame in results:
            if worker.closed:
                break
            self.worker_result(worker, seq, frame)
        if results and not worker.closed:
            if worker.assigned and worker.assigned[0].dropping:
                # The reply before a dropped task came without the word that it was
                # dropped (which the worker sends ahead of that reply): it has started.
                self.replace_worker(worker, "was killed to cancel its task")
            else:
                worker.paced(time.monotonic(), len(results))
        self.dispatch()
        return True

    def worker_result(self, worker: WorkerSlot, seq: int, frame) -> None:
        if seq & DROP_FLAG:  # a task dropped before it started: it never ran
            task = self.tasks_by_seq.get(seq & SEQ_MASK)
            if task is None or task.worker is not worker or not task.dropping:
                self.replace_worker(worker, "dropped a task it was not asked to drop")
                return
            worker.assigned.remove(task)
            task.worker = None
            del self.tasks_by_seq[task.seq]
            return
        if not worker.assigned or worker.assigned[0].seq != seq:
            log("worker %d answered task %d out of order: replacing it" % (worker.index, seq))
            self.replace_worker(worker, "answered out of order")
            return
        task = worker.assigned.popleft()
        task.worker = None
        self.tasks_by_seq.pop(seq, None)
        self.stats["tasks"] += 1
        conn = task.conn
        if task.cancelled or conn.closed:
            return
        conn.tasks.pop(task.id, None)
        if len(frame) > self.max_payload:
            frame = self.check_result_size(task, frame)
        self.send(conn, frame)

    def check_result_size(self, task: Task, frame):
        """A result over the frame limit becomes an error: the controller would refuse it."""
        head_len, payload_len = wire.check_header(frame[:wire.HEADER_SIZE], 1 << 62)
        if payload_len <= self.max_payload:
            return frame
        self.stats["failed"] += 1
        return wire.encode(ops.error_head(
            "result", task.id, "ResultTooLarge",
            "the pickled result is %d bytes, over the frame limit of %d bytes"
            % (payload_len, self.max_payload), self.name))

    def dispatch(self) -> None:
        """Hand queued tasks to workers: idle workers first, then one more ahead each."""
        queue = self.queue
        if not queue:
            return
        for depth in range(FAST_PIPELINE_DEPTH):
            for worker in self.workers:
                if not queue:
                    return
                if len(worker.assigned) == depth < worker.depth and not worker.closed:
                    self.assign(worker, queue.popleft())

    def assign(self, worker: WorkerSlot, task: Task) -> None:
        key = task.fk
        if key is not None and key not in worker.functions:
            definition = task.conn.functions[key]
            worker.functions[key] = True
            self.send(worker, CHANNEL.pack(0, len(definition)), definition)
            if len(worker.functions) > WORKER_FUNCTION_CACHE:
                old, _ = worker.functions.popitem(last=False)
                forget = wire.encode({"op": "forget", "key": old})
                self.send(worker, CHANNEL.pack(0, len(forget)) + forget)
        elif key is not None:
            worker.functions.move_to_end(key)
        task.worker = worker
        worker.assigned.append(task)
        seq = task.seq
        if worker.depth > PIPELINE_DEPTH and task.is_map and not task.suspect:
            task.held = True  # a tiny pmap chunk: its reply may travel with the next ones
            seq |= HOLD_FLAG
        frame = task.frame
        if len(frame) < SMALL_FRAME:  # one buffer: cheaper than a gathered write
            self.send(worker, CHANNEL.pack(seq, len(frame)) + frame)
        else:
            self.send(worker, CHANNEL.pack(seq, len(frame)), frame)

    # -- connections ---------------------------------------------------------------------

    accept_paused = 0.0  # while the listener rests: until when (see ``housekeeping``)
    accept_failures = 0  # accepts failed in a row (logged at the first and when it ends)
    turned_away = 0  # connections turned away since that was last logged
    turned_away_logged = 0.0

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE, ENFILE) or memory: the connection stays in the
                # backlog, and the listener would be ready again at once. It rests instead.
                self.accept_paused = time.monotonic() + ACCEPT_BACKOFF
                self.poller.unregister(self.listener.fileno())
                if not self.accept_failures:
                    log("accept failed: %s; trying again every %g s" % (exc, ACCEPT_BACKOFF))
                self.accept_failures += 1
                return
            if self.accept_failures:
                log("accepting connections again (%d attempts failed)" % self.accept_failures)
                self.accept_failures = 0
            pending = sum(1 for c in self.conns.values() if not c.authed)
            if pending >= MAX_PENDING_HANDSHAKES:
                self.turn_away(sock, pending)
                continue
            sock.setblocking(False)
            self.conn_count += 1
            conn = Conn(sock, self.conn_count)
            self.conns[conn.fd] = conn
            self.watch(conn)
            self.send(conn, wire.encode(self.hello(conn)))

    def turn_away(self, sock: socket.socket, pending: int) -> None:
        """Too many connections wait for their handshake: close this one at once."""
        self.stats["refused"] += 1
        self.turned_away += 1
        now = time.monotonic()
        if now - self.turned_away_logged >= 1.0:  # (logged before the client hears of it)
            log("turned away %d connection(s): %d already wait for the handshake"
                % (self.turned_away, pending))
            self.turned_away, self.turned_away_logged = 0, now
        try:
            sock.setblocking(False)
            sock.send(wire.encode({"op": "refused", "reason": "too many connections waiting "
                                   "for the handshake (%d)" % pending}))
        except OSError:
            pass
        sock.close()

    def hello(self, conn: Conn) -> dict:
        return {"op": "hello", "proto": wire.PROTOCOL_VERSION, "version": self.version,
                "code": self.code_id, "python": "%d.%d.%d" % sys.version_info[:3],
                "executable": sys.executable, "pid": self.pid, "slots": self.slots,
                "node": self.name, "nonce": conn.nonce, "host": socket.gethostname()}

    def read_conn(self, conn: Conn) -> None:
        try:
            decoder = conn.decoder
            if conn.authed or not isinstance(conn.sock, socket.socket):
                chunk = conn.sock.recv(RECV_SIZE if decoder.idle()
                                       else max(RECV_SIZE, min(decoder.wanted(), RECV_SIZE_MAX)))
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
            messages = conn.decoder.feed(chunk)
        except wire.FrameError as exc:
            self.stats["refused"] += 1
            self.close_conn(conn, "garbage on the socket: %s" % exc)
            return
        for head, payload, raw in messages:
            if conn.closed:
                return
            try:
                if conn.authed:
                    self.handle(conn, head, raw)
                else:
                    self.authenticate(conn, head)
            except Exception as exc:  # noqa: BLE001 - a bug in one handler ends one connection
                self.internal_error(conn, head, exc)
                return
        self.dispatch()

    def internal_error(self, conn: Conn, head: dict, exc: Exception) -> None:
        """The last resort: handling a message raised. That connection ends, logged with
        the reason and where it came from; the node and every other connection go on."""
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = "internal error handling %r: %s: %s (%s line %d)" % (
            head.get("op"), type(exc).__name__, exc, os.path.basename(where.filename), where.lineno)
        try:
            self.close_conn(conn, reason)
        except Exception as again:  # noqa: BLE001
            log("%s: %s; closing it failed too: %r" % (conn.label, reason, again))

    def authenticate(self, conn: Conn, head: dict) -> None:
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
        client_nonce = head["nonce"]
        expected = wire.client_mac(self.cookie, conn.nonce, client_nonce)
        if not wire.macs_equal(head["mac"], expected):
            self.refuse(conn, "wrong cookie: this client belongs to another cluster")
            return
        conn.authed = True
        conn.decoder.max_payload = self.max_payload
        heartbeat = head.get("heartbeat")
        if heartbeat:
            conn.heartbeat = float(heartbeat)
        self.send(conn, wire.encode({"op": "welcome",
                                     "mac": wire.node_mac(self.cookie, conn.nonce, client_nonce)}))

    def splice(self, conn: Conn) -> None:
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
        self.unwatch(conn)
        conn.closed = True  # (its queued greeting is dropped: the greeting goes to the channel)
        stream = PipeStream(rfd, wfd, conn.sock)
        try:
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)
            self.conn_count += 1
            spliced = Conn(stream, self.conn_count)
            spliced.label = "connection %d (ssh channel)" % self.conn_count
            self.conns[spliced.fd] = spliced
            self.watch(spliced)
        except OSError as exc:
            self.conns.pop(rfd, None)
            self.endpoints.pop(rfd, None)
            stream.close()
            log("%s: cannot use the passed channel: %s" % (conn.label, exc))
            return
        self.send(spliced, wire.encode(self.hello(spliced)))

    def refuse(self, conn: Conn, reason: str) -> None:
        self.stats["refused"] += 1
        self.send(conn, wire.encode({"op": "refused", "reason": reason}))
        self.flush_blocking(conn)
        self.close_conn(conn, "refused: " + reason)

    def handle(self, conn: Conn, head: dict, raw: bytes) -> None:
        """One message from an authenticated controller: checked against ``ops.NODE_TAKES``
        (a malformed one ends the connection), then handed to its handler."""
        op = head["op"]
        handler = self.HANDLERS.get(op)
        if handler is None:
            task_id = head.get("id")
            self.send(conn, wire.encode({"op": "error", "id": task_id if ops.REQUEST_ID.test(task_id)
                                         else None, "message": "unknown operation %r" % op[:64]}))
            return
        problem = ops.check(head, ops.NODE_TAKES)
        if problem is not None:
            self.refuse(conn, problem)
            return
        handler(self, conn, head, raw)

    def handle_task(self, conn: Conn, head: dict, raw: bytes) -> None:  # call, map
        task_id = head["id"]
        key = head.get("fk")
        if key is not None and key not in conn.functions:
            self.send(conn, wire.encode(ops.error_head(
                "protocol", task_id, "ProtocolError", "function %s was not defined" % key, self.name)))
            return
        self.seq += 1
        task = Task(self.seq, conn, task_id, raw, key, head["op"] == "map")
        self.tasks_by_seq[task.seq] = task
        conn.tasks[task_id] = task
        self.queue.append(task)

    def handle_defn(self, conn: Conn, head: dict, raw: bytes) -> None:
        conn.functions[head["key"]] = raw

    def handle_ping(self, conn: Conn, head: dict, raw: bytes) -> None:
        self.send(conn, wire.encode(self.pong(head)))

    def handle_cancel(self, conn: Conn, head: dict, raw: bytes) -> None:
        self.cancel(conn, head["id"])

    def handle_stop(self, conn: Conn, head: dict, raw: bytes) -> None:
        log("stop requested by %s" % conn.label)
        self.send(conn, wire.encode({"op": "stopping", "id": head.get("id"), "pid": self.pid}))
        self.stopping = True

    HANDLERS = {"call": handle_task, "map": handle_task, "defn": handle_defn,
                "ping": handle_ping, "cancel": handle_cancel, "stop": handle_stop}

    def pong(self, head: dict) -> dict:
        try:
            load = list(os.getloadavg())
        except OSError:
            load = None
        running = sum(1 for w in self.workers if w.assigned)
        now = time.time()
        return {"op": "pong", "id": head.get("id"), "time": now, "load": load,
                "running": running, "queued": len(self.queue), "slots": self.slots,
                "pid": self.pid, "uptime": now - self.started, "stats": self.stats,
                "cpus": self.cpus}

    def cancel(self, conn: Conn, task_id) -> None:
        """Cancel a task: one still queued is taken out, one running is killed with its
        worker, and one handed ahead to a busy worker is dropped: the worker skips it (see
        ``drop``). Then the controller is told; the cancelled task never starts after that
        (one whose start raced with the cancel is killed as soon as the node sees it)."""
        task = conn.tasks.pop(task_id, None)
        if task is None:
            return
        task.cancelled = True
        worker = task.worker
        if worker is None:
            try:
                self.queue.remove(task)
            except ValueError:
                pass
            self.tasks_by_seq.pop(task.seq, None)
        elif worker.closed:  # its worker crashed running it and is not reaped yet
            if worker.failing is task:
                worker.failing = None
            if not task.failed:
                self.finish_failed(task, "", worker)
            return
        else:  # results it sent already may be unread: with them in, is it still running?
            while not worker.closed and task.worker is worker and self.read_worker(worker):
                pass
            if task.failed:  # the worker crashed meanwhile, and that answered for it
                return
            if task.worker is worker and not worker.closed:
                if worker.assigned[0] is task:
                    self.replace_worker(worker, "was killed to cancel its task")
                    return
                self.drop(worker, task)
                self.flush(worker)  # (the worker has the word before the controller does)
        self.send(conn, wire.encode(ops.error_head("cancelled", task_id, "Cancelled", "cancelled",
                                                   self.name)))

    def drop(self, worker: WorkerSlot, task: Task) -> None:
        """Tell a worker to skip a task it was handed ahead (see ``worker.DROP_FLAG``)."""
        task.dropping = True
        self.send(worker, CHANNEL.pack(task.seq | DROP_FLAG, 0))

    def close_conn(self, conn: Conn, reason: str, quiet: bool = False) -> None:
        if conn.closed:
            return
        if not quiet:
            log("%s closed: %s" % (conn.label, reason))
        conn.closed = True
        self.conns.pop(conn.fd, None)
        self.unwatch(conn)
        conn.sock.close()
        for fd in conn.fds:
            os.close(fd)
        conn.fds = []
        # the connection's work goes with it
        for task in list(conn.tasks.values()):
            task.cancelled = True
            if task.worker is None:
                self.tasks_by_seq.pop(task.seq, None)
        if any(t.worker is None for t in conn.tasks.values()):
            self.queue = deque(t for t in self.queue if not t.conn.closed)
        conn.tasks.clear()
        if self.stopping:
            return
        for worker in list(self.workers):
            if not worker.assigned or worker.closed:
                continue
            if worker.assigned[0].conn is conn:
                self.replace_worker(worker, "was killed: its controller went away")
                continue
            dropped = False
            for task in worker.assigned:
                if task.conn is conn and not task.dropping:
                    self.drop(worker, task)
                    dropped = True
            if dropped:
                self.flush(worker)

    # -- output --------------------------------------------------------------------------

    def send(self, ep: Endpoint, *parts) -> None:
        """Queue output for ``ep``; it is written at the end of the loop's turn, so what
        one turn sends to one endpoint (several results, tasks) costs one write."""
        if ep.closed:
            return
        ep.out.extend(parts)
        if not ep.dirty and not ep.writing:
            ep.dirty = True
            self.dirty.append(ep)

    def write_dirty(self) -> None:
        """Write what this turn queued; what the socket does not take waits for POLLOUT."""
        while self.dirty:
            dirty, self.dirty = self.dirty, []
            for ep in dirty:  # (a failed write may queue more: the loop takes it too)
                ep.dirty = False
                if not ep.closed:
                    self.flush(ep)

    def flush(self, ep: Endpoint) -> None:
        """The socket is writable: push out what is queued."""
        out = ep.out
        while out:
            try:
                if len(out) == 1:
                    sent = ep.sock.send(out[0])
                else:
                    sent = ep.sock.sendmsg([out[i] for i in range(min(len(out), SENDMSG_PARTS))])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.write_failed(ep, exc)
                return
            while sent:
                first = out[0]
                if sent >= len(first):
                    sent -= len(first)
                    out.popleft()
                else:
                    out[0] = memoryview(first)[sent:]
                    sent = 0
        self.want_write(ep, bool(out))

    def want_write(self, ep: Endpoint, want: bool) -> None:
        if want != ep.writing and not ep.closed:
            ep.writing = want
            if ep.wfd == ep.fd:
                self.poller.modify(ep.fd, READ | WRITE if want else READ)
            elif want:
                self.endpoints[ep.wfd] = ep
                self.poller.register(ep.wfd, WRITE)
            else:
                self.endpoints.pop(ep.wfd, None)
                self.poller.unregister(ep.wfd)

    def write_failed(self, ep: Endpoint, exc: OSError) -> None:
        ep.out.clear()
        if ep.is_worker:
            self.replace_worker(ep)
        else:
            self.close_conn(ep, "write failed: %s" % exc)

    def flush_blocking(self, ep: Endpoint, timeout: float = 1.0) -> None:
        """Push out what is queued (a refusal, a goodbye) before closing."""
        deadline = time.monotonic() + timeout
        if ep.dirty:
            ep.dirty = False
            self.dirty.remove(ep)
        while ep.out and not ep.closed and time.monotonic() < deadline:
            self.flush(ep)
            if ep.out:
                time.sleep(0.005)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        return "was killed by %s" % name
    return "exited with status %d" % os.WEXITSTATUS(status)


# -- start-up ----------------------------------------------------------------------------

def bind_socket(path: str) -> socket.socket | None:
    """Listen on ``path``; None if a live node already answers there."""
    if len(path.encode()) > SOCKET_PATH_MAX:
        raise RuntimeError("socket path %s is longer than %d bytes; set XDG_RUNTIME_DIR to a "
                           "shorter directory" % (path, SOCKET_PATH_MAX))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            sock.close()
            raise RuntimeError("cannot bind %s: %s" % (path, exc.strerror)) from None
        try:
            boot.check_socket(path)  # never connect to another user's socket
        except RuntimeError:
            sock.close()
            raise
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(2.0)
            probe.connect(path)
            sock.close()
            return None
        except OSError:
            os.unlink(path)  # a stale socket from a node that died
            sock.bind(path)
        finally:
            probe.close()
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def handshake_timeout() -> float:
    """``wire.HANDSHAKE_TIMEOUT``, or the positive number of seconds in the environment."""
    try:
        value = float(os.environ.get(HANDSHAKE_TIMEOUT_ENV, ""))
    except ValueError:
        return wire.HANDSHAKE_TIMEOUT
    return value if value > 0 else wire.HANDSHAKE_TIMEOUT


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clusterctl-node")
    parser.add_argument("--name", required=True)
    parser.add_argument("--slots", type=int, default=0)
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--version", default="unknown")
    parser.add_argument("--code-id", default="unknown")
    parser.add_argument("--max-payload", type=int, default=wire.DEFAULT_MAX_PAYLOAD)
    parser.add_argument("--foreground", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = sys.stdout
    try:
        cookie_hex = sys.stdin.readline().strip()
        cookie = bytes.fromhex(cookie_hex)
        if len(cookie) < 16:
            raise ValueError
    except ValueError:
        out.write("error: no valid cookie on standard input\n")
        out.flush()
        sys.exit(1)
    directory = args.run_dir or run_dir()
    try:
        ensure_private_dir(directory)
        path = socket_path(directory, args.name)
        listener = bind_socket(path)
    except RuntimeError as exc:
        out.write("error: %s\n" % exc)
        out.flush()
        sys.exit(1)
    if listener is None:
        out.write("running\n")
        out.flush()
        sys.exit(0)
    slots = args.slots if args.slots > 0 else (os.cpu_count() or 1)
    log_path = path[:-len(".sock")] + ".log"
    if not args.foreground:
        pid = os.fork()
        if pid:
            out.write("ready %d\n" % pid)
            out.flush()
            os._exit(0)
        os.setsid()
    global _log_path
    try:
        if os.path.exists(log_path) and os.path.getsize(log_path) > LOG_BYTES:
            os.replace(log_path, log_path + ".1")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(devnull)
        os.close(log_fd)
        _log_path = log_path  # kept under LOG_BYTES while the node runs
    except OSError:
        pass
    with open(path[:-len(".sock")] + ".pid", "w") as fh:
        fh.write(str(os.getpid()))
    os.chdir(os.path.expanduser("~"))
    node = Node(name=args.name, slots=slots, listener=listener, cookie=cookie, idle=args.idle,
                version=args.version, code_id=args.code_id, max_payload=args.max_payload,
                sock_path=path, handshake_timeout=handshake_timeout())

    def on_term(signum, frame):  # noqa: ARG001
        node.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    node.serve()
    os._exit(0)


if __name__ == "__main__":
    main()
