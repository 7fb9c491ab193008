"""The hosts file: which machines clusterctl runs nodes on, and how to reach them.

Why a module of its own: the hosts file is the user's only configuration and every
command reads it, so a typo in it must become one clear error naming the file and the
line *before* anything connects, not an SSH failure ten seconds later on node 37.
Parsing is therefore strict and happens up front on the controller; it produces frozen
:class:`HostSpec` values that the transport and cluster layers take as they are.

This module is controller side only. It imports the standard library and
``clusterctl.dirs`` (the per-user config directory), never click, paramiko or rich, so
reading the hosts file is fast and cannot fail for reasons that have nothing to do with
the file.

Syntax, one host a line (``hosts.example`` at the repository root shows all of it)::

    # comment                         whole-line or trailing (after whitespace)
    local                             a node on this machine, no SSH
    local name=n2 slots=2             options are key=value, separated by whitespace
    myalias                           an ~/.ssh/config Host alias
    alice@node03:2222                 [user@]host[:port]
    [fe80::1]   user@[::1]:2222       IPv6 literals go in brackets
    node[01-16] slots=8               ranges keep zero padding; MPI hostfile style
    r[1-2]n[1,3,5-7]                  lists, and several ranges form a product
    node[1-4] name=w[1-4]             a name for each host of a range
    gpu1 python=/opt/venv/bin/python idle=600

Options: ``name=`` (unique node name), ``slots=`` (worker processes, >= 1; default one
per CPU of that host), ``python=`` (interpreter on that host: a path or command, one
word without shell characters), ``idle=`` (seconds a node with nothing to do waits
before it exits). Without ``name=`` a node is named after its
host (``local`` for local); hosts that would share such a name are numbered in file
order (``local-1``, ``local-2``).

Where the file is found: ``--hosts FILE``, then ``$CLUSTERCTL_HOSTS``, then ``./hosts``,
then ``hosts`` in the user config directory (``click.get_app_dir("clusterctl")``).
With none, the world is one local node with a slot per CPU, so every command works on
a fresh machine with no setup.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clusterctl.config.dirs import config_dir
from clusterctl.errors import HostsFileError

__all__ = [
    "DEFAULT_PYTHON",
    "ENV_VAR",
    "HostSpec",
    "MAX_EXPANSION",
    "default_world",
    "expand_ranges",
    "find_hosts_file",
    "load_hosts",
    "parse_hosts",
    "resolve_world",
]

DEFAULT_PYTHON = "python3"
"""Interpreter started on an SSH host when its line has no ``python=``."""

LOCAL = "local"
"""The target that means "this machine, no SSH"."""

ENV_VAR = "CLUSTERCTL_HOSTS"
"""Environment variable naming a hosts file (second in the lookup order)."""

HOSTS_FILENAME = "hosts"

MAX_EXPANSION = 10_000
"""Most hosts one range pattern may expand to: a typo like ``node[1-100000]`` should be
an error, not a hundred thousand SSH connections."""

OPTION_KEYS = ("name", "slots", "python", "idle", "restricted")

_ALLOWED_OPTIONS = "name=, slots=, python=, idle=, restricted="
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Host names and ssh aliases: the same alphabet as node names, so a derived name is
# always valid, and never a leading '-' that ssh could read as an option.
_HOST_RE = _NAME_RE
# A login name: anything ssh would pass on, except what would make the target ambiguous.
_USER_RE = re.compile(r"[^\s:/\[\]-][^\s:/\[\]]*")
_DIGITS_RE = re.compile(r"[0-9]+")
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# python=: a path or a command name, "~/" allowed in front; no shell syntax (it is also
# quoted where a remote command is built, so this is for a clear error up front)
_PYTHON_RE = re.compile(r"(?:~/)?[\w./+:@%,#=-]+")
_RANGE_ITEM_RE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
# Ansible writes ranges as www[01:50] (or [a:f], [01:50:2]): never a valid IPv6 address,
# which needs '::' or seven colons, so it is safe to recognise and explain.
_ANSIBLE_RANGE_RE = re.compile(r"([0-9A-Za-z]+):([0-9A-Za-z]+)(?::[0-9]+)?")
# What users coming from other tools write for our options.
_KEY_HINTS = {
    "workers": "SCOOP's workers= is slots= here",
    "max_slots": "the number of worker processes is slots=",
    "max-slots": "the number of worker processes is slots=",
    "cpus": "the number of worker processes is slots=",
    "procs": "the number of worker processes is slots=",
    "np": "the number of worker processes is slots=",
    "user": "write the user in the target: user@host",
    "ansible_user": "write the user in the target: user@host",
    "port": "write the port in the target: host:port",
    "ansible_port": "write the port in the target: host:port",
    "host": "the host is the first word of the line",
    "ansible_host": "the host is the first word of the line (or an ~/.ssh/config alias)",
    "ansible_python_interpreter": "the interpreter is python=",
    "interpreter": "the interpreter is python=",
    "timeout": "the idle timeout is idle= (seconds)",
}


@dataclass(frozen=True)
class HostSpec:
    """One node to run: where (target), under which name, and how.

    Frozen so that the world read at startup is the world used throughout: the
    scheduler, the transport and the renderers all see the same values.
    """

    name: str
    """Node name, unique in the world (``n1``, ``node03``, ``local-2``)."""
    target: str
    """``"local"``, or the SSH destination as written after range expansion
    (``alice@node03:2222``, ``[fe80::1]:22``, ``myalias``)."""
    user: str | None = None
    """Login name from the target; None for local or when absent (ssh config decides)."""
    host: str | None = None
    """Host part without brackets; for an ssh alias, the alias. None for local."""
    port: int | None = None
    """Port from the target; None when not given (ssh config or 22 decides)."""
    slots: int | None = None
    """Worker processes; None means one per CPU of that host, decided by the node."""
    python: str | None = None
    """Interpreter on that host; None means the default: :data:`DEFAULT_PYTHON` over
    SSH, the controller's own ``sys.executable`` for local."""
    idle: float | None = None
    """Seconds a node with nothing to do waits before exiting; None means the default."""
    restricted: bool = False
    """The host is lent under its owner's policy (``restricted=yes``): it must answer as a
    restricted host, or nothing is sent to it (it never gets the cookie either way)."""
    source: str = "<default>"
    """``FILE:LINE`` where this node was defined, for error messages."""

    @property
    def is_local(self) -> bool:
        """True for a node on the controller's machine, started without SSH."""
        return self.target == LOCAL


