"""Worker processes: forked, killed with their process group, reaped without waiting.

See docs/how-it-works.md, "Inside a node" and "Cancellation, crashes and kills".
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque

from ..log import log
from ..loop import Endpoint, Loop

EXIT_GRACE_SECONDS = 2.0  # a killed worker not gone by then is reported without its status
SHUTDOWN_REAP_SECONDS = 2.0  # how long a stopping node waits for its killed workers to exit


class Reaper(Endpoint):
    """A killed worker's pidfd in the poller: readable once the process has exited, so the
    node reaps it without waiting (see ``WorkerProcesses.reap``)."""

    __slots__ = ("worker",)

    def __init__(self, fd: int, worker, on_readable) -> None:
        super().__init__(None, on_readable, fd=fd)
        self.worker = worker


class Spawner(Endpoint):
    """Replacement workers are forked one a turn of the loop, so the loop answers everyone
    else in between (see ``WorkerProcesses.respawn``): a pipe in the poller that holds a
    byte (``armed``) while that needs a turn."""

    __slots__ = ("wfd_pipe", "waiting", "armed", "forked")

    def __init__(self, on_readable) -> None:
        rfd, self.wfd_pipe = os.pipe()
        for fd in (rfd, self.wfd_pipe):
            os.set_blocking(fd, False)
        super().__init__(None, on_readable, fd=rfd)
        self.waiting: deque = deque()  # slots of ended workers, to be forked again
        self.armed = False
        self.forked = False  # a worker was forked since the last turn of the spawner


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        return "was killed by %s" % name
    return "exited with status %d" % os.WEXITSTATUS(status)


class WorkerProcesses:
    """The process side of the worker slots, kept apart from the tasks they run: the loop
    never waits for a process, so a killed worker is reaped when its pidfd says it exited
    (or by housekeeping), and replacements are forked one a turn of the loop.

    It works on the pool's slots (``pid``, ``index``, ``sock``, ``closed``, ``ended``,
    ``crashed``, ``reaper``) and tells the pool through two callbacks: ``on_exit(slot,
    how)`` once a killed worker is reaped, ``on_refork(slot)`` when a replacement for an
    ended slot is due. ``close_in_child`` lets a new worker drop the node's descriptors."""

    def __init__(self, loop: Loop, *, name: str, close_in_child, on_exit, on_refork,
                 child_main) -> None:
        self.loop = loop
        self.child_main = child_main  # what a forked child runs: (channel, node name, node pid)
        self.name = name
        self.pid = os.getpid()
        self.close_in_child = close_in_child
        self.on_exit = on_exit
        self.on_refork = on_refork
        self.dying: dict[int, object] = {}  # pid -> a killed worker's slot, not reaped yet
        self.spawner: Spawner | None = None  # made when a worker first needs replacing
        self.stopping = False  # no more forks: the node is stopping

    def fork(self, main=None) -> tuple[socket.socket, int]:
        """Start a process that runs ``main(channel, node name, node pid)`` (by default
        ``child_main``, which the node chose: a worker, or a restricted node's plain
        one); the node's end of its channel (non-blocking) and its pid."""
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the child: keep only its channel and stdio
            try:
                ours.close()
                self.close_in_child()
                for worker in self.dying.values():
                    if worker.reaper is not None:
                        os.close(worker.reaper.fd)
                if self.spawner is not None:
                    os.close(self.spawner.fd)
                    os.close(self.spawner.wfd_pipe)
            finally:
                (main or self.child_main)(theirs, self.name, self.pid)  # (never returns)
        try:  # its own process group (it does so too: whichever comes first)
            os.setpgid(pid, pid)
        except OSError:
            pass
        theirs.close()
        ours.setblocking(False)
        return ours, pid

    def end(self, worker) -> str | None:
        """Kill a worker with its process group (what its tasks started goes with it) and
        reap it if it has exited; return how it ended, or None if it has not exited yet:
        then it is reaped later (``reap``), for the loop never waits for a process."""
        if worker.ended:
            return None
        worker.ended = time.monotonic()
        if not worker.closed:
            worker.closed = True
            self.loop.unwatch(worker)
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
            reaper = Reaper(os.pidfd_open(worker.pid), worker, self.reaped)
        except (AttributeError, OSError):  # no pidfd here: housekeeping reaps it
            return None
        worker.reaper = reaper
        self.loop.watch(reaper)
        return None

    def reaped(self, reaper: Reaper) -> None:
        """A killed worker's pidfd is readable: it has exited."""
        self.reap(reaper.worker)

    def reap(self, worker) -> bool:
        """Collect a killed worker's exit status if it has exited; True once reaped."""
        try:
            pid, status = os.waitpid(worker.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = worker.pid, None
        if not pid:
            return False
        self.forget_dying(worker)
        self.on_exit(worker, "is gone" if status is None else describe_status(status))
        return True

    def reap_dying(self, now: float) -> None:
        """Housekeeping: reap killed workers; answer for one stuck in the kernel."""
        for worker in list(self.dying.values()):
            if not self.reap(worker) and worker.crashed \
                    and now - worker.ended > EXIT_GRACE_SECONDS:
                self.on_exit(worker, "did not exit when it was killed")

    def forget_dying(self, worker) -> None:
        self.dying.pop(worker.pid, None)
        reaper, worker.reaper = worker.reaper, None
        if reaper is not None:
            self.loop.unwatch(reaper)
            os.close(reaper.fd)

    def reap_all(self) -> None:
        """The node is stopping and its workers are killed: they exit at once, unless stuck
        in the kernel; wait for them a little, then give up on them."""
        deadline = time.monotonic() + SHUTDOWN_REAP_SECONDS
        while self.dying:
            for worker in list(self.dying.values()):
                self.reap(worker)
            if not self.dying or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        for worker in list(self.dying.values()):
            log("worker %d (pid %d) had not exited %g s after it was killed"
                % (worker.index, worker.pid, SHUTDOWN_REAP_SECONDS))
            self.forget_dying(worker)

    # -- replacements, one a turn of the loop ----------------------------------------------

    def respawn(self, worker) -> None:
        """Fork a replacement for an ended worker: at once, unless one was forked this turn
        of the loop already; then on a later turn (a fork takes milliseconds on a busy
        host, and killing 64 busy workers must not hold up everyone else's pings)."""
        spawner = self.spawner
        if spawner is None:
            spawner = self.spawner = Spawner(self.spawn_next)
            self.loop.watch(spawner)
        if spawner.forked:
            spawner.waiting.append(worker)
        else:
            self.fork_again(worker)
        if not spawner.armed:
            spawner.armed = True
            os.write(spawner.wfd_pipe, b"x")

    def fork_again(self, worker) -> None:
        self.spawner.forked = True
        self.on_refork(worker)

    def spawn_next(self, spawner: Spawner) -> None:
        """The spawner's turn: fork the next replacement, if one waits."""
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
