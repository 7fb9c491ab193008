"""The SSH transport: reach a remote host as ``ssh`` would, bootstrap a node there.

One paramiko transport per host (and per jump host), shared by every channel to it.
Each node connection is one exec channel running the boot stub (see
``clusterctl.node.boot``): the controller ships the boot script, then the agent bundle
only if the host's cache lacks it, and the node is handed the channel's own stdin and
stdout (over its unix socket), so it serves the controller on the channel directly.
A node the pool reached before is reached again through a forward of its unix socket
(``open_socket_forward``), where sshd allows it: no session, no login shell. No TCP port
is forwarded and nothing is installed beyond the cache. The boot stub runs with
``python -S``: it needs only the standard library, and skipping site-packages makes a
warm bootstrap of many hosts noticeably quicker.

Resolution follows OpenSSH (``clusterctl.sshconfig``); host keys follow OpenSSH's
known_hosts semantics, append-only (``clusterctl.hostkeys``). Handshakes in flight are
capped, because sshd's default MaxStartups drops the ones beyond 10.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import paramiko

from clusterctl import errors
from clusterctl.transport.bundle import Bundle
from clusterctl.transport.hostkeys import (KnownHosts, UnknownHostKey, fingerprint, offered_host_key_algorithms,
                       verify_server_key)
from clusterctl.config.hosts import DestinationError, HostSpec, parse_destination
from clusterctl.node import boot as boot_module
from clusterctl.transport.sshconfig import DEFAULT_HOST_KEY_ALGORITHMS, SSHTarget, resolve
from clusterctl.transport.base import NodeSettings, agent_arguments
from clusterctl.config.cookie import restricted_key
from clusterctl.version import check_agent_protocol, require_same_python

MAX_HANDSHAKES = 8
WINDOW_SIZE = 8 * 1024 * 1024
MAX_PACKET = 256 * 1024
DEFAULT_CONNECT_TIMEOUT = 15.0
_BOOT_SOURCE = Path(boot_module.__file__).read_bytes()
# paramiko logs a refused channel at ERROR before raising it; we turn every failure into
# an error of our own, so without a handler of the program's, its lines would only be noise
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def bundle_zip(bundle: Bundle) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, data in bundle.files:
            archive.writestr(rel, data)
    return buf.getvalue()


class ShellProxy:
    """A ProxyCommand run by a shell (so ``$HOME``, pipes and ``$(...)`` work), joined to
    us by a socketpair; closing it ends and reaps the process."""

    def __init__(self, command: str) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=theirs, stdout=theirs,
                                     stderr=subprocess.PIPE, start_new_session=True)
        theirs.close()
        self.sock = ours

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


class SSHPool:
    """The SSH connections of one Cluster: resolved targets and live transports."""

    def __init__(self, settings: NodeSettings, *, config_file: str | None = None,
                 known_hosts: str | None = None, accept_new_host_keys: bool = False,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.settings = settings
        self.config_file = config_file
        self.known_hosts_file = known_hosts
        self.accept_new_host_keys = accept_new_host_keys
        self.connect_timeout = connect_timeout
        self._transports: dict[tuple, paramiko.Transport] = {}
        self._proxies: list[ShellProxy] = []
        self._locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self._handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self._jump_handshakes: dict[tuple[str, ...], threading.BoundedSemaphore] = {}
        self._zip: bytes | None = None
        self._sockets: dict[tuple, str] = {}  # (host key, node name) -> the node's socket there
        self._no_forwarding: set[tuple] = set()  # host keys whose sshd refuses socket forwards
        self.shipped = 0  # bundles sent, for tests and the benchmark
        self.forwarded = 0  # node connections opened as socket forwards (no boot, no shell)
        self.trusted: set[tuple[str, int, str]] = set()  # (host, port, fingerprint) the user accepted

    def transport(self, spec: HostSpec) -> "SSHTransport":
        return SSHTransport(spec, self)

    # -- nodes reached before: their sockets --------------------------------------------

    def node_socket(self, target: SSHTarget, name: str) -> str | None:
        """Where the boot stub found node ``name``'s socket on the host, if the host's sshd
        may still forward to it."""
        key = host_key(target)
        with self._lock:
            return None if key in self._no_forwarding else self._sockets.get((key, name))

    def remember_socket(self, target: SSHTarget, name: str, path: str) -> None:
        with self._lock:
            self._sockets[(host_key(target), name)] = path

    def forwarding_refused(self, target: SSHTarget) -> None:
        with self._lock:
            self._no_forwarding.add(host_key(target))

    def bundle_zip(self) -> bytes:
        if self._zip is None:
            self._zip = bundle_zip(self.settings.bundle)
        return self._zip

    # -- resolution and connection ----------------------------------------------------

    def target(self, host: str, user: str | None = None, port: int | None = None) -> SSHTarget:
        return resolve(host, user=user, port=port, config_file=self.config_file)

    def known_hosts(self, target: SSHTarget) -> KnownHosts:
        if self.known_hosts_file:
            return KnownHosts([self.known_hosts_file], write_file=self.known_hosts_file)
        return KnownHosts.for_target(target)

    def client(self, node: str, target: SSHTarget, deadline: float) -> paramiko.Transport:
        """A live, authenticated transport to ``target`` (shared, made once)."""
        key = host_key(target)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            transport = self._transports.get(key)
            if transport is not None and transport.is_active():
                return transport
            transport = self._connect(node, target, deadline)
            self._transports[key] = transport
            return transport

    def _connect(self, node: str, target: SSHTarget, deadline: float) -> paramiko.Transport:
        where = f"{target.user}@{target.hostname}:{target.port}"
        timeout = max(1.0, min(deadline - time.monotonic(),
                               target.connect_timeout or self.connect_timeout))
        known = self.known_hosts(target)
        algorithms = self._host_key_algorithms(node, target, known)
        sock = self._socket(node, target, timeout, deadline)
        with self._lock:  # handshakes through one jump host are capped on their own too
            through_jump = self._jump_handshakes.setdefault(
                target.proxy_jump, threading.BoundedSemaphore(MAX_HANDSHAKES))
        with self._handshakes, through_jump:
            transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE,
                                           default_max_packet_size=MAX_PACKET)
            options = transport.get_security_options()
            preferred = [c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
                         if c in options.ciphers]
            options.ciphers = tuple(preferred) + tuple(c for c in options.ciphers if c not in preferred)
            options.key_types = algorithms
            try:
                transport.start_client(timeout=timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                transport.close()
                text = str(exc) or type(exc).__name__
                hint = None
                if "banner" in text.lower():
                    hint = "the host may be refusing handshakes (sshd MaxStartups) or not run sshd"
                raise errors.NodeUnreachable(node, f"SSH handshake with {where} failed: {text}", hint=hint,
                                             summary="SSH handshake failed")
        try:
            # --accept-new-host-keys upgrades ssh's default, ask; an explicit
            # StrictHostKeyChecking yes stays yes (verify_server_key refuses, saying why)
            strict = target.strict_host_key_checking
            mode = "accept-new" if self.accept_new_host_keys and strict == "ask" else strict
            key = transport.get_remote_server_key()
            accepted = (target.hostname, target.port, fingerprint(key)) in self.trusted
            verify_server_key(known, node, target.hostname, target.port,
                              key, mode, accept_unknown=self.accept_new_host_keys or accepted,
                              host_key_alias=target.host_key_alias, ssh_target=target.alias,
                              hash_names=target.hash_known_hosts)
            self._authenticate(node, transport, target)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise errors.NodeUnreachable(node, f"SSH session with {where} failed: "
                                         f"{exc or type(exc).__name__}") from None
        except BaseException:
            transport.close()
            raise
        if target.server_alive_interval:
            transport.set_keepalive(int(target.server_alive_interval))
        wake_seldom(transport)
        return transport

    def _host_key_algorithms(self, node: str, target: SSHTarget, known: KnownHosts) -> tuple[str, ...]:
        """The host key algorithms to offer, in ssh's order: those of the keys known_hosts
        holds for the host first (else paramiko would always get the ed25519 key)."""
        algorithms = target.host_key_algorithms or DEFAULT_HOST_KEY_ALGORITHMS
        offered = offered_host_key_algorithms(
            known, target.hostname, target.port, algorithms,
            verbatim=target.host_key_algorithms_verbatim, host_key_alias=target.host_key_alias)
        if not offered:
            raise errors.NodeUnreachable(
                node, "none of the HostKeyAlgorithms for %s (%s) can be used by clusterctl"
                % (target.alias, ",".join(algorithms)),
                hint="add ssh-ed25519, ecdsa-sha2-nistp256 or rsa-sha2-512 to HostKeyAlgorithms")
        return offered

    def _socket(self, node: str, target: SSHTarget, timeout: float, deadline: float):
        where = f"{target.hostname}:{target.port}"
        if target.proxy_command:
            proxy = ShellProxy(target.proxy_command)  # tokens already expanded by sshconfig
            self._proxies.append(proxy)
            return proxy.sock
        if target.proxy_jump:
            *rest, last = target.proxy_jump
            jump = self._jump_target(last, rest)
            via = self.client(node, jump, deadline)
            try:
                return via.open_channel("direct-tcpip", (target.hostname, target.port),
                                        ("127.0.0.1", 0), timeout=timeout)
            except (paramiko.SSHException, OSError) as exc:
                raise errors.NodeUnreachable(
                    node, f"jump host {jump.hostname} could not reach {where}: {exc}",
                    hint="the jump host's sshd must allow TCP forwarding (AllowTcpForwarding)")
        try:
            sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
            # paramiko never sets it: without it the login stalls ~40 ms on Nagle + delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except socket.gaierror as exc:
            raise errors.NodeUnreachable(node, f"cannot resolve {target.hostname}: {exc.strerror}",
                                         hint=f"check the host name, or run: ssh -G {target.alias}",
                                         summary="no such host")
        except socket.timeout:
            raise errors.NodeUnreachable(node, f"connecting to {where} timed out after {timeout:g} s",
                                         summary="timed out")
        except OSError as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            raise errors.NodeUnreachable(node, f"cannot connect to {where}: {exc.strerror or exc}",
                                         summary="connection refused" if refused else None)

    def _jump_target(self, hop: str, earlier: list[str]) -> SSHTarget:
        try:
            user, host, port = parse_destination(hop)
        except DestinationError as exc:
            raise errors.ClusterError(f"bad ProxyJump hop {hop!r}: {exc.message}", hint=exc.hint) from None
        target = self.target(host, user, port)
        if earlier:  # a multi-hop chain: this hop is itself reached through the earlier ones
            target = _with_jump(target, tuple(earlier))
        return target

    def _authenticate(self, node: str, transport: paramiko.Transport, target: SSHTarget) -> None:
        tried = []
        for key in self._keys(target):
            try:
                transport.auth_publickey(target.user, key)
            except paramiko.AuthenticationException:
                tried.append(key.get_name())
                continue
            except paramiko.SSHException as exc:
                raise errors.NodeUnreachable(node, f"SSH authentication failed: {exc}",
                                             summary="auth failed")
            if transport.is_authenticated():
                return
        what = ", ".join(tried) if tried else "no keys found"
        raise errors.HandshakeError(
            node, f"permission denied (publickey) for {target.user}@{target.hostname}:{target.port} "
                  f"(tried: {what})",
            hint=f"check the user and IdentityFile for this host, or try: ssh -v {target.alias}",
            summary="auth refused")

    def _keys(self, target: SSHTarget):
        if not target.identities_only:
            try:
                yield from paramiko.Agent().get_keys()
            except paramiko.SSHException:
                pass
        files = list(target.identity_files)
        for path in files:
            key = _load_key(os.path.expanduser(path))
            if key is not None:
                yield key

    def unknown_host_key(self, spec: HostSpec, deadline: float) -> UnknownHostKey | None:
        """Connect to ``spec``'s host; the UnknownHostKey it raises if the user could be
        asked about it (StrictHostKeyChecking ask), else None. Other failures are left
        for the real connection to report."""
        try:
            target = self.target(spec.host, spec.user, spec.port)
            if target.strict_host_key_checking != "ask" or self.accept_new_host_keys:
                return None
            self.client(spec.name, target, deadline)
        except UnknownHostKey as unknown:
            return unknown
        except errors.ClusterError:
            return None
        return None

    def trust(self, unknown: UnknownHostKey) -> None:
        """Accept a key the user was shown: it is appended at the next connection."""
        self.trusted.add((unknown.hostname, unknown.port, unknown.fingerprint))

    def describe(self) -> list[dict]:
        """Each SSH connection held: where to, and whether it is up."""
        with self._lock:
            held = list(self._transports.items())
        return [{"host": key[0], "port": key[1], "user": key[2], "jump": key[3],
                 "active": transport.is_active()} for key, transport in held]

    def close(self) -> None:
        for transport in self._transports.values():
            close_transport(transport)
        self._transports.clear()
        for proxy in self._proxies:
            proxy.close()
        self._proxies.clear()


IDLE_WAKE_SECONDS = 2.0  # an idle connection's paramiko thread wakes this often


def wake_seldom(transport: paramiko.Transport) -> None:
    """Let an established connection's thread sleep until something comes in (or
    ``IDLE_WAKE_SECONDS`` pass). paramiko reads with a 0.1 s timeout, only to look now
    and then whether it was closed: a hub holding 30 idle hosts spent 2.8% of a core on
    those wake-ups. Closing (``close_transport``) shuts the socket down, which wakes the
    thread at once; a host that goes away ends its read by itself."""
    try:
        transport.sock.settimeout(IDLE_WAKE_SECONDS)
    except (AttributeError, OSError):  # (a proxy's socket may not take one: left as it is)
        pass


def close_transport(transport: paramiko.Transport) -> None:
    """Close a connection, its thread waking at once from its read (see ``wake_seldom``)."""
    sock = transport.sock
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    transport.close()


def host_key(target: SSHTarget) -> tuple:
    """What one SSH connection is shared by: where it goes and how it gets there."""
    return (target.hostname, target.port, target.user, target.proxy_jump, target.proxy_command)


def open_socket_forward(transport: paramiko.Transport, path: str, timeout: float) -> paramiko.Channel:
    """A ``direct-streamlocal@openssh.com`` channel: sshd connects it to the unix socket
    ``path`` on the host, with no session, no login shell and no command (OpenSSH's
    ``ssh -W /path``). paramiko opens only the channel kinds of RFC 4254, so this sends
    the open request the way ``Transport.open_channel`` does, with this kind's fields
    (socket path, two reserved fields). Raises paramiko.ChannelException when the host
    refuses. OpenSSH allows it where it allows TCP forwarding (AllowTcpForwarding and
    AllowStreamLocalForwarding, both yes by default; ``restrict`` in authorized_keys
    turns it off)."""
    if not transport.active:
        raise paramiko.SSHException("SSH session not active")
    with transport.lock:
        chanid = transport._next_channel()
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_CHANNEL_OPEN)
        message.add_string("direct-streamlocal@openssh.com")
        message.add_int(chanid)
        message.add_int(WINDOW_SIZE)
        message.add_int(MAX_PACKET)
        message.add_string(path)
        message.add_string("")  # reserved
        message.add_int(0)  # reserved
        channel = paramiko.Channel(chanid)
        transport._channels.put(chanid, channel)
        transport.channel_events[chanid] = opened = threading.Event()
        transport.channels_seen[chanid] = True
        channel._set_transport(transport)
        channel._set_window(WINDOW_SIZE, MAX_PACKET)
    transport._send_user_message(message)
    end = time.monotonic() + timeout
    while not opened.wait(0.1):
        if not transport.active or time.monotonic() > end:
            channel.close()
            raise transport.get_exception() or paramiko.SSHException("timeout opening a socket forward")
    if transport._channels.get(chanid) is None:
        raise transport.get_exception() or paramiko.SSHException("socket forward refused")
    return channel


def _load_key(path: str):
    if not os.path.exists(path):
        return None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(path)
        except paramiko.PasswordRequiredException:
            return None
        except (paramiko.SSHException, ValueError, OSError):
            continue
    return None


def _with_jump(target: SSHTarget, jumps: tuple[str, ...]) -> SSHTarget:
    from dataclasses import replace

    return replace(target, proxy_jump=jumps)


def shell_word(program: str) -> str:
    """``program`` (a ``python=`` value) as one word of a remote shell command: quoted, so
    it names a program and is never run as shell code; a leading ``~/`` still means the
    home directory there."""
    if program.startswith("~/"):
        return '"$HOME"/' + shlex.quote(program[2:])
    return shlex.quote(program)


class SSHTransport:
    """A node on a remote host, reached through an exec channel running the boot stub."""

    kind = "ssh"

    def __init__(self, spec: HostSpec, pool: SSHPool, settings: NodeSettings | None = None) -> None:
        self.spec = spec
        self.pool = pool
        self.settings = settings or pool.settings  # (the hub's pools serve several limits)
        self.python = spec.python or "python3"

    @property
    def host_label(self) -> str:
        return self.spec.target

    def open(self, *, start: bool, deadline: float):
        """A channel the node serves on, or None if no node runs and ``start`` is false.
        A node this pool reached before is reached again through a forward of its socket
        (a few ms); else, or if that fails, the boot stub runs (an exec channel: sshd's
        session set-up and the login shell, ~100-200 ms) and finds or starts the node."""
        target = self.pool.target(self.spec.host, self.spec.user, self.spec.port)
        transport = self.pool.client(self.spec.name, target, deadline)
        tried = self.pool.node_socket(target, self.spec.name)
        if tried is not None:
            channel = self._forward(transport, tried, deadline)
            if channel is not None:
                return channel
        channel, state = self._boot(transport, target, start=start, deadline=deadline)
        if tried is not None and state == "running":
            # the node was there all along: sshd refused the forward (sshd says "connect
            # failed" both for that and for no listener), so this host boots every time
            self.pool.forwarding_refused(target)
        return channel

    def _forward(self, transport: paramiko.Transport, path: str, deadline: float):
        try:
            channel = open_socket_forward(transport, path, max(1.0, deadline - time.monotonic()))
        except (paramiko.SSHException, OSError, EOFError):
            return None
        self.pool.forwarded += 1
        channel.settimeout(max(1.0, deadline - time.monotonic()))
        return channel

    def _boot(self, transport: paramiko.Transport, target: SSHTarget, *, start: bool,
              deadline: float):
        spec = self.spec
        name = spec.name
        timeout = max(1.0, deadline - time.monotonic())
        try:
            channel = transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise errors.NodeUnreachable(name, f"SSH channel to {target.hostname} failed: {exc}")
        try:
            channel.settimeout(timeout)
            settings = self.settings
            self._run_boot(channel, {"code_id": settings.bundle.code_id, "name": name,
                                     "agent_args": agent_arguments(spec, settings), "start": start})
            reply = self._reply(channel)
            restricted = reply.get("restricted") is not None  # an agent the host's owner installed
            try:
                self._check_kind(reply, restricted)
            except errors.ClusterError:
                channel.sendall(b"-1\n")
                raise
            if reply.get("need_code") and not restricted:
                blob = self.pool.bundle_zip()
                channel.sendall(b"%d\n" % len(blob) + blob)
                self.pool.shipped += 1
                self._reply(channel)
            else:
                channel.sendall(b"0\n")
            # the key goes only now that the host has said what it is: a restricted host's
            # owner is not trusted, and gets a key that proves that one node and nothing else
            key = restricted_key(settings.cookie, name) if restricted else settings.cookie
            channel.sendall(key.hex().encode() + b"\n")
            reply = self._reply(channel)
            state = reply.get("node")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            raise errors.NodeUnreachable(name, f"SSH channel to {target.hostname} failed: {exc}")
        except BaseException:
            channel.close()
            raise
        if state == "absent":
            channel.close()
            return None, state
        if not restricted:  # (a restricted host's sshd forwards nothing: it boots every time)
            self.pool.remember_socket(target, name, reply["socket"])
        return channel, state

    def _run_boot(self, channel, params: dict) -> None:
        """Start the boot conversation on ``channel``: the stub, the boot script, then
        ``params`` (section "Booting a node over SSH"; a restricted host's agent reads
        the same and runs none of it)."""
        channel.exec_command(f"{shell_word(self.python)} -S -c {shlex.quote(boot_module.STUB)}")
        channel.sendall(b"%d\n" % len(_BOOT_SOURCE) + _BOOT_SOURCE)
        channel.sendall(json.dumps(params).encode() + b"\n")

    def _reply(self, channel) -> dict:
        line = b""
        try:
            while not line.endswith(b"\n"):
                chunk = channel.recv(1)
                if not chunk:
                    break
                line += chunk
        except socket.timeout:
            raise errors.NodeStartError(self.spec.name, "the host did not answer the bootstrap in time")
        if not line:
            raise self._start_failure(channel)
        try:
            reply = json.loads(line)
        except ValueError:
            raise errors.NodeStartError(self.spec.name, f"unexpected bootstrap output: {line[:200]!r}",
                                        hint="a login script that prints to stdout can break this; "
                                             "make it quiet for non-interactive shells")
        if "error" in reply:
            raise errors.NodeStartError(self.spec.name, reply["error"])
        return reply

    def _start_failure(self, channel) -> errors.ClusterError:
        """The boot stub died before answering: say why from its exit status and stderr."""
        status = channel.exit_status if channel.status_event.wait(5) else -1
        err = b""
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        text = err.decode(errors="replace").strip()
        last = text.splitlines()[-1] if text else "no output"
        if status == 127 or "not found" in text:
            return errors.NodeStartError(self.spec.name, f"no Python at {self.python!r} on {self.spec.target}: {last}",
                                         hint=f"install python3 there or set python= for this host ({self.spec.source})",
                                         summary="no python")
        return errors.NodeStartError(self.spec.name, f"the bootstrap exited with status {status}: {last}")

    def wait_stopped(self, pid, timeout: float) -> None:
        """After a stop: wait on the host until the node process ``pid`` is gone. The boot
        script does the waiting (``wait_stopped`` in its parameters), so a restricted
        host's agent, which runs nothing else, answers it too."""
        if not isinstance(pid, int):
            return
        target = self.pool.target(self.spec.host, self.spec.user, self.spec.port)
        for attempt in (1, 2):  # a pooled connection found dead is made again, once
            transport = self.pool.client(self.spec.name, target, time.monotonic() + timeout)
            try:
                channel = transport.open_session(timeout=timeout)
                try:
                    channel.settimeout(timeout + 5)
                    self._run_boot(channel, {"wait_stopped": pid, "timeout": timeout})
                    reply = self._reply(channel)
                    channel.status_event.wait(timeout)  # the script has exited: nothing of ours is left
                finally:
                    channel.close()
                break
            except (paramiko.SSHException, OSError, EOFError) as exc:  # (EOFError: the connection died)
                if attempt == 1 and not transport.is_active():
                    continue
                raise errors.NodeError(self.spec.name, "could not check that the node stopped: "
                                       f"{exc or type(exc).__name__}") from None
        if not reply.get("stopped"):
            raise errors.NodeError(self.spec.name, f"node process {pid} did not exit")

    def _check_kind(self, reply: dict, restricted: bool) -> None:
        """Before anything but the boot parameters is sent: an ordinary host's Python must
        be the controller's; a restricted host's agent must speak our boot conversation;
        a host the hosts file says is restricted must be."""
        if restricted:
            check_agent_protocol(self.spec.name, reply, self.spec.target)
        elif self.spec.restricted:
            raise errors.NodeStartError(
                self.spec.name, f"{self.spec.target} answered as an ordinary host, but the hosts "
                f"file says it is restricted ({self.spec.source}): nothing was sent to it",
                hint="ask its owner whether the restricted agent is still installed for your key, "
                     "or take restricted=yes off that line if the host is yours",
                summary="not restricted")
        else:  # (nothing pickled travels to a restricted node)
            self._check_python(reply)

    def _check_python(self, reply: dict) -> None:
        require_same_python(self.spec.name, str(reply.get("python", "?")),
                            where=f"{self.spec.target} at {self.python!r}", source=self.spec.source)
