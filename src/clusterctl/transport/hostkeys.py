"""Host keys: known_hosts read with OpenSSH's semantics, appended to and never rewritten.

Why not paramiko's own host key handling: ``SSHClient`` raises ``BadHostKeyException``
for a changed key under any policy, before a policy sees it, with a message that names
no file; ``HostKeys`` forgets line numbers, skips ``@revoked`` and ``@cert-authority``
lines, and ``save_host_keys()`` rewrites the whole file, dropping comments, markers and
the key types it does not know. Users keep their known_hosts for years and share it
with ``ssh``; clusterctl must treat it as ``ssh`` does and only ever add one line.

So this module parses known_hosts itself (plain, hashed ``|1|salt|hash``, comma lists,
``[host]:port``, ``*``/``?`` wildcards, ``!`` negation, markers), answers one question
per connection (:func:`verify_server_key`: known, added, or an error naming the file
and line), and appends under ``flock`` (hashing the host name when ``HashKnownHosts``
is on, as ssh does).

Which key the host shows depends on the host key algorithms the client offers, in
order. ssh offers first the algorithms of the keys known_hosts already holds for the
host (:func:`order_host_key_algorithms`); paramiko, left alone, always prefers
ed25519, so a host recorded with only its ECDSA or RSA key would show a key that is not
known. Before ``start_client()`` set ``transport.get_security_options().key_types``
to :func:`offered_host_key_algorithms`.

Use with paramiko: load no host keys into paramiko's client; after
``transport.start_client()`` pass ``transport.get_remote_server_key()`` to
:func:`verify_server_key` (or let ``SSHClient`` call :class:`HostKeyPolicy`, which it
does for every key when its own host key set is empty).

Decisions:

* A changed key is refused in every mode, ``StrictHostKeyChecking no`` included
  (OpenSSH would connect with some features disabled). A reinstalled host is fixed
  by the user with ``ssh-keygen -R``, as the message says.
* ``no`` accepts an unknown key without writing it; ``accept-new`` (or an explicit
  yes from the user) writes it. ``yes`` refuses it, saying that the ssh config asks
  for strict checking (nothing in clusterctl overrides that).
* A key matching an ``@revoked`` line for the host is refused in every mode.
* ``@cert-authority`` lines are skipped: clusterctl does not verify host certificates.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import shlex
import struct
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import paramiko

from clusterctl.errors import HandshakeError, restore_error
from clusterctl.node import boot

__all__ = [
    "ChangedHostKey",
    "HostKeyError",
    "HostKeyPolicy",
    "KnownHosts",
    "RevokedHostKey",
    "UnknownHostKey",
    "fingerprint",
    "hash_host",
    "host_label",
    "key_type_label",
    "offered_host_key_algorithms",
    "order_host_key_algorithms",
    "verify_server_key",
]

MODES = ("yes", "no", "accept-new", "ask")
"""StrictHostKeyChecking values (as normalised by :mod:`clusterctl.sshconfig`)."""

LOCK_TIMEOUT = 10.0
"""Seconds to wait for another clusterctl appending to the same known_hosts file."""

_ACCEPT_HINT = "run clusterctl with --accept-new-host-keys, or '%s' once to check and trust it"
_STRICT_HINT = ("the ssh config says StrictHostKeyChecking yes for this host, which "
                "--accept-new-host-keys does not override: check the key and add it to %s, "
                "e.g. with '%s' once")


class HostKeyError(HandshakeError):
    """The host's key cannot be trusted. ``node`` names the node.

    The message names the node itself (the way ssh names the host), so it is used as
    is rather than behind NodeError's ``node:`` prefix.
    """

    summary = "host key refused"

    def __init__(self, node: str, message: str, *, hint: str | None = None,
                 hostname: str | None = None, port: int | None = None,
                 host_label: str | None = None, key_type: str | None = None,
                 fingerprint: str | None = None, known_hosts_file: str | None = None,
                 line: int | None = None) -> None:
        super().__init__(node, message, hint=hint)
        self.message = message
        self.args = (message,)
        self.hostname = hostname
        self.port = port
        self.host_label = host_label
        self.key_type = key_type
        self.fingerprint = fingerprint
        self.known_hosts_file = known_hosts_file
        self.line = line

    def __reduce__(self):
        # Picklable although __init__ takes more than the message (errors may travel
        # between processes with results).
        return (restore_error, (type(self), self.args, self.__dict__))


class UnknownHostKey(HostKeyError):
    """No known_hosts entry matches the host: first contact, or a file that lacks it.

    ``known_hosts_file`` is the file the key would be added to.
    """

    summary = "host key not known"


class ChangedHostKey(HostKeyError):
    """known_hosts has another key of the same type for the host: always refused.

    ``known_hosts_file`` and ``line`` locate that entry; ``old_fingerprint`` is its
    key, ``new_fingerprint`` (also ``fingerprint``) the one the host offered.
    """

    summary = "host key changed"

    def __init__(self, node: str, message: str, *, old_fingerprint: str,
                 **kwargs) -> None:
        super().__init__(node, message, **kwargs)
        self.old_fingerprint = old_fingerprint
        self.new_fingerprint = self.fingerprint


class RevokedHostKey(HostKeyError):
    """The host offered a key that known_hosts marks ``@revoked``: always refused."""

    summary = "host key revoked"


# --------------------------------------------------------------------------- keys

def _blob(key) -> bytes:
    """The public key blob (RFC 4253 encoding) of a paramiko key, or bytes as given."""
    return bytes(key) if isinstance(key, (bytes, bytearray)) else key.asbytes()


def _blob_type(blob: bytes) -> str | None:
    """The key type named inside a blob (its first string), None if it is malformed."""
    if len(blob) < 4:
        return None
    (size,) = struct.unpack(">I", blob[:4])
    if size == 0 or 4 + size > len(blob):
        return None
    try:
        return blob[4:4 + size].decode("ascii")
    except UnicodeDecodeError:
        return None


def fingerprint(key) -> str:
    """``SHA256:<base64 without padding>``, as ``ssh-keygen -l`` and ssh print it."""
    digest = hashlib.sha256(_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_type_label(name: str) -> str:
    """OpenSSH's short name for a key type, as in its messages (``ED25519``, ``RSA``)."""
    base = name[:-len("-cert-v01@openssh.com")] if name.endswith("-cert-v01@openssh.com") else name
    suffix = "-CERT" if base != name else ""
    if base.startswith("sk-"):
        base, suffix = base[3:].split("@")[0], "-SK" + suffix
    if base == "ssh-ed25519":
        label = "ED25519"
    elif base.startswith("ecdsa-sha2-"):
        label = "ECDSA"
    elif base == "ssh-rsa":
        label = "RSA"
    elif base == "ssh-dss":
        label = "DSA"
    else:
        label = base.upper()
    return label + suffix


