"""A restricted host's policy file: what its owner lets run there, and within what limits.

Plain text, one rule a line; ``#`` starts a comment::

    allow mathlib.*            # every public function of module mathlib
    allow os.getloadavg        # one function
    path /srv/lab/lib          # a directory the workers import from
    slots 2                    # at most 2 worker processes, whatever the hosts file asks
    nice 10                    # workers run at this nice level
    memory 2G                  # address space per worker (bytes; K, M, G suffixes)
    payload 16M                # the largest message body a controller may send
    queue 64M                  # the most bytes of calls kept waiting for a slot

``allow`` takes ``module.function`` (a dotted module path, then a function name) or
``module.*``. A pattern matches the public functions (not ``_private``) that the module
itself defines: the function found must say so (its ``__module__`` is the module's name),
so what the module imported (``from os import system``) is not reached through it. An
exact name matches just that one, wherever it was defined (``allow os.getpid``).

The owner's limits bind the node itself, whatever a controller asks: without a ``slots``
line it runs at most as many workers as the host has CPUs (a ``slots`` line may say
more or fewer); a message whose body is over ``payload`` (default ``DEFAULT_PAYLOAD``,
16M) is read and dropped without being kept, and its call refused; a call that would
take the calls waiting for a slot past ``queue`` bytes (default ``DEFAULT_QUEUE``, 64M;
each call counts its size and 512 bytes, ``pool.TASK_OVERHEAD``) is refused at once.
A refusal names the rule and the policy file; the connection and the node go on.

The file must belong to root or to the account the node runs as and be writable by
nobody else, and so must its directory; each ``path`` directory, and every directory
above it up to ``/``, must belong to root or to that account and be writable by nobody
else (a parent with the sticky bit, like ``/tmp``, may be: nobody else can rename or
remove what is ours in it), or another user could put a module there that the node
would run. The node refuses to start otherwise, naming the file (and for a ``path``, its
line and the directory), as it does for a line that does not parse (naming the line).

Imports only the standard library: it is read on the host. See docs/how-it-works.md,
"Restricted hosts".
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field

from ..wire import DEFAULT_MAX_PAYLOAD

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(r"%s(?:\.%s)*" % (_IDENT, _IDENT)).fullmatch
_FUNCTION = re.compile(_IDENT).fullmatch
_ALLOW = re.compile(r"(%s(?:\.%s)*)\.(%s|\*)" % (_IDENT, _IDENT, _IDENT)).fullmatch
_SIZE = re.compile(r"([0-9]+)([KMGT]?)(?:i?B)?", re.IGNORECASE).fullmatch
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_SLOTS = 4096
MIN_MEMORY = 32 << 20  # less than this and a worker cannot even start Python
DEFAULT_PAYLOAD = 16 << 20  # the largest message body a controller may send, unless the policy says
DEFAULT_QUEUE = 64 << 20  # bytes of calls waiting for a slot, unless the policy says
MIN_SIZE = 1 << 10  # the least 'payload' or 'queue' may be
MAX_POLICY_BYTES = 1 << 20
RULES = ("allow", "path", "slots", "nice", "memory", "payload", "queue")
SIZES = ("memory", "payload", "queue")  # the rules that take a size
# What a restricted node takes after the handshake; any other kind (one added later, a
# spawn, say) is refused until it is written into the gate.
SERVED = frozenset(("call", "map", "ping", "cancel", "stop"))


class PolicyError(Exception):
    """The policy file cannot be used; the message names the file (and the line)."""


@dataclass(frozen=True)
class Policy:
    """A parsed policy: the ``allow`` patterns and the owner's limits."""

    path: str
    allows: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    slots: int | None = None
    nice: int | None = None
    memory: int | None = None
    payload: int | None = None
    queue: int | None = None
    digest: str = ""  # sha256 of the file's bytes (see ``load``): which policy a node enforces
    path_lines: tuple[int, ...] = field(default=(), compare=False)  # the line of each ``paths``
    exact: frozenset = field(default=frozenset(), compare=False)
    modules: frozenset = field(default=frozenset(), compare=False)

    def max_slots(self) -> int:
        """The most workers the node runs: the ``slots`` line, else the host's CPUs (a
        controller asking for more gets no more)."""
        return self.slots if self.slots is not None else (os.cpu_count() or 1)

    def max_payload(self) -> int:
        """The largest message body a controller may send."""
        return self.payload if self.payload is not None else DEFAULT_PAYLOAD

    def max_queued(self) -> int:
        """The most bytes of calls kept waiting for a slot."""
        return self.queue if self.queue is not None else DEFAULT_QUEUE

    def allowed(self, mod: str, fun: str) -> bool:
        """Whether ``mod.fun`` may be called: an exact rule, or ``mod.*`` and ``fun``
        public. Names that are not a module path and one function name never are."""
        if not (isinstance(mod, str) and isinstance(fun, str) and _MODULE(mod) and _FUNCTION(fun)):
            return False
        if "%s.%s" % (mod, fun) in self.exact:
            return True
        return mod in self.modules and not fun.startswith("_")

    def admits(self, mod: str, fun: str, function) -> bool:
        """Whether ``function``, found as ``mod.fun``, may be called: an exact rule names
        it, or a pattern matches the name and ``mod`` defined it (what a module imported
        is not its own: ``from os import system`` gives ``mod.system`` of posix)."""
        if "%s.%s" % (mod, fun) in self.exact:
            return True
        return self.allowed(mod, fun) and getattr(function, "__module__", None) == mod

    def refusal_of(self, mod: str, fun: str, function) -> str:
        """Why ``function``, found as ``mod.fun``, is refused: where it was defined."""
        if not self.allowed(mod, fun):
            return self.refusal(mod, fun)
        where = getattr(function, "__module__", None)
        name = getattr(function, "__qualname__", None) or getattr(function, "__name__", fun)
        origin = "%s.%s" % (where, name) if isinstance(where, str) else "not defined in any module"
        return ("%s.%s is not allowed: it is %s, which %s only imported, and 'allow %s.*' of the "
                "host's policy %s matches only the functions %s defines (the owner may allow it by "
                "its own name)" % (mod, fun, origin, mod, mod, self.path, mod))

    def rule_text(self, rule: str) -> str:
        """A limit as the owner set it, or said to be the default, with the file's name."""
        value = getattr(self, rule)
        if value is not None:
            return "'%s %s' in the policy %s" % (rule, size_text(value), self.path)
        default = {"payload": DEFAULT_PAYLOAD, "queue": DEFAULT_QUEUE}[rule]
        return ("'%s' (the policy %s has no '%s' line: %s by default)"
                % (rule, self.path, rule, size_text(default)))

    def over_payload(self, size: int, op: str = "call") -> str:
        """Why a message of ``size`` body bytes was dropped unread."""
        return ("this %s carries %d bytes, over the most this host takes in one message, %s: "
                "send less at a time" % (str(op)[:64], size, self.rule_text("payload")))

    def over_queue(self, queued: int, size: int) -> str:
        """Why a call of ``size`` bytes is not queued behind ``queued`` bytes of calls."""
        return ("the calls waiting for a slot here hold %d bytes, and this one (%d bytes) would "
                "pass the most this host keeps waiting, %s: wait for results before sending "
                "more" % (queued, size, self.rule_text("queue")))

    def refusal(self, mod: str, fun: str) -> str:
        """Why ``mod.fun`` is refused, for the caller: which rules there are, and where."""
        if not (isinstance(mod, str) and isinstance(fun, str) and _MODULE(mod) and _FUNCTION(fun)):
            return ("%r is not a module.function name; a restricted host calls only functions "
                    "named that way, as its policy %s allows" % ("%s.%s" % (mod, fun), self.path))
        return ("%s.%s is not allowed: no 'allow' rule of the host's policy %s matches it "
                "(it allows %s)" % (mod, fun, self.path, self.summary()))

    def refuses(self, head: dict) -> str | None:
        """The gate of a restricted node: why the message ``head`` must not be acted on,
        or None. Pickled code (a definition, a call or map of a defined function) and
        pickled arguments are refused whatever the rules; a call or map by name must be
        of an allowed function. Pings, cancels and stops pass; nothing else does."""
        op = head.get("op")
        if op == "defn" or (op in ("call", "map") and "fk" in head):
            return ("a restricted host takes no pickled code: it runs only module.function "
                    "names its owner allows (policy %s)" % self.path)
        if op in ("envcheck", "envput", "envlist", "envdrop"):
            return ("a restricted host takes no shipped packages: it runs only what its owner "
                    "installed (policy %s)" % self.path)
        if op not in SERVED:
            return ("a restricted host does not take %r messages: it serves calls and maps of "
                    "the functions its owner allows (policy %s)" % (str(op)[:64], self.path))
        if op in ("call", "map"):
            if head.get("enc") != "json":
                return "a restricted host takes arguments only as plain data (JSON), never pickled"
            mod, fun = head.get("mod"), head.get("fun")
            if not self.allowed(mod, fun):
                return self.refusal(mod, fun)
        return None

    def summary(self) -> str:
        """The allowed names, shortened for a one-line message."""
        if not self.allows:
            return "nothing"
        shown = ", ".join(self.allows[:6])
        return shown + (", ... (%d rules)" % len(self.allows) if len(self.allows) > 6 else "")