class _LineError(Exception):
    """A problem with one line; :func:`parse_hosts` adds the file and line number."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class DestinationError(_LineError):
    """An SSH destination that is not ``[user@]host[:port]`` (see :func:`parse_destination`)."""


# --------------------------------------------------------------------------- ranges


def expand_ranges(pattern: str) -> list[str]:
    """Expand pdsh/ClusterShell-style ranges: ``node[01-03]`` -> node01 node02 node03.

    A bracket holds comma-separated numbers or ``N-M`` ranges (``[1,3,5-7]``); a range
    keeps the zero padding of its start bound (``[08-10]`` -> 08 09 10); a single number
    is kept as written. Several brackets form the cartesian product, leftmost slowest
    (``r[1-2]n[1-2]`` -> r1n1 r1n2 r2n1 r2n2). A bracket containing ``:`` is an IPv6
    literal (``[fe80::1]``) and is kept as it is. A pattern with no brackets expands to
    itself.

    Raises ValueError, with a message meant for the user, on an unclosed or stray
    bracket, an empty, non-numeric or reversed range, an Ansible-style ``[01:50]``
    range, or more than :data:`MAX_EXPANSION` results.
    """
    # Each segment is a list of items (start, stop): a literal piece of text or a single
    # number is (text, None); a range is (start, stop). Ranges stay unexpanded until the
    # total is known to be sane, so node[1-999999999] costs nothing before it is refused.
    segments: list[list[tuple[str, str | None]]] = []
    literal: list[str] = []
    total = 1
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "]":
            raise ValueError(f"unmatched ']' in {pattern!r}")
        if char != "[":
            literal.append(char)
            i += 1
            continue
        end = pattern.find("]", i + 1)
        if end < 0:
            raise ValueError(f"unclosed '[' in {pattern!r}")
        body = pattern[i + 1:end]
        if "[" in body:
            raise ValueError(f"nested '[' in {pattern!r}")
        if ":" in body:
            ansible = _ANSIBLE_RANGE_RE.fullmatch(body)
            if ansible:
                raise ValueError(
                    f"[{body}] in {pattern!r} looks like an Ansible range; write ranges "
                    f"with '-', e.g. [{ansible.group(1)}-{ansible.group(2)}]")
            literal.append(pattern[i:end + 1])  # an IPv6 literal, not a range
            i = end + 1
            continue
        if literal:
            segments.append([("".join(literal), None)])
            literal = []
        items, count = _parse_range_body(body, pattern)
        segments.append(items)
        total *= count
        i = end + 1
    if literal:
        segments.append([("".join(literal), None)])
    if total > MAX_EXPANSION:
        raise ValueError(f"{pattern!r} expands to {total:,} hosts, "
                         f"more than the limit of {MAX_EXPANSION:,}")
    choices = [_materialise(items) for items in segments]
    return ["".join(parts) for parts in itertools.product(*choices)]


def _parse_range_body(body: str, pattern: str) -> tuple[list[tuple[str, str | None]], int]:
    """Check the inside of one ``[...]``; return its items and how many values they give."""
    if body == "":
        raise ValueError(f"empty range [] in {pattern!r}")
    items: list[tuple[str, str | None]] = []
    count = 0
    for item in body.split(","):
        if item == "":
            raise ValueError(f"empty item in range [{body}] in {pattern!r}")
        match = _RANGE_ITEM_RE.fullmatch(item)
        if match is None:
            raise ValueError(
                f"bad range [{body}] in {pattern!r}: {item!r} is not a number or N-M")
        start, stop = match.group(1), match.group(2)
        if stop is not None and int(stop) < int(start):
            raise ValueError(f"reversed range {item!r} in {pattern!r}: "
                             f"write the smaller bound first ({stop}-{start})")
        items.append((start, stop))
        count += 1 if stop is None else int(stop) - int(start) + 1
    return items, count


def _materialise(items: list[tuple[str, str | None]]) -> list[str]:
    """The values of one checked range body, padded to the width of each start bound."""
    values: list[str] = []
    for start, stop in items:
        if stop is None:
            values.append(start)
        else:
            width = len(start)
            values.extend(str(n).zfill(width) for n in range(int(start), int(stop) + 1))
    return values


# -------------------------------------------------------------------------- parsing


def parse_hosts(text: str, filename: str = "<hosts>") -> list[HostSpec]:
    """Parse the text of a hosts file into node specs, in file order.

    Tolerates a UTF-8 byte order mark and CRLF (or CR) line endings, as written by
    Windows editors. Every problem raises :class:`HostsFileError` naming
    ``filename:line`` with a hint of what is allowed; a file without hosts is an error
    too, since an empty world is never what the user meant.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    # (explicit name or None, default-name base, line number, the other fields)
    entries: list[tuple[str | None, str, int, dict[str, object]]] = []
    for lineno, raw in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        try:
            entries.extend(_parse_line(raw, lineno, filename))
        except _LineError as exc:
            raise HostsFileError(exc.message, path=filename, line=lineno, hint=exc.hint) from None
    if not entries:
        raise HostsFileError(
            "defines no hosts", path=filename,
            hint="add a line such as 'local' or 'user@host'; see hosts.example")
    return _name_nodes(entries, filename)


