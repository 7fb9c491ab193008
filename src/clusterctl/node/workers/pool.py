"""The worker pool: tasks queued, handed to worker slots, answered, cancelled, rerun.

See docs/how-it-works.md, "Inside a node" and "Cancellation, crashes and kills".
"""

from __future__ import annotations

import socket
import time
from collections import OrderedDict, deque

from .. import ops, wire
from ..log import log
from ..loop import RECV_SIZE, RECV_SIZE_MAX, Endpoint, Loop
from .asks import Asks
from .forks import WorkerProcesses
from .channel import CHANNEL, DROP_FLAG, HOLD_FLAG, SEQ_MASK, WANT_SEQ

PIPELINE_DEPTH = 2  # tasks handed to one worker ahead, so it never waits for the node
FAST_PIPELINE_DEPTH = 8  # ... for a worker whose tasks take less than FAST_TASK_SECONDS,
FAST_TASK_SECONDS = 0.001  # so tiny tasks travel several to a write and a wake-up
WORKER_FUNCTION_CACHE = 256
SMALL_FRAME = 1 << 14
TASK_OVERHEAD = 512  # what a queued task holds besides its frame (its Task, its table entries)


NODE_SITUATION = wire.encode({"op": "situate"}, b"{}")  # the tasks' directory and environment: the node's


class Task:
    """One call or map chunk from a controller, from its arrival until it is answered."""

    __slots__ = ("seq", "conn", "id", "frame", "fk", "worker", "cancelled", "is_map", "held",
                 "suspect", "failed", "dropping", "arrived", "handed")

    def __init__(self, seq: int, conn, task_id, frame: bytes, fk, is_map: bool) -> None:
        self.seq = seq
        self.conn = conn  # its connection: ``tasks``, ``functions`` and ``closed`` are read here
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
        self.arrived = self.handed = 0.0  # when it came and went to a worker (traced only)


