"""A restricted host's policy file: what its owner lets run there, and within what limits.

Plain text, one rule a line; ``#`` starts a comment::

    allow mathlib.*            # every public function of module mathlib
    allow os.getloadavg        # one function
    path /srv/lab/lib          # a directory the workers import from
    slots 2                    # at most 2 worker processes, whatever the hosts file asks
    nice 10                    # workers run at this nice level
    memory 2G                  # address space per worker (bytes; K, M, G suffixes)

``allow`` takes ``module.function`` (a dotted module path, then a function name) or
``module.*``; a pattern matches public functions only (not ``_private``), an exact name
matches just that one. The file must belong to root or to the account the node runs as
and be writable by nobody else, and so must its directory: the node refuses to start
otherwise, naming the file, as it does for a line that does not parse (naming the line).

Imports only the standard library: it is read on the host. See docs/how-it-works.md,
"Restricted hosts".
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(r"%s(?:\.%s)*" % (_IDENT, _IDENT)).fullmatch
_FUNCTION = re.compile(_IDENT).fullmatch
_ALLOW = re.compile(r"(%s(?:\.%s)*)\.(%s|\*)" % (_IDENT, _IDENT, _IDENT)).fullmatch
_SIZE = re.compile(r"([0-9]+)([KMGT]?)(?:i?B)?", re.IGNORECASE).fullmatch
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_SLOTS = 4096
MIN_MEMORY = 32 << 20  # less than this and a worker cannot even start Python
RULES = ("allow", "path", "slots", "nice", "memory")
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
    exact: frozenset = field(default=frozenset(), compare=False)
    modules: frozenset = field(default=frozenset(), compare=False)

    def allowed(self, mod: str, fun: str) -> bool:
        """Whether ``mod.fun`` may be called: an exact rule, or ``mod.*`` and ``fun``
        public. Names that are not a module path and one function name never are."""
        if not (isinstance(mod, str) and isinstance(fun, str) and _MODULE(mod) and _FUNCTION(fun)):
            return False
        if "%s.%s" % (mod, fun) in self.exact:
            return True
        return mod in self.modules and not fun.startswith("_")

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


def parse(text: str, path: str) -> Policy:
    """The policy in ``text`` (read from ``path``); PolicyError naming the line of the
    first rule that does not parse."""
    allows: list[str] = []
    paths: list[str] = []
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
        elif rule in limits:
            raise bad("'%s' is given twice" % rule)
        else:
            limits[rule] = _limit(rule, value, bad)
    exact = frozenset(a for a in allows if not a.endswith(".*"))
    modules = frozenset(a[:-2] for a in allows if a.endswith(".*"))
    return Policy(path=path, allows=tuple(allows), paths=tuple(paths), slots=limits.get("slots"),
                  nice=limits.get("nice"), memory=limits.get("memory"), exact=exact, modules=modules)


def _limit(rule: str, value: str, bad) -> int:
    if rule == "memory":
        match = _SIZE(value)
        if not match:
            raise bad("'memory' takes a size in bytes, with K, M, G or T (e.g. 512M, 2G)")
        size = int(match.group(1)) * _UNITS[match.group(2).upper()]
        if size < MIN_MEMORY:
            raise bad("'memory' must be at least %dM" % (MIN_MEMORY >> 20))
        return size
    try:
        number = int(value)
    except ValueError:
        raise bad("'%s' takes a whole number" % rule) from None
    if rule == "slots" and not 1 <= number <= MAX_SLOTS:
        raise bad("'slots' takes a number from 1 to %d" % MAX_SLOTS)
    if rule == "nice" and not 0 <= number <= 19:
        raise bad("'nice' takes a number from 0 to 19")
    return number


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


def load(path: str) -> Policy:
    """The policy in the file ``path``, its place checked first; PolicyError if it
    cannot be used."""
    check_place(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1 << 20)
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError("cannot read the policy file %s: %s" % (path, exc)) from None
    return parse(text, path)