def _strip_comment(line: str) -> str:
    """Drop a comment: '#' at the start or after whitespace (so 'a#b' stays a word)."""
    match = re.search(r"(?:^|\s)#", line)
    return line if match is None else line[:match.start()]


def _parse_line(raw: str, lineno: int,
                filename: str) -> list[tuple[str | None, str, int, dict[str, object]]]:
    """The entries one line defines: none for a blank or comment line, several for a range."""
    tokens = _strip_comment(raw).split()
    if not tokens:
        return []
    first, option_tokens = tokens[0], tokens[1:]
    _reject_foreign_syntax(first)
    options = _parse_options(option_tokens)
    if first == LOCAL:
        if options.get("restricted"):
            raise _LineError("restricted=yes on a local node",
                             hint="a local node is the controller's own; restricted= is for "
                                  "hosts whose owner lends them under a policy")
        targets = [LOCAL]
    else:
        try:
            targets = expand_ranges(first)
        except ValueError as exc:
            raise _LineError(str(exc), hint="ranges look like node[01-16] or node[1,3,5-7]; "
                             "an IPv6 address in brackets looks like [fe80::1]") from None
    names = _expand_names(options.get("name"), len(targets), first)
    entries = []
    for index, target in enumerate(targets):
        fields: dict[str, object] = {
            "target": target,
            "slots": options.get("slots"),
            "python": options.get("python"),
            "idle": options.get("idle"),
            "restricted": options.get("restricted", False),
            "source": f"{filename}:{lineno}",
        }
        if target == LOCAL:
            base = LOCAL
        else:
            user, host, port = parse_destination(target)
            fields.update(user=user, host=host, port=port)
            base = _derived_name(host)
        entries.append((names[index] if names else None, base, lineno, fields))
    return entries