class TaskQueue(deque):
    """The tasks waiting for a slot, and the bytes they hold (``size`` each), which a
    restricted node bounds (its policy's ``queue``, see ``full``)."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.bytes = 0

    @staticmethod
    def size(task: Task) -> int:
        return len(task.frame) + TASK_OVERHEAD

    def full(self, size: int) -> bool:
        """Whether a task of ``size`` bytes would take the queue past its bound. One is
        always taken while none waits, so any call within the payload bound gets in."""
        return self.limit is not None and bool(self) and self.bytes + size + TASK_OVERHEAD > self.limit

    def append(self, task: Task) -> None:
        super().append(task)
        self.bytes += self.size(task)

    def appendleft(self, task: Task) -> None:
        super().appendleft(task)
        self.bytes += self.size(task)

    def popleft(self) -> Task:
        task = super().popleft()
        self.bytes -= self.size(task)
        return task

    def remove(self, task: Task) -> None:
        super().remove(task)
        self.bytes -= self.size(task)

    def keep(self, wanted) -> None:
        """Keep only the tasks ``wanted(task)`` is true of."""
        kept = [t for t in self if wanted(t)]
        self.clear()
        self.bytes = 0
        for task in kept:
            self.append(task)


class WorkerSlot(Endpoint):
    """The node's end of one worker process: the tasks handed to it, in order, and the
    functions it has been sent."""

    __slots__ = ("pid", "inbox", "assigned", "functions", "index", "depth", "pace",
                 "last_result", "ended", "crashed", "failing", "reaper", "free_at", "situation")

    def __init__(self, sock: socket.socket, pid: int, index: int, on_readable, on_broken) -> None:
        super().__init__(sock, on_readable, on_broken)
        self.pid = pid
        self.index = index
        self.inbox = bytearray()
        self.assigned: deque = deque()
        self.functions: OrderedDict = OrderedDict()
        self.situation: bytes | None = None  # the ``situate`` frame it was sent last
        self.depth = PIPELINE_DEPTH  # tasks it may hold (see ``paced``)
        self.pace: float | None = None  # seconds per result while busy, smoothed
        self.last_result: float | None = None  # when it last answered, if it had more to do
        self.ended = 0.0  # when it was killed (see ``WorkerProcesses.end``)
        self.crashed = False  # it crashed and is not reaped yet: its end is reported then
        self.failing: Task | None = None  # ... and the task it crashed in answered
        self.reaper = None  # its pidfd in the poller while it is dying
        self.free_at = 0.0  # when it last finished a traced task

    def prepare(self, task: "Task", send) -> None:
        """Before a task: its controller's situation (``situate``: the tasks' directory and
        environment; the node's own for one that sent none) and its function, each sent
        if this worker lacks it."""
        situation = task.conn.situation
        if situation is not self.situation:
            self.situation = situation
            frame = situation or NODE_SITUATION
            send(self, CHANNEL.pack(0, len(frame)), frame)
        if task.fk is not None:
            self.teach(task.fk, task.conn.functions, send)

    def teach(self, key: str, definitions: dict, send) -> None:
        """Before a task that calls function ``key``: send its definition if this worker
        does not have that one (a definition of the same key naming other packages, a
        shipped environment, is sent again), and past the cache size, a word to forget
        the oldest one."""
        functions = self.functions
        definition = definitions[key]
        known = functions.get(key)
        if known is definition or (known is not None and known == definition):
            functions[key] = definition  # (the same, from another connection: kept by identity)
            functions.move_to_end(key)
            return
        functions[key] = definition  # (new, or the same function needing other packages)
        functions.move_to_end(key)
        send(self, CHANNEL.pack(0, len(definition)), definition)
        if len(functions) > WORKER_FUNCTION_CACHE:
            old, _ = functions.popitem(last=False)
            forget = wire.encode({"op": "forget", "key": old})
            send(self, CHANNEL.pack(0, len(forget)) + forget)

    def paced(self, now: float, results: int) -> None:
        """Learn how fast this worker answers, and hold more tasks ahead for a fast one."""
        if self.last_result is not None:
            sample = (now - self.last_result) / results
            self.pace = sample if self.pace is None else 0.7 * self.pace + 0.3 * sample
            self.depth = FAST_PIPELINE_DEPTH if self.pace < FAST_TASK_SECONDS else PIPELINE_DEPTH
        self.last_result = now if self.assigned else None


class Pool:
    """Runs the controllers' tasks on the worker slots: a queue, a pipeline per worker, the
    answers sent back on each task's connection, and what a crash, a cancel or a closed
    connection does to the tasks in flight. Forking, killing and reaping the processes is
    ``WorkerProcesses``'s; sending is the loop's."""

    def __init__(self, loop: Loop, *, name: str, max_payload: int, stats: dict,
                 close_in_child, child_main, policy=None) -> None:
        self.loop = loop
        self.name = name
        self.max_payload = max_payload
        self.stats = stats
        self.close_node_in_child = close_in_child
        self.processes = WorkerProcesses(loop, name=name, close_in_child=self.close_in_child,
                                         on_exit=self.worker_ended, on_refork=self.fork_again,
                                         child_main=child_main)
        self.workers: list[WorkerSlot] = []
        self.queue = TaskQueue(policy.max_queued() if policy is not None else None)
        self.tasks_by_seq: dict[int, Task] = {}
        self.seq = 0
        self.asks = Asks(loop)  # what running tasks import that the host lacks

    @property
    def stopping(self) -> bool:
        return self.processes.stopping

    def start(self, slots: int) -> None:
        for index in range(slots):
            self.workers.append(self.spawn_worker(index))

    def stop(self) -> None:
        """The node is stopping: ended workers are not replaced from now on."""
        self.processes.stopping = True

    def shutdown(self) -> None:
        """Kill every worker and reap them (waiting a little, at the very end only)."""
        for worker in self.workers:
            self.processes.end(worker)
        self.workers = []
        self.processes.reap_all()

    def busy(self) -> bool:
        return bool(self.tasks_by_seq)

    def running(self) -> int:
        return sum(1 for w in self.workers if w.assigned)

    # -- worker slots --------------------------------------------------------------------

    def spawn_worker(self, index: int) -> WorkerSlot:
        sock, pid = self.processes.fork()
        worker = WorkerSlot(sock, pid, index, self.read_worker, self.worker_broken)
        self.loop.watch(worker)
        return worker

    def close_in_child(self) -> None:
        """In a new worker: close the node's descriptors, the other workers' channels too."""
        self.close_node_in_child()
        for worker in self.workers:
            worker.sock.close()

    def fork_again(self, worker: WorkerSlot) -> None:
        self.workers[self.workers.index(worker)] = self.spawn_worker(worker.index)
        self.dispatch()

    def worker_broken(self, worker: WorkerSlot, reason: str) -> None:  # noqa: ARG002
        """Writing to a worker failed: it is taken for crashed."""
        self.replace_worker(worker)

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
        how = self.processes.end(worker)
        running = self.take_back(worker, crashed=reason is None)
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
            self.processes.respawn(worker)

    def take_back(self, worker: WorkerSlot, crashed: bool) -> Task | None:
        """An ended worker's tasks: those waiting go back to the front of the queue; the
        one it was running is returned, to be answered as failed."""
        assigned = list(worker.assigned)
        worker.assigned.clear()
        if not assigned:
            return None
        running, waiting = assigned[0], assigned[1:]
        if crashed and running.held:
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
        return running

    def finish_failed(self, task: Task, how: str, worker: WorkerSlot) -> None:
        task.failed = True
        self.tasks_by_seq.pop(task.seq, None)
        conn = task.conn
        if conn.tasks.get(task.id) is task:
            del conn.tasks[task.id]
        if conn.closed or task.dropping:  # (a dropped task was answered when it was cancelled)
            return
        if conn.recorder is not None:
            trace(task, worker, 0, "cancelled" if task.cancelled else "crashed")
        if task.cancelled:
            head = ops.error_head("cancelled", task.id, "Cancelled", "cancelled while running",
                                  self.name)
        else:
            self.stats["failed"] += 1
            head = ops.error_head("crashed", task.id, "WorkerCrashed",
                                  "worker process %d %s while running this task; it was replaced"
                                  % (worker.pid, how), self.name)
        self.loop.send(conn, wire.encode(head))

    # -- results -------------------------------------------------------------------------

    def read_worker(self, worker: WorkerSlot) -> bool:
        """Take in what a worker sent; False if there was nothing to read."""
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
        results = split_channel(inbox, chunk)
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
        if seq == WANT_SEQ:  # (no result: its task asks for a module, or says what it
            return self.asks.from_worker(worker, frame)  # printed: workers/asks.py)
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
        if conn.recorder is not None:
            trace(task, worker, len(frame), "ok")
        if task.cancelled or conn.closed:
            return
        conn.tasks.pop(task.id, None)
        if len(frame) > self.max_payload:
            too_large = oversized_result(task, frame, self.max_payload, self.name)
            if too_large is not None:
                self.stats["failed"] += 1
                frame = too_large
        self.loop.send(conn, frame)

    # -- tasks ---------------------------------------------------------------------------

    def submit(self, conn, task_id, frame: bytes, key, is_map: bool) -> Task:
        """Queue a task (handed to a worker by the next ``dispatch``)."""
        self.seq += 1
        task = Task(self.seq, conn, task_id, frame, key, is_map)
        if conn.recorder is not None:
            task.arrived = time.monotonic()
        self.tasks_by_seq[task.seq] = task
        self.queue.append(task)
        return task

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
        send = self.loop.send
        worker.prepare(task, send)
        task.worker = worker
        worker.assigned.append(task)
        if task.conn.recorder is not None:
            task.handed = time.monotonic()
        seq = task.seq
        if worker.depth > PIPELINE_DEPTH and task.is_map and not task.suspect:
            task.held = True  # a tiny pmap chunk: its reply may travel with the next ones
            seq |= HOLD_FLAG
        frame = task.frame
        if len(frame) < SMALL_FRAME:  # one buffer: cheaper than a gathered write
            send(worker, CHANNEL.pack(seq, len(frame)) + frame)
        else:
            send(worker, CHANNEL.pack(seq, len(frame)), frame)

    def cancel(self, task: Task) -> bool:
        """Cancel a task: one still queued is taken out, one running is killed with its
        worker, and one handed ahead to a busy worker is dropped: the worker skips it (see
        ``drop``). True if the controller is to be told it was cancelled (otherwise it was
        answered already); the cancelled task never starts after that (one whose start
        raced with the cancel is killed as soon as the node sees it)."""
        task.cancelled = True
        worker = task.worker
        if worker is None:
            if task in self.queue:
                self.queue.remove(task)
            self.tasks_by_seq.pop(task.seq, None)
        elif worker.closed:  # its worker crashed running it and is not reaped yet
            if worker.failing is task:
                worker.failing = None
            if not task.failed:
                self.finish_failed(task, "", worker)
            return False
        else:  # results it sent already may be unread: with them in, is it still running?
            while not worker.closed and task.worker is worker and self.read_worker(worker):
                pass
            if task.failed:  # the worker crashed meanwhile, and that answered for it
                return False
            if task.worker is worker and not worker.closed:
                if worker.assigned[0] is task:
                    self.replace_worker(worker, "was killed to cancel its task")
                    return False
                drop(self.loop, worker, task)
                self.loop.flush(worker)  # (the worker has the word before the controller does)
        return True

    def connection_gone(self, conn) -> None:
        """A connection closed: its work goes with it. Queued tasks are forgotten, a worker
        running one is killed, and ones handed ahead are dropped."""
        for task in list(conn.tasks.values()):
            task.cancelled = True
            if task.worker is None:
                self.tasks_by_seq.pop(task.seq, None)
        if any(t.worker is None for t in conn.tasks.values()):
            self.queue.keep(lambda t: not t.conn.closed)
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
                    drop(self.loop, worker, task)
                    dropped = True
            if dropped:
                self.loop.flush(worker)


def oversized_result(task: Task, frame, max_payload: int, name: str) -> bytes | None:
    """A result over the frame limit becomes an error (the controller would refuse it):
    that error's frame, or None if the result fits."""
    head_len, payload_len = wire.check_header(frame[:wire.HEADER_SIZE], 1 << 62)
    if payload_len <= max_payload:
        return None
    return wire.encode(ops.error_head(
        "result", task.id, "ResultTooLarge",
        "the pickled result is %d bytes, over the frame limit of %d bytes"
        % (payload_len, max_payload), name))


