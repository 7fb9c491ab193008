"""The node: a detached daemon that owns a unix socket and a pool of worker processes.

Run on a host as ``python -c "... from clusterctl_node.daemon.node import main; main()"``.
``CLUSTERCTL_HANDSHAKE_TIMEOUT`` (seconds) in its environment overrides
``wire.HANDSHAKE_TIMEOUT``. See docs/how-it-works.md, sections "Starting the node
process", "Inside a node" and "Cancellation, crashes and kills".
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import time

from .. import boot, wire
from ..processes.runtime import alias_modules
from ..restricted import policy as policies
from ..restricted.worker import plain_worker_main
from ..workers.worker import worker_main
from ..processes.part import Processes
from ..log import bound_log, log, redirect_to
from ..loop import POLL_SECONDS, Loop
from ..workers.pool import Pool
from ..workers.envs import Environments
from ..workers.tasks import Tasks
from .sessions import Door, Gate, Identity, Sessions

HOUSEKEEPING_INTERVAL = 0.5
DEFAULT_IDLE = wire.DEFAULT_IDLE
HANDSHAKE_TIMEOUT_ENV = "CLUSTERCTL_HANDSHAKE_TIMEOUT"
SOCKET_PATH_MAX = 107


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


BIND_LOCK_SECONDS = 10.0  # how long a starting node waits for another's bind and listen


def socket_path(directory: str, name: str) -> str:
    return boot.socket_path(directory, name)


# -- the node ----------------------------------------------------------------------------


def worker_child(policy):
    """What a worker slot's forked child runs: a restricted node's plain worker, which
    calls only what ``policy`` allows; else a worker that runs any task, whose code may
    import ``clusterctl.actor`` as a spawned process's does."""
    if policy is not None:
        return lambda sock, name, parent: plain_worker_main(sock, name, parent, policy)

    def ordinary(sock, name: str, parent: int) -> None:
        alias_modules()
        worker_main(sock, name, parent)

    return ordinary

class Node:
    """The daemon as a whole: it puts together the loop (descriptors and writing), its
    parts (``part.Part``: the worker pool's tasks, the spawned processes) and the
    sessions (controller connections), and owns what belongs to none of them: the turns
    of the loop, housekeeping, exiting when idle, and the orderly stop that leaves no
    socket, pid file or worker behind."""

    def __init__(self, identity: Identity, listener: socket.socket, *, cookie: bytes,
                 idle: float, max_payload: int, sock_path: str,
                 handshake_timeout: float = wire.HANDSHAKE_TIMEOUT,
                 policy: policies.Policy | None = None) -> None:
        self.name = name = identity.name
        self.slots = identity.slots
        self.identity = identity
        self.policy = policy  # a restricted node's: checked for changes in housekeeping
        self.policy_seen = policies.fingerprint(policy.path) if policy is not None else None
        self.listener = listener
        self.idle = idle
        self.sock_path = sock_path
        self.sock_ino = os.stat(sock_path).st_ino
        self.pid = os.getpid()
        self.stopping = False
        self.last_busy = time.monotonic()
        self.stats = {"tasks": 0, "failed": 0, "worker_crashes": 0, "refused": 0, "rerun": 0}
        self.loop = Loop()
        self.pool = Pool(self.loop, name=name, max_payload=max_payload, stats=self.stats,
                         close_in_child=self.close_in_child, child_main=worker_child(policy),
                         policy=policy)
        self.processes = Processes(self.loop, name=name, stats=self.stats,
                                   close_in_child=self.close_in_child,
                                   ids_path=sock_path[:-len(".sock")] + ".ids")
        self.actors = self.processes.actors
        environments = Environments(self.loop, name)
        self.parts = [Tasks(self.pool, restricted=policy is not None), self.processes, environments]
        gate = None
        if policy is not None:  # a refused request is answered (a definition has no answer)
            gate = Gate(policy, self.loop, self.pool.queue, self.stats, name,
                        answered={"call", "map", *self.processes.handlers, *environments.handlers})
        door = Door(cookie, handshake_timeout, max_payload, gate)
        self.sessions = Sessions(self.loop, listener, self.parts, identity=identity, door=door,
                                 stats=self.stats, on_stop=self.stop)

    def stop(self) -> None:
        """Stop at the end of this turn of the loop (a stop request, SIGTERM, idleness)."""
        self.stopping = True
        for part in self.parts:
            part.stop()

    def close_in_child(self) -> None:
        """In a newly forked worker or process: let go of the node's poller, listener and
        connections, and of the other workers' and processes' channels."""
        self.loop.close_in_child()
        self.sessions.close_in_child()
        for part in self.parts:
            part.close_in_child()

    def serve(self) -> None:
        self.sessions.listen()
        self.pool.start(self.slots)
        log("node %s serving on %s with %d slots (version %s, code %s)"
            % (self.name, self.sock_path, self.slots, self.identity.version, self.identity.code_id))
        if self.policy is not None:
            log("restricted by the policy %s (sha256 %.12s): allows %s"
                % (self.policy.path, self.policy.digest, self.policy.summary()))
        turn = self.loop.turn
        timeout = HOUSEKEEPING_INTERVAL * POLL_SECONDS
        monotonic = time.monotonic
        next_housekeeping = monotonic() + HOUSEKEEPING_INTERVAL
        while not self.stopping:
            turn(timeout)
            now = monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_INTERVAL
                self.housekeeping(now)
        self.shutdown()

    def housekeeping(self, now: float) -> None:
        bound_log()  # (workers write to it too)
        self.sessions.housekeeping(now)
        if self.policy is not None and policies.fingerprint(self.policy.path) != self.policy_seen:
            log("the policy file %s changed: stopping (the next connection starts a node that "
                "reads it anew)" % self.policy.path)
            self.stop()
        for part in self.parts:
            part.housekeeping(now)
        if self.sessions.busy() or any(part.busy() for part in self.parts):
            self.last_busy = now
        elif now - self.last_busy > self.idle:
            log("idle for %.0f s with nothing to do: exiting" % self.idle)
            self.stop()

    def shutdown(self) -> None:
        self.sessions.close_all()
        for part in reversed(self.parts):  # (the processes before the workers)
            part.shutdown()
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