def _reject_foreign_syntax(first: str) -> None:
    """Explain lines from other tools' host files instead of failing on them obscurely."""
    if "=" in first:
        raise _LineError(f"the line starts with {first!r}, not a host",
                         hint="the host comes first, then options: 'node1 slots=8'")
    if first.startswith("'") or first.endswith("'."):
        bare = first.removesuffix(".").strip("'")
        raise _LineError(f"{first!r} looks like an Erlang .hosts.erlang entry",
                         hint=f"write the bare host: {bare}")
    if first.startswith("ssh://"):
        raise _LineError(f"{first!r} is a URL",
                         hint=f"write the destination without ssh://: {first[len('ssh://'):]}")
    # [webservers], [all:vars], [db:children]; an IPv6 literal has other colons.
    if re.fullmatch(r"\[[A-Za-z_][\w.-]*(?::vars|:children)?\]", first):
        raise _LineError(f"{first!r} looks like an INI section header (Ansible inventory?)",
                         hint="a clusterctl hosts file has no sections: one host a line")


def _parse_options(tokens: list[str]) -> dict[str, object]:
    """Check the ``key=value`` words after the target and convert their values."""
    raw: dict[str, str] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq:
            raise _LineError(
                f"expected key=value after the host, got {token!r}",
                hint=f"one host a line; options are {_ALLOWED_OPTIONS}, e.g. 'node1 slots=8'")
        if key == "":
            raise _LineError(f"{token!r} has no option name", hint=_unknown_key_hint(key))
        if key not in OPTION_KEYS:
            raise _LineError(f"unknown option {key!r}", hint=_unknown_key_hint(key))
        if key in raw:
            raise _LineError(f"option {key}= given twice",
                             hint=f"keep one of {key}={raw[key]} and {token}")
        raw[key] = value

    options: dict[str, object] = {}
    if "name" in raw:
        if raw["name"] == "":
            raise _LineError("empty name=", hint="a name is letters, digits, '.', '_' and '-'")
        options["name"] = raw["name"]
    if "slots" in raw:
        value = raw["slots"]
        if not _DIGITS_RE.fullmatch(value) or int(value) < 1:
            raise _LineError(f"bad slots={value}",
                             hint="slots= is a whole number of worker processes, at least 1; "
                                  "leave it out for one per CPU")
        options["slots"] = int(value)
    if "python" in raw:
        if raw["python"] == "":
            raise _LineError("empty python=",
                             hint="python= is an interpreter path or command on that host, "
                                  "e.g. python=/opt/venv/bin/python")
        if not _PYTHON_RE.fullmatch(raw["python"]):
            raise _LineError(
                f"python={raw['python']} is not a plain interpreter path or command",
                hint="python= names the program to run on that host (e.g. /opt/venv/bin/python, "
                     "~/venv/bin/python3, python3.11), without spaces or shell characters "
                     "such as ; $ ` | & ( ) < > ' \" \\ * ?")
        options["python"] = raw["python"]
    if "idle" in raw:
        value = raw["idle"]
        seconds = float(value) if _DECIMAL_RE.fullmatch(value) else math.nan
        if not (seconds > 0 and math.isfinite(seconds)):
            raise _LineError(f"bad idle={value}",
                             hint="idle= is a number of seconds greater than 0, e.g. idle=600")
        options["idle"] = seconds
    if "restricted" in raw:
        value = raw["restricted"].lower()
        if value not in ("yes", "no"):
            raise _LineError(f"bad restricted={raw['restricted']}",
                             hint="restricted=yes says the host's owner lends it under a policy "
                                  "(see Restricted hosts in the README); restricted=no is the default")
        options["restricted"] = value == "yes"
    return options


