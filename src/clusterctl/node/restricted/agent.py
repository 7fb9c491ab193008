"""The restricted agent: what sshd runs for a controller's key on a host whose owner
restricts it (Erlang's lib_chan, held by the host).

The owner installs clusterctl on the host and puts this before the controller's key in
``authorized_keys``::

    command="/opt/clusterctl/bin/clusterctl-agent --policy /etc/clusterctl/policy",restrict ssh-ed25519 AAAA...

Whatever the controller asks sshd to run, sshd runs this instead. It speaks the boot
conversation of ``boot.py`` (docs/how-it-works.md, "Booting a node over SSH") without
running any of it: the boot source the controller sends is read and thrown away, no
code is taken, and the node it starts (or reaches) is this installation's own, in
restricted mode (``daemon/node.py --policy``): its workers call only the functions the
policy allows, by name, with plain data (``plain.py``), and nothing it receives is
unpickled. A restricted node's socket and log are in ``restricted/`` of the run
directory, apart from the nodes other controllers ship, so a channel that came in
through this agent reaches only a restricted node. Any other use of the key (a shell,
``ssh host id``) is refused with one line.

A node binds the policy it was started with, so the agent reaches a running node only if
that node enforces this very policy: the node's greeting names its file and the sha256
of the bytes it read, and a node under another file (the owner pointed the forced
command elsewhere) or another content (the file was edited, and the node has not
noticed yet) is stopped, then one is started under this policy (``reach``). So the rule
count the agent reports is the one the node enforces.

Imports only the standard library and the node's own modules. See docs/how-it-works.md,
"Restricted hosts".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import time

from .. import boot, wire
from . import policy as policies

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}").fullmatch
MAX_BOOT_SOURCE = 1 << 20  # the controller's boot script, read and thrown away
MAX_IDLE = 1e7
RESTRICTED_DIR = "restricted"  # in the run directory: restricted nodes' sockets and logs
REACH_ATTEMPTS = 3  # nodes under another policy stopped in a row before giving up
STOP_SECONDS = 10.0  # how long a node under another policy may take to stop
MAX_HELLO = 1 << 16  # a node's greeting is far smaller


def installed_version() -> str:
    """The version of the clusterctl installed here (what ``world`` shows)."""
    try:
        from importlib.metadata import version

        return version("clusterctl")
    except Exception:  # noqa: BLE001 - run from a source tree without metadata
        return "unknown"


def package_root() -> str:
    """The directory holding this installation's ``clusterctl`` package."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def node_dir() -> str:
    return os.path.join(boot.run_dir(), RESTRICTED_DIR)


def note(name: str | None, message: str) -> None:
    """Put ``message`` in the node's log on this host, where the owner looks."""
    if not name:
        return
    try:
        directory = node_dir()
        boot.private_dir(directory)
        fd = os.open(os.path.join(directory, name + ".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write("%s [%d] agent: %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), message))
    except (OSError, RuntimeError):
        pass


def refuse_command(policy_path: str) -> None:
    """The key was used for something other than clusterctl: run nothing, say so."""
    sys.stderr.write("clusterctl-agent: this key only reaches a restricted clusterctl node "
                     "(policy %s); it runs no other command\n" % policy_path)
    sys.stderr.flush()
    sys.exit(1)


def read_request() -> dict:
    """The boot conversation's start: the stub's length line and source (thrown away,
    never run), then the parameters line."""
    stdin = sys.stdin.buffer
    line = stdin.readline(32)
    try:
        size = int(line)
    except ValueError:
        boot._fail("this host runs clusterctl's restricted agent: expected the boot stub")
    if not 0 <= size <= MAX_BOOT_SOURCE:
        boot._fail("the boot script is too large")
    while size:
        chunk = stdin.read(min(size, 65536))
        if not chunk:
            boot._fail("the boot script arrived truncated")
        size -= len(chunk)
    try:
        params = json.loads(stdin.readline(1 << 16))
    except ValueError:
        boot._fail("the boot parameters are not JSON")
    if type(params) is not dict:
        boot._fail("the boot parameters are not a JSON object")
    return params