def host_label(hostname: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, ``[host]:port`` otherwise."""
    return hostname if port == 22 else "[%s]:%d" % (hostname, port)


def _display_path(path: str) -> str:
    home = os.path.expanduser("~").rstrip("/")
    if home and path.startswith(home + "/"):
        return "~" + path[len(home):]
    return path


def _shell_path(path: str) -> str:
    """``path`` for a command line the user can paste (``~/`` left unquoted)."""
    shown = _display_path(path)
    if shown.startswith("~/") and shlex.quote(shown[2:]) == shown[2:]:
        return shown
    return shlex.quote(path)


# --------------------------------------------------------------------------- parsing

@dataclass(frozen=True)
class Entry:
    """One usable known_hosts line."""

    path: str
    line: int
    marker: str | None        # None, "@revoked" or "@cert-authority"
    hosts: str                # the host field as written (patterns or |1|salt|hash)
    key_name: str             # e.g. "ssh-ed25519"
    blob: bytes

    def matches(self, label: str) -> bool:
        return _hosts_match(self.hosts, label)


def parse_line(text: str, path: str = "", number: int = 0) -> Entry | None:
    """An :class:`Entry` for a known_hosts line, None for comments, blanks and lines
    that are not a host key (OpenSSH skips those too)."""
    fields = text.strip().split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
        if marker not in ("@revoked", "@cert-authority"):
            return None
    if len(fields) < 3:
        return None
    hosts, name, data = fields[:3]
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    if _blob_type(blob) != name:     # OpenSSH refuses a line whose type and key disagree
        return None
    return Entry(path, number, marker, hosts, name, blob)


def _hosts_match(hosts: str, label: str) -> bool:
    """OpenSSH's match_hostname on a known_hosts host field (label is lower case)."""
    if hosts.startswith("|"):
        return _hashed_match(hosts, label)
    found = False
    for pattern in hosts.split(","):
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if pattern and _pattern(pattern.lower()).fullmatch(label):
            if negated:
                return False
            found = True
    return found


def _hashed_match(hosts: str, label: str) -> bool:
    parts = hosts.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return False
    actual = hmac.new(salt, label.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(actual, expected)


def hash_host(label: str, salt: bytes | None = None) -> str:
    """``|1|salt|hash`` for ``label``, as ``ssh-keygen -H`` and HashKnownHosts write it."""
    salt = os.urandom(20) if salt is None else salt
    digest = hmac.new(salt, label.encode("utf-8"), hashlib.sha1).digest()
    return "|1|%s|%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


@functools.lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern:
    # Only * and ? are special in OpenSSH patterns: "[host]:2222" is literal text, which
    # is why fnmatch (where [...] is a character class) cannot be used.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern), re.S)


def _parse_bytes(data: bytes, path: str) -> list[Entry]:
    entries = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        entry = parse_line(raw.decode("utf-8", "replace"), path, number)
        if entry is not None:
            entries.append(entry)
    return entries


# --------------------------------------------------------------------------- known_hosts

_FIRST_FILE = object()   # KnownHosts' default write_file: the first of its files


class KnownHosts:
    """The known_hosts files for a connection, read as ssh reads them.

    ``files`` are read in order (user files first, as ssh does), then
    ``global_files``. New keys go to ``write_file`` (read too, if it is not among the
    files); by default that is the first of ``files``. ``write_file=None`` means keys
    are never written (there is no user file), so a caller that passes user and
    global files together can never have a key appended to a global file. Files are re-read when
    they change on disk, so a long-running process sees keys other commands added.
    """

    def __init__(self, files: Sequence[str], *, write_file: str | None | object = _FIRST_FILE,
                 global_files: Sequence[str] = ()) -> None:
        self.files = tuple(os.path.expanduser(f) for f in files)
        self.global_files = tuple(os.path.expanduser(f) for f in global_files)
        self.write_file: str | None
        if write_file is _FIRST_FILE:
            self.write_file = self.files[0] if self.files else None
        elif write_file is None:
            self.write_file = None      # e.g. UserKnownHostsFile none: never write
        else:
            self.write_file = os.path.expanduser(str(write_file))
        self._parsed: dict[str, tuple[tuple, list[Entry]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_target(cls, target) -> KnownHosts:
        """The files an :class:`~clusterctl.sshconfig.SSHTarget` names (UserKnownHostsFile
        first, GlobalKnownHostsFile after; keys are added to the first user file)."""
        return cls(target.user_known_hosts_files, global_files=target.global_known_hosts_files)

    def entries(self) -> list[Entry]:
        """Every usable line of every file, in file and line order."""
        found: list[Entry] = []
        paths = [*self.files, *self.global_files]
        if self.write_file is not None and self.write_file not in paths:
            paths.insert(0, self.write_file)    # keys clusterctl added are trusted too
        for path in paths:
            found += self._entries_of(path)
        return found

    def _entries_of(self, path: str) -> list[Entry]:
        try:
            st = os.stat(path)
        except OSError:
            return []           # a missing file holds no keys (ssh says nothing either)
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == signature:
                return cached[1]
        try:
            with open(path, "rb") as fh:
                entries = _parse_bytes(fh.read(), path)
        except OSError:
            return []           # unreadable: ssh skips it too; the key will be "unknown"
        with self._lock:
            self._parsed[path] = (signature, entries)
        return entries

    def recorded_key_types(self, hostname: str, port: int, *,
                           host_key_alias: str | None = None) -> set[str]:
        """The key types (``ssh-ed25519``, ``ecdsa-sha2-nistp256``, ``ssh-rsa``...) of the
        plain lines that name the host, as :meth:`check` looks it up. Marked lines
        (``@revoked``, ``@cert-authority``) do not count, as in ssh."""
        label = _label(hostname, port, host_key_alias)
        return {e.key_name for e in self.entries() if e.marker is None and e.matches(label)}

    def check(self, node: str, hostname: str, port: int, key, *,
              host_key_alias: str | None = None, ssh_target: str | None = None) -> str:
        """``"known"`` if a known_hosts line trusts ``key`` for the host; else raise.

        Like ssh, the host is looked up as ``host_label(hostname, port)`` in lower case,
        or as ``host_key_alias`` when one is configured. A line for the host with the
        same key wins; otherwise a line with the same key type and another key means
        :class:`ChangedHostKey` (the first such line is named); otherwise
        :class:`UnknownHostKey`. A matching ``@revoked`` line means
        :class:`RevokedHostKey`. ``ssh_target`` is what the user would type after
        ``ssh`` to reach this host, for the hint (default: hostname and port).
        """
        label = _label(hostname, port, host_key_alias)
        blob = _blob(key)
        name = _blob_type(blob) or (key.get_name() if hasattr(key, "get_name") else "unknown")
        offered = fingerprint(blob)
        kind = key_type_label(name)
        common = dict(hostname=hostname, port=port, host_label=label, key_type=kind,
                      fingerprint=offered)
        matching = [e for e in self.entries() if e.marker != "@cert-authority" and e.matches(label)]
        for entry in matching:
            if entry.marker == "@revoked" and entry.blob == blob:
                where = "%s:%d" % (_display_path(entry.path), entry.line)
                raise RevokedHostKey(
                    node, "host key of %s (%s) is revoked: %s marks its %s key %s @revoked"
                    % (node, _where(hostname, port), where, kind, offered),
                    hint="do not connect; ask the host's administrator for a new host key",
                    known_hosts_file=entry.path, line=entry.line, **common)
        plain = [e for e in matching if e.marker is None]
        if any(e.blob == blob for e in plain):
            return "known"
        for entry in plain:
            if entry.key_name == name:
                old = fingerprint(entry.blob)
                where = "%s:%d" % (_display_path(entry.path), entry.line)
                raise ChangedHostKey(
                    node, "HOST KEY OF %s CHANGED: %s has another %s key (%s), the host offers %s"
                    % (node, where, kind, old, offered),
                    hint="if the host was reinstalled, remove the old key: ssh-keygen -R %s -f %s"
                    % (shlex.quote(label), _shell_path(entry.path)),
                    known_hosts_file=entry.path, line=entry.line, old_fingerprint=old, **common)
        if ssh_target is None:
            ssh_target = hostname if port == 22 else "-p %d %s" % (port, hostname)
        raise UnknownHostKey(
            node, "host key of %s (%s) is not known: %s %s" % (node, _where(hostname, port), kind, offered),
            hint=_ACCEPT_HINT % ("ssh " + ssh_target),
            known_hosts_file=self.write_file, **common)

    def append(self, hostname: str, port: int, key, *, hashed: bool = False) -> None:
        """Add ``host_label(hostname, port) keytype base64`` to :attr:`write_file`.

        See :meth:`append_label`.
        """
        self.append_label(host_label(hostname.lower(), port), key, hashed=hashed)

    def append_label(self, label: str, key, *, hashed: bool = False) -> None:
        """Add one line for ``label`` (a host label or a HostKeyAlias) to the write file.

        ``hashed`` writes the name as ``|1|salt|hash`` (:func:`hash_host`), as ssh does
        under ``HashKnownHosts yes``; ``ssh-keygen -F`` finds it.
        The file is locked (``flock`` on the file itself) and re-read before writing,
        so two processes adding the same host write one line. Existing content is never
        rewritten: the line is appended (after a newline if the file lacks a final
        one). A missing file is created 0600, its missing directory 0700, as ssh does
        for ``~/.ssh``. Raises OSError (or TimeoutError after :data:`LOCK_TIMEOUT`).
        """
        path = self.write_file
        if path is None:
            raise OSError("no known_hosts file to write to (UserKnownHostsFile none)")
        blob = _blob(key)
        name = _blob_type(blob)
        if name is None:
            raise ValueError("not an SSH public key")
        label = label.lower()
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _lock(fd, path)
            data = _read_all(fd)
            if any(e.marker is None and e.blob == blob and e.matches(label)
                   for e in _parse_bytes(data, path)):
                return                          # another process added it meanwhile
            hosts = hash_host(label) if hashed else label
            line = "%s %s %s\n" % (hosts, name, base64.b64encode(blob).decode("ascii"))
            prefix = b"\n" if data and not data.endswith(b"\n") else b""
            _write_all(fd, prefix + line.encode("ascii"))
        finally:
            os.close(fd)                        # also releases the lock
        with self._lock:
            self._parsed.pop(path, None)


def _where(hostname: str, port: int) -> str:
    return "[%s]:%d" % (hostname, port)


def _label(hostname: str, port: int, host_key_alias: str | None) -> str:
    """The name ssh looks a host up by in known_hosts (lower case)."""
    return host_key_alias.lower() if host_key_alias else host_label(hostname.lower(), port)


# --------------------------------------------------------------------------- algorithms

_CERT_SUFFIX = "-cert-v01@openssh.com"
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def _algorithm_key_type(algorithm: str) -> str:
    """The key type an algorithm signs with: ``rsa-sha2-512`` is an ``ssh-rsa`` key."""
    return "ssh-rsa" if algorithm in _RSA_ALGORITHMS else algorithm


def order_host_key_algorithms(recorded: Collection[str], algorithms: Sequence[str], *,
                              verbatim: bool = False) -> tuple[str, ...]:
    """Host key algorithms in the order ssh offers them (OpenSSH's order_hostkeyalgs).

    ``recorded`` are the key types known_hosts holds for the host
    (:meth:`KnownHosts.recorded_key_types`), ``algorithms`` the HostKeyAlgorithms
    list. Unless ``verbatim`` (HostKeyAlgorithms written out, or ``^x``), the
    algorithms whose key type is recorded come first, each group keeping the list's
    order: a recorded ``ssh-rsa`` key puts ``rsa-sha2-512``, ``rsa-sha2-256`` (then
    ``ssh-rsa``, if listed) first; an ECDSA key only its own curve's algorithm.
    Certificate algorithms are left out: clusterctl does not verify host certificates.
    """
    plain = tuple(a for a in algorithms if not a.endswith(_CERT_SUFFIX))
    if verbatim:
        return plain
    first = tuple(a for a in plain if _algorithm_key_type(a) in recorded)
    return first + tuple(a for a in plain if a not in first)


def offered_host_key_algorithms(known: KnownHosts, hostname: str, port: int,
                                algorithms: Sequence[str], *, verbatim: bool = False,
                                host_key_alias: str | None = None,
                                supported: Collection[str] | None = None) -> tuple[str, ...]:
    """:func:`order_host_key_algorithms` for a host, from what ``known`` records for it,
    limited to the algorithms paramiko can verify (``supported``, default: paramiko's
    ``Transport``). Empty if none of them is supported."""
    if supported is None:
        supported = paramiko.Transport._key_info
    recorded = known.recorded_key_types(hostname, port, host_key_alias=host_key_alias)
    return tuple(a for a in order_host_key_algorithms(recorded, algorithms, verbatim=verbatim)
                 if a in supported)


def _lock(fd: int, path: str) -> None:
    boot.lock_within(fd, time.monotonic() + LOCK_TIMEOUT, path, interval=0.005)


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --------------------------------------------------------------------------- verification

def verify_server_key(known: KnownHosts, node: str, hostname: str, port: int, key, mode: str, *,
                      accept_unknown: bool = False, host_key_alias: str | None = None,
                      ssh_target: str | None = None, hash_names: bool = False) -> str:
    """Decide whether to trust the key a host offered; the one place that decides.

    ``mode`` is StrictHostKeyChecking. Returns ``"known"`` (known_hosts trusts it),
    ``"added"`` (unknown, and ``mode`` is ``accept-new`` or the caller says
    ``accept_unknown``: appended to known_hosts, the name hashed if ``hash_names``)
    or ``"accepted"`` (unknown, accepted without writing: mode ``no``, or no file to
    write to). Raises :class:`UnknownHostKey` for an unknown key in mode ``ask``
    (the caller may ask the user and call again with ``accept_unknown``) and in mode
    ``yes``, whatever ``accept_unknown`` says (the message says the config asks for
    strict checking), :class:`ChangedHostKey` and :class:`RevokedHostKey` in every
    mode, and :class:`HostKeyError` if the key cannot be written.
    """
    if mode not in MODES:
        raise ValueError("host key mode must be one of %s, not %r" % (", ".join(MODES), mode))
    try:
        return known.check(node, hostname, port, key, host_key_alias=host_key_alias,
                           ssh_target=ssh_target)
    except UnknownHostKey as unknown:
        if mode == "yes":
            raise _strict_refusal(unknown, known, ssh_target) from None
        if not (accept_unknown or mode == "accept-new"):
            if mode == "no":
                return "accepted"
            raise
        if known.write_file is None:
            return "accepted"
        try:
            known.append_label(unknown.host_label, key, hashed=hash_names)
        except OSError as exc:
            raise HostKeyError(
                node, "could not add the host key of %s to %s: %s"
                % (node, _display_path(known.write_file), getattr(exc, "strerror", None) or exc),
                hint="check the permissions of %s" % _display_path(known.write_file),
                hostname=hostname, port=port, host_label=unknown.host_label,
                key_type=unknown.key_type, fingerprint=unknown.fingerprint,
                known_hosts_file=known.write_file) from exc
        return "added"


def _strict_refusal(unknown: UnknownHostKey, known: KnownHosts,
                    ssh_target: str | None) -> UnknownHostKey:
    """The UnknownHostKey of StrictHostKeyChecking yes: say so, and how to trust the key."""
    if ssh_target is None:
        ssh_target = unknown.hostname if unknown.port == 22 else "-p %d %s" % (unknown.port, unknown.hostname)
    where = _display_path(known.write_file) if known.write_file else "known_hosts"
    return UnknownHostKey(
        unknown.node, unknown.message + ", and the ssh config says StrictHostKeyChecking yes",
        hint=_STRICT_HINT % (where, "ssh -o StrictHostKeyChecking=ask " + ssh_target),
        hostname=unknown.hostname, port=unknown.port, host_label=unknown.host_label,
        key_type=unknown.key_type, fingerprint=unknown.fingerprint,
        known_hosts_file=unknown.known_hosts_file)


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """:func:`verify_server_key` as a paramiko policy, for ``SSHClient``.

    ``SSHClient`` consults its policy only for keys missing from its own host key set
    and raises its own ``BadHostKeyException`` (naming no file) for changed ones; so
    load nothing into the client (no ``load_system_host_keys``), and every key comes
    here. In mode ``ask``, ``on_unknown`` is asked (it gets the
    :class:`UnknownHostKey`) and the key is added if it returns True; without it the
    key is refused, since nobody can be asked. ``hash_names`` is HashKnownHosts.
    ``result`` holds the last outcome.
    """

    def __init__(self, known_hosts: KnownHosts, node: str, port: int, mode: str,
                 on_unknown: Callable[[UnknownHostKey], bool] | None = None, *,
                 host_key_alias: str | None = None, ssh_target: str | None = None,
                 hash_names: bool = False) -> None:
        if mode not in MODES:
            raise ValueError("host key mode must be one of %s, not %r" % (", ".join(MODES), mode))
        self.known_hosts = known_hosts
        self.node = node
        self.port = port
        self.mode = mode
        self.on_unknown = on_unknown
        self.host_key_alias = host_key_alias
        self.ssh_target = ssh_target
        self.hash_names = hash_names
        self.result: str | None = None

    def missing_host_key(self, client, hostname: str, key) -> None:
        # paramiko passes "[host]:port" for ports other than 22.
        match = re.fullmatch(r"\[(.*)\]:(\d+)", hostname)
        if match:
            hostname = match.group(1)
        self.verify(hostname, key)

    def verify(self, hostname: str, key) -> str:
        """Check ``key`` for ``hostname`` (at this policy's port); the outcome, or raise."""
        args = (self.known_hosts, self.node, hostname, self.port, key, self.mode)
        kwargs = dict(host_key_alias=self.host_key_alias, ssh_target=self.ssh_target,
                      hash_names=self.hash_names)
        try:
            self.result = verify_server_key(*args, **kwargs)
        except UnknownHostKey as unknown:
            if self.mode != "ask" or self.on_unknown is None or not self.on_unknown(unknown):
                raise
            self.result = verify_server_key(*args, accept_unknown=True, **kwargs)
        return self.result