def _unknown_key_hint(key: str) -> str:
    """Point users of MPI, SCOOP or Ansible host files (and typos) at our option."""
    allowed = f"options are {_ALLOWED_OPTIONS}"
    if key.lower() in _KEY_HINTS:
        return f"{_KEY_HINTS[key.lower()]}; {allowed}"
    close = difflib.get_close_matches(key.lower(), OPTION_KEYS, n=1)
    if close:
        return f"did you mean {close[0]}=? {allowed}"
    return allowed


def _expand_names(name: object, count: int, first: str) -> list[str]:
    """One name per host of the line, from ``name=`` (which may hold a range), or []."""
    if name is None:
        return []
    assert isinstance(name, str)
    try:
        names = expand_ranges(name)
    except ValueError as exc:
        raise _LineError(f"name=: {exc}", hint="a range in name= looks like w[1-4]") from None
    if len(names) != count:
        if count == 1:
            hint = "this line is one host, so name= is one name"
        else:
            hint = (f"{first!r} is {count} hosts, so name= needs a range of {count} names, "
                    f"e.g. name=w[1-{count}]")
        raise _LineError(f"name={name} gives {len(names)} name(s) for {count} host(s)",
                         hint=hint)
    for each in names:
        if not _NAME_RE.fullmatch(each):
            raise _LineError(f"bad node name {each!r}",
                             hint="a name starts with a letter or digit, then letters, digits, "
                                  "'.', '_' or '-'")
    return names


def parse_destination(target: str) -> tuple[str | None, str, int | None]:
    """Split an SSH destination ``[user@]host[:port]`` (host may be ``[IPv6]``), as a
    hosts file line or a ProxyJump hop writes it; DestinationError says what is wrong."""
    user: str | None
    user, at, rest = target.rpartition("@")  # like ssh: the last '@' ends the user
    if not at:
        user = None
    elif not _USER_RE.fullmatch(user):
        what = "empty user" if user == "" else f"bad user {user!r}"
        raise DestinationError(f"{what} in {target!r}",
                         hint="write user@host, or just host to use the User from ~/.ssh/config;"
                              " no passwords here: use keys or ssh-agent")
    port_text: str | None = None
    if rest.startswith("["):
        end = rest.find("]")
        address, after = rest[1:end], rest[end + 1:]
        if not _is_ipv6(address):
            raise DestinationError(f"[{address}] in {target!r} is not an IPv6 address",
                             hint="brackets hold an IPv6 address, e.g. [fe80::1]:22, "
                                  "or a range, e.g. node[01-16]")
        host = address
        if after.startswith(":"):
            port_text = after[1:]
        elif after:
            raise DestinationError(f"unexpected {after!r} after ']' in {target!r}",
                             hint="write an IPv6 address with a port as [fe80::1]:2222")
    else:
        if rest.count(":") > 1:
            raise DestinationError(f"{rest!r} looks like an IPv6 address without brackets",
                             hint=f"write it in brackets: [{rest}], or [{rest}]:22 with a port")
        host, colon, after = rest.partition(":")
        if colon:
            port_text = after
        if host == "":
            raise DestinationError(f"no host in {target!r}",
                             hint="write [user@]host[:port], 'local', or an ~/.ssh/config alias")
        if not _HOST_RE.fullmatch(host):
            raise DestinationError(f"{host!r} is not a host name or ssh alias",
                             hint="a host is letters, digits, '.', '_' and '-', starting with a "
                                  "letter or digit; IPv6 goes in brackets: [fe80::1]")
    if host == LOCAL:
        raise DestinationError(f"{target!r}: 'local' means this machine without SSH and takes "
                         "no user or port",
                         hint="write just 'local', or 'localhost' to go through SSH")
    port = None if port_text is None else _parse_port(port_text, target)
    return user, host, port