def parse(text: str, path: str, digest: str = "") -> Policy:
    """The policy in ``text`` (read from ``path``, whose bytes have the sha256 ``digest``);
    PolicyError naming the line of the first rule that does not parse."""
    allows: list[str] = []
    paths: list[str] = []
    path_lines: list[int] = []
    limits: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        rule, args = words[0].lower(), words[1:]

        def bad(why: str) -> PolicyError:
            return PolicyError("policy %s line %d: %s: %s" % (path, number, why, line.strip()[:200]))

        if rule not in RULES:
            raise bad("unknown rule %r (the rules are %s)" % (words[0][:40], ", ".join(RULES)))
        if len(args) != 1:
            raise bad("'%s' takes one value" % rule)
        value = args[0]
        if rule == "allow":
            if not _ALLOW(value):
                raise bad("'allow' takes module.function or module.* (e.g. mathlib.add, mathlib.*)")
            allows.append(value)
        elif rule == "path":
            if not os.path.isabs(value):
                raise bad("'path' takes an absolute directory")
            paths.append(os.path.normpath(value))
            path_lines.append(number)
        elif rule in limits:
            raise bad("'%s' is given twice" % rule)
        else:
            limits[rule] = _limit(rule, value, bad)
    exact = frozenset(a for a in allows if not a.endswith(".*"))
    modules = frozenset(a[:-2] for a in allows if a.endswith(".*"))
    return Policy(path=path, allows=tuple(allows), paths=tuple(paths), slots=limits.get("slots"),
                  nice=limits.get("nice"), memory=limits.get("memory"),
                  payload=limits.get("payload"), queue=limits.get("queue"), digest=digest,
                  path_lines=tuple(path_lines), exact=exact, modules=modules)