# -- start-up ----------------------------------------------------------------------------

def bind_socket(path: str, lock_path: str) -> socket.socket | None:
    """Listen on ``path``; None if a live node already answers there. Under an exclusive
    lock on ``lock_path``: between its bind and its listen a node's socket refuses
    connections, and a node starting at that moment took it for a dead node's, removed
    it and bound its own (two nodes of one name, one of them unreachable)."""
    if len(path.encode()) > SOCKET_PATH_MAX:
        raise RuntimeError("socket path %s is longer than %d bytes; set XDG_RUNTIME_DIR to a "
                           "shorter directory" % (path, SOCKET_PATH_MAX))
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        boot.lock_within(fd, time.monotonic() + BIND_LOCK_SECONDS, lock_path)
        return _bind_socket(path)
    finally:
        os.close(fd)  # (and with it the lock)


def _bind_socket(path: str) -> socket.socket | None:
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
    parser.add_argument("--policy", default=None, help="restricted: the owner's policy file")
    return parser.parse_args(argv)


def answer_and_exit(line: str, status: int) -> None:
    """Tell the one who started the node how it went (its one line on stdout), and exit."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    sys.exit(status)


def read_cookie() -> bytes:
    """The cluster's cookie, in hex on the first line of standard input."""
    try:
        cookie = bytes.fromhex(sys.stdin.readline().strip())
        if len(cookie) < 16:
            raise ValueError
    except ValueError:
        answer_and_exit("error: no valid cookie on standard input", 1)
    return cookie


def listen(args: argparse.Namespace) -> tuple[socket.socket, str]:
    """The node's listening socket and its path; exits if it cannot bind, or if a node
    runs there already (then it answers ``running``)."""
    directory = args.run_dir or run_dir()
    try:
        ensure_private_dir(directory)
        path = socket_path(directory, args.name)
        listener = bind_socket(path, lock_path=path[:-len(".sock")] + ".bind")
    except (RuntimeError, TimeoutError) as exc:
        answer_and_exit("error: %s" % exc, 1)
    if listener is None:
        answer_and_exit("running", 0)
    return listener, path


def detach() -> None:
    """Answer ``ready PID`` from the parent and go on in a child of a new session."""
    pid = os.fork()
    if pid:
        sys.stdout.write("ready %d\n" % pid)
        sys.stdout.flush()
        os._exit(0)
    os.setsid()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cookie = read_cookie()
    policy = None
    if args.policy is not None:
        try:
            policy = policies.load(args.policy)
        except policies.PolicyError as exc:
            answer_and_exit("error: %s" % exc, 1)
    listener, path = listen(args)
    slots = args.slots if args.slots > 0 else (os.cpu_count() or 1)
    if policy is not None:  # the owner's bound, whatever the controller asked for
        slots = min(slots, policy.max_slots())
    if not args.foreground:
        detach()
    redirect_to(path[:-len(".sock")] + ".log")
    with open(path[:-len(".sock")] + ".pid", "w") as fh:
        fh.write(str(os.getpid()))
    os.chdir(os.path.expanduser("~"))
    identity = Identity(args.name, slots, args.version, args.code_id)
    node = Node(identity, listener, cookie=cookie, idle=args.idle, max_payload=args.max_payload,
                sock_path=path, handshake_timeout=handshake_timeout(), policy=policy)

    def on_term(signum, frame):  # noqa: ARG001
        node.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    node.serve()
    os._exit(0)


if __name__ == "__main__":
    main()