def _parse_port(text: str, target: str) -> int:
    """A TCP port, 1..65535."""
    if not _DIGITS_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        shown = "empty port" if text == "" else f"bad port {text!r}"
        raise DestinationError(f"{shown} in {target!r}", hint="a port is a number from 1 to 65535")
    return int(text)


def _is_ipv6(text: str) -> bool:
    """Whether text is an IPv6 address (a ``%zone`` suffix allowed)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _derived_name(host: str) -> str:
    """The default node name for a host: the host itself, made a valid node name.

    Only IPv6 addresses need changing: ':' (and a '%' zone) become '-', and an address
    starting with '::' gets its leading zero back (``::1`` -> ``0--1``), so the name
    starts with a digit, as names must.
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "-", host)
    if not name[:1].isalnum():
        name = "0" + name
    return name


def _name_nodes(entries: list[tuple[str | None, str, int, dict[str, object]]],
                filename: str) -> list[HostSpec]:
    """Give every entry its final name and check that names are unique.

    Default names shared by several hosts are numbered in file order (two ``local``
    lines become ``local-1`` and ``local-2``), so running two nodes on one host needs
    no ``name=``. Any other repeat is an error naming both lines.
    """
    derived_counts: dict[str, int] = {}
    for explicit, base, _, _ in entries:
        if explicit is None:
            derived_counts[base] = derived_counts.get(base, 0) + 1
    numbered: dict[str, int] = {}
    used: dict[str, tuple[int, bool]] = {}  # name -> (line, explicit?)
    specs: list[HostSpec] = []
    for explicit, base, lineno, fields in entries:
        if explicit is not None:
            name = explicit
        elif derived_counts[base] > 1:
            numbered[base] = numbered.get(base, 0) + 1
            name = f"{base}-{numbered[base]}"
        else:
            name = base
        if name in used:
            first_line, first_explicit = used[name]
            where = "on this line" if first_line == lineno else f"at {filename}:{first_line}"
            how = "" if explicit is not None else " (named after its host)"
            if explicit is None and not first_explicit:
                hint = "add name= to one of these lines"
            else:
                hint = "give each node a different name="
            raise HostsFileError(f"node name {name!r}{how} is already used {where}",
                                 path=filename, line=lineno, hint=hint)
        used[name] = (lineno, explicit is not None)
        specs.append(HostSpec(name=name, **fields))  # type: ignore[arg-type]
    return specs


# -------------------------------------------------------------------- finding files


def load_hosts(path: str | os.PathLike[str]) -> list[HostSpec]:
    """Read and parse a hosts file; errors name the file as the caller gave it."""
    return _read_hosts(Path(path), os.fspath(path))