def size_text(size: int) -> str:
    """A size as a policy writes it: ``16M``, ``1500K``, or bytes."""
    for unit in "TGMK":
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return "%d%s" % (size // _UNITS[unit], unit)
    return str(size)


def _limit(rule: str, value: str, bad) -> int:
    if rule in SIZES:
        return _size(rule, value, bad)
    try:
        number = int(value)
    except ValueError:
        raise bad("'%s' takes a whole number" % rule) from None
    if rule == "slots" and not 1 <= number <= MAX_SLOTS:
        raise bad("'slots' takes a number from 1 to %d" % MAX_SLOTS)
    if rule == "nice" and not 0 <= number <= 19:
        raise bad("'nice' takes a number from 0 to 19")
    return number


def _size(rule: str, value: str, bad) -> int:
    match = _SIZE(value)
    if not match:
        raise bad("'%s' takes a size in bytes, with K, M, G or T (e.g. 512M, 2G)" % rule)
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    least = MIN_MEMORY if rule == "memory" else MIN_SIZE
    if size < least:
        raise bad("'%s' must be at least %s" % (rule, size_text(least)))
    if rule == "payload" and size > DEFAULT_MAX_PAYLOAD:
        raise bad("'payload' must be at most %s (what the node's frames can carry)"
                  % size_text(DEFAULT_MAX_PAYLOAD))
    return size


def check_place(path: str) -> None:
    """``path`` and its directory must belong to root or to us and be writable by no one
    else (else whoever can write them decides what runs here); PolicyError if not."""
    for place, what in ((path, "policy file"), (os.path.dirname(os.path.abspath(path)), "directory of the policy file")):
        try:
            st = os.stat(place)
        except OSError as exc:
            raise PolicyError("cannot read the %s %s: %s" % (what, place, exc.strerror or exc)) from None
        if what == "policy file" and not stat.S_ISREG(st.st_mode):
            raise PolicyError("the policy file %s is not a regular file" % place)
        if st.st_uid not in (0, os.getuid()):
            raise PolicyError("the %s %s belongs to uid %d, not to root or to this account (uid %d): "
                              "only the host's owner may decide what runs here"
                              % (what, place, st.st_uid, os.getuid()))
        if st.st_mode & 0o022:
            raise PolicyError("the %s %s is writable by group or others (mode %03o): chmod go-w %s"
                              % (what, place, st.st_mode & 0o777, place))


def fingerprint(path: str):
    """What changes when the file is replaced or edited (see ``Node.housekeeping``)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid)


def check_paths(policy: Policy) -> None:
    """Every ``path`` directory, and each one above it, must be one only root or we can
    change (else another user puts a module there, and the workers run it as us);
    PolicyError naming the file, the line and the directory if not."""
    for directory, number in zip(policy.paths, policy.path_lines):
        why = unsafe_directory(directory)
        if why is not None:
            raise PolicyError("policy %s line %d: %s" % (policy.path, number, why))


def unsafe_directory(directory: str) -> str | None:
    """Why ``directory`` is not a safe place to import from, or None. Checked are it and
    its parents up to ``/``, as written and with symbolic links resolved. A parent may be
    writable by others if it has the sticky bit (``/tmp``): they cannot move ours away."""
    real = os.path.realpath(directory)
    itself = {os.path.normpath(directory), real}
    for place in sorted(set(_upwards(directory)) | set(_upwards(real)), key=len):
        try:
            st = os.stat(place)
        except OSError as exc:
            return "cannot use the directory %s: %s" % (place, exc.strerror or exc)
        why = _unsafe_place(place, st, sticky_ok=place not in itself)
        if why is not None:
            return why if place in itself else "%s (it is above the path %s)" % (why, directory)
    return None


def _unsafe_place(place: str, st, sticky_ok: bool) -> str | None:
    """Why the directory ``place`` (stat ``st``) lets someone else decide what is in it."""
    if not stat.S_ISDIR(st.st_mode):
        return "%s is not a directory" % place
    if st.st_uid not in (0, os.getuid()):
        return ("the directory %s belongs to uid %d, not to root or to this account (uid %d): "
                "only the host's owner may decide what runs here" % (place, st.st_uid, os.getuid()))
    if st.st_mode & 0o022 and not (sticky_ok and st.st_mode & stat.S_ISVTX):
        return ("the directory %s is writable by group or others (mode %03o): chmod go-w %s"
                % (place, st.st_mode & 0o777, place))
    return None


def _upwards(directory: str) -> list:
    """``directory`` and each directory above it, up to ``/``."""
    places = [os.path.normpath(directory)]
    while places[-1] != os.path.dirname(places[-1]):
        places.append(os.path.dirname(places[-1]))
    return places


def load(path: str) -> Policy:
    """The policy in the file ``path``, its place and its ``path`` directories checked;
    PolicyError if it cannot be used. Its ``digest`` is of the bytes read."""
    check_place(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError("cannot read the policy file %s: %s" % (path, exc.strerror or exc)) from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError("the policy file %s is larger than %d bytes" % (path, MAX_POLICY_BYTES))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError("cannot read the policy file %s: %s" % (path, exc)) from None
    policy = parse(text, path, hashlib.sha256(data).hexdigest())
    check_paths(policy)
    return policy