def node_options(params: dict) -> tuple[str, int, float]:
    """The name, slots and idle time the controller asks for, checked (nothing else of
    what it sends is used)."""
    name = params.get("name")
    if type(name) is not str or not _NAME(name):
        boot._fail("bad node name %r: letters, digits, '_', '.', '-'" % (name,))
    asked = params.get("agent_args")
    options = {}
    if type(asked) is list and all(type(a) is str for a in asked):
        options = dict(zip(asked[::2], asked[1::2]))
    try:
        slots = int(options.get("--slots", "0"))
        idle = float(options.get("--idle", "1800"))
    except ValueError:
        boot._fail("bad --slots or --idle in the boot parameters")
    if not (0 <= slots <= policies.MAX_SLOTS and 0 < idle <= MAX_IDLE):
        boot._fail("--slots or --idle out of range in the boot parameters")
    return name, slots, idle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clusterctl-agent", description=(
        "Run as the forced command of a controller's key in authorized_keys: the key then "
        "reaches only a restricted clusterctl node that calls what the policy allows."))
    parser.add_argument("--policy", required=True, help="the owner's policy file")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    original = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if "exec(sys.stdin" not in original:  # a shell, or a command: not the boot stub
        refuse_command(args.policy)
    params = read_request()
    if "wait_stopped" in params:
        boot.wait_stopped(params)
        return
    name, slots, idle = node_options(params)
    try:
        policy = policies.load(os.path.abspath(args.policy))  # (the node is given it so)
    except policies.PolicyError as exc:
        note(name, "not starting: %s" % exc)
        boot._fail("restricted host: %s" % exc)
    version = installed_version()
    boot._say({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
               "need_code": False, "restricted": len(policy.allows), "version": version,
               "proto": wire.PROTOCOL_VERSION})
    line = sys.stdin.buffer.readline(32).strip()
    if line != b"0":  # the controller declined, or sent code: a restricted host takes none
        return
    key = boot.read_key()  # derived for this node: this host never holds the cluster's cookie
    launch = ("import sys; sys.path.insert(0, %r); from clusterctl.node.daemon.node import main; main()"
              % package_root())
    argv = [sys.executable, "-E", "-c", launch, "--name", name, "--slots", str(slots),
            "--idle", repr(idle), "--version", version, "--code-id", "restricted",
            "--run-dir", node_dir(), "--policy", policy.path]
    sock, state = reach(name, policy, argv if params.get("start") else None, key)
    if sock is None:
        boot._say({"node": "absent"})
        return
    boot._say({"node": state, "socket": os.path.abspath(boot.socket_path(node_dir(), name)),
               "restricted": True})
    boot._splice(sock)


def reach(name: str, policy: policies.Policy, argv: list | None, key: str):
    """A connection to the node ``name`` running under ``policy`` (this file, these
    bytes), and whether it was ``running`` or is ``ready`` (started now); ``(None,
    "absent")`` if none runs and ``argv`` (how to start one) is None. A node under
    another policy is stopped first: the owner's latest word binds, not the one a node
    was started with. (It is the owner's own node, run by this account.)"""
    directory = node_dir()
    path = boot.socket_path(directory, name)
    for _ in range(REACH_ATTEMPTS):
        state = "running"
        sock = boot._connect_or_fail(directory, path)
        if sock is None:
            if argv is None:
                return None, "absent"
            boot.start_node(argv, key)
            sock = boot._connect_or_fail(directory, path)
            if sock is None:
                boot._fail("the node started but its socket %s refuses connections" % path)
            state = "ready"
        hello = peek_hello(sock)
        if hello is not None and enforces(hello, policy):
            return sock, state
        sock.close()
        stop_node(name, hello, policy, path)
    boot._fail("the node %s keeps coming up under another policy than %s (is the file being "
               "edited?): connect again" % (name, policy.path))


def enforces(hello: dict, policy: policies.Policy) -> bool:
    """Whether the node that said ``hello`` enforces ``policy``: the same file, the same
    bytes (a node too old to say which is taken for one under another policy)."""
    return hello.get("policy") == policy.path and hello.get("policy_digest") == policy.digest


def peek_hello(sock: socket.socket) -> dict | None:
    """The node's greeting, looked at and left in place (the controller reads it once the
    channel is spliced); None if none comes in ``wire.HANDSHAKE_TIMEOUT``."""
    deadline = time.monotonic() + wire.HANDSHAKE_TIMEOUT
    try:
        sock.settimeout(wire.HANDSHAKE_TIMEOUT)
        while True:
            data = sock.recv(MAX_HELLO, socket.MSG_PEEK)
            if not data:
                return None
            if len(data) >= wire.HEADER_SIZE:
                head_len, _ = wire.check_header(data, 0)
                if len(data) >= wire.HEADER_SIZE + head_len:
                    head = wire.decode_head(data[wire.HEADER_SIZE:wire.HEADER_SIZE + head_len])
                    return head if head["op"] == "hello" else None
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)  # (part of it is in: the rest follows at once)
    except (OSError, wire.FrameError):
        return None
    finally:
        sock.settimeout(None)


def stop_node(name: str, hello: dict | None, policy: policies.Policy, path: str) -> None:
    """Stop the node that said ``hello`` (it runs under another policy) and wait until it
    is gone; one that did not greet us is taken to be stopping, and its socket waited for."""
    pid = hello.get("pid") if hello is not None else None
    if type(pid) is int and pid > 1:
        note(name, "stopping the node (pid %d): it runs under another policy (%s, sha256 %.12s) "
             "than this session's (%s, sha256 %.12s)" % (pid, hello.get("policy"),
                                                         hello.get("policy_digest"), policy.path,
                                                         policy.digest))
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        except OSError as exc:
            boot._fail("cannot stop the node %s (pid %d), which runs under another policy: %s"
                       % (name, pid, exc.strerror or exc))
        gone = lambda: boot.process_exited(pid)  # noqa: E731
    else:
        gone = lambda: not os.path.exists(path)  # noqa: E731 - a node that stops removes it
    deadline = time.monotonic() + STOP_SECONDS
    while not gone():
        if time.monotonic() > deadline:
            boot._fail("the node %s (socket %s) runs under another policy than %s and did not "
                       "stop within %g s: stop it (its pid is in %s.pid beside the socket)"
                       % (name, path, policy.path, STOP_SECONDS, path[:-len(".sock")]))
        time.sleep(0.02)


if __name__ == "__main__":
    main()