def _read_hosts(path: Path, shown: str) -> list[HostSpec]:
    """Read ``path``, naming it ``shown`` in errors and in each spec's source."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise HostsFileError("no such file", path=shown,
                             hint="check the path; without a hosts file clusterctl runs "
                                  "one local node") from exc
    except IsADirectoryError as exc:
        raise HostsFileError("is a directory, not a hosts file", path=shown,
                             hint="name the file inside it") from exc
    except PermissionError as exc:
        raise HostsFileError("permission denied", path=shown,
                             hint="make it readable: chmod u+r") from exc
    except OSError as exc:
        raise HostsFileError(f"cannot read: {exc.strerror or exc}", path=shown) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise HostsFileError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})", path=shown, line=line,
            hint="it looks like UTF-16: save it as UTF-8" if utf16 else "save it as UTF-8",
        ) from exc
    return parse_hosts(text, shown)


def find_hosts_file(explicit: str | None = None, *, env: Mapping[str, str] | None = None,
                    cwd: Path | None = None) -> Path | None:
    """Locate the hosts file to use, or None when there is none (one local node then).

    Order: ``explicit`` (``--hosts FILE``), ``$CLUSTERCTL_HOSTS``, ``./hosts``, then
    ``hosts`` in the user config directory (``dirs.config_dir()``, which follows XDG_CONFIG_HOME).
    A file the user named (flag or variable) must exist: silently falling back to the
    default world would run their work somewhere they did not ask for. An empty
    variable counts as unset, and a *directory* called ``hosts`` in the current
    directory is skipped, since it is not a hosts file. Relative paths are resolved
    against ``cwd`` (default: the current directory); ``env`` defaults to os.environ.
    """
    found = _find(explicit, env=env, cwd=cwd)
    return None if found is None else found[0]


def _find(explicit: str | None, *, env: Mapping[str, str] | None,
          cwd: Path | None) -> tuple[Path, str, str] | None:
    """Like :func:`find_hosts_file`, also returning how to show the path to the user
    and which lookup step chose it."""
    environ = os.environ if env is None else env
    base = Path.cwd() if cwd is None else Path(cwd)
    if explicit is not None:
        path = base / Path(explicit).expanduser()
        if not path.exists():
            raise HostsFileError("no such file (given by --hosts)", path=explicit,
                                 hint="check the path, or leave out --hosts")
        if path.is_dir():
            raise HostsFileError("is a directory, not a hosts file (given by --hosts)",
                                 path=explicit, hint="name the file inside it")
        return path, explicit, "--hosts"
    value = environ.get(ENV_VAR, "")
    if value:
        path = base / Path(value).expanduser()
        if not path.exists():
            raise HostsFileError(f"${ENV_VAR} points nowhere: no such file", path=value,
                                 hint=f"fix or unset {ENV_VAR}")
        if path.is_dir():
            raise HostsFileError(f"${ENV_VAR} points to a directory, not a hosts file",
                                 path=value, hint=f"fix or unset {ENV_VAR}")
        return path, value, f"${ENV_VAR}"
    here = base / HOSTS_FILENAME
    if here.is_file():
        return here, f"./{HOSTS_FILENAME}", "current directory"
    config = config_dir() / HOSTS_FILENAME
    if config.is_file():
        return config, _display(config), "config directory"
    return None


def _display(path: Path) -> str:
    """A short way to show a path: ``~/x`` under the home directory, else as it is."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except (ValueError, RuntimeError):
        return str(path)


def default_world() -> list[HostSpec]:
    """The world without a hosts file: one local node with a slot per CPU."""
    return [HostSpec(name=LOCAL, target=LOCAL, slots=os.cpu_count(), source="<default>")]


def resolve_world(explicit: str | None = None, *, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> tuple[list[HostSpec], str]:
    """The node specs to use, and a description of where they came from for the user.

    The description is ``"hosts file ./hosts"`` (with ``(from $CLUSTERCTL_HOSTS)``
    added when the variable chose it) or ``"default: one local node"``.
    """
    found = _find(explicit, env=env, cwd=cwd)
    if found is None:
        return default_world(), "default: one local node"
    path, shown, origin = found
    specs = _read_hosts(path, shown)
    suffix = f" (from {origin})" if origin == f"${ENV_VAR}" else ""
    return specs, f"hosts file {shown}{suffix}"