def split_channel(inbox: bytearray, chunk: bytes) -> list:
    """The whole frames in what came from a worker (``inbox`` holds what was left of the
    last read; it keeps what is left of this one): ``(seq, frame)`` each. Frames are
    slices of ``chunk`` when nothing was left over; what comes out of the inbox is copied."""
    header = CHANNEL.size
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
        results.append((seq, view[pos + header:end] if data is chunk
                        else bytes(view[pos + header:end])))
        pos = end
    if data is inbox:
        view.release()
        del inbox[:pos]
    elif pos < size:
        inbox += view[pos:]
    return results


def drop(loop: Loop, worker: WorkerSlot, task: Task) -> None:
    """Tell a worker to skip a task it was handed ahead (see ``worker.DROP_FLAG``)."""
    task.dropping = True
    loop.send(worker, CHANNEL.pack(task.seq | DROP_FLAG, 0))


def trace(task: Task, worker: WorkerSlot, nbytes: int, how: str) -> None:
    """Record a task that ended in its connection's trace (``tracing``)."""
    now = time.monotonic()
    started = max(task.handed, worker.free_at) if task.handed else now
    worker.free_at = now
    task.conn.recorder.add(["task", task.id, worker.index, task.arrived or started, started, now,
                            len(task.frame), nbytes, how])

