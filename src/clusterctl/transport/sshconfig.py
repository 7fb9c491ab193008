"""Where an SSH target really points: the user's ssh configuration, resolved as OpenSSH does.

Why a module of its own: a hosts file line such as ``myalias`` or ``node03`` means
whatever ``ssh myalias`` means to the user, and paramiko reads none of it by itself
(``SSHClient.connect()`` never opens ``~/.ssh/config``). Getting this wrong is not a
detail: the wrong HostName or Port connects to another machine, the wrong known_hosts
file turns every host key into an "unknown" one, and a missing ProxyJump makes a host
behind a bastion look down.

Two ways to resolve, same result type (:class:`SSHTarget`):

``ssh -G`` (preferred, whenever the ``ssh`` binary exists)
    OpenSSH prints its own fully resolved configuration: ``Include``, ``Match``
    (including ``Match exec``), canonicalisation, defaults and most tokens, exactly as
    the user's ``ssh`` will see them. It works offline: nothing is connected.

``paramiko.SSHConfig`` (fallback, no ``ssh`` binary)
    paramiko does not implement ``Include``, so this module flattens the files itself
    (see :func:`_flatten`), then applies OpenSSH's defaults and tokens.

Explicit user and port from the hosts file (``alice@node03:2222``) win over the
configuration, as ``ssh -l alice -p 2222 node03`` would.

This module imports paramiko only in the fallback, so resolving through ``ssh -G`` does
not pay paramiko's import time.

Home directory: the fallback expands ``~`` from ``$HOME`` (Python's convention);
OpenSSH uses the password database's home directory. They differ only when ``$HOME``
was changed, and then the ``ssh -G`` path follows OpenSSH for the values it expands
itself (UserKnownHostsFile, Include).
"""

from __future__ import annotations

import fnmatch
import getpass
import glob
import hashlib
import functools
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from clusterctl.errors import ClusterError

__all__ = [
    "DEFAULT_CIPHERS",
    "DEFAULT_GLOBAL_KNOWN_HOSTS",
    "DEFAULT_HOST_KEY_ALGORITHMS",
    "DEFAULT_IDENTITY_FILES",
    "DEFAULT_USER_KNOWN_HOSTS",
    "SSHConfigError",
    "SSHTarget",
    "clear_cache",
    "resolve",
]

SSH_G_TIMEOUT = 10.0
"""Seconds ``ssh -G`` may take. It normally takes milliseconds; only a ``Match exec``
command or hostname canonicalisation can make it slow."""

MAX_INCLUDE_DEPTH = 16
"""How deep ``Include`` may nest, OpenSSH's own limit (READCONF_MAX_DEPTH)."""

SYSTEM_CONFIG = "/etc/ssh/ssh_config"
SYSTEM_DIR = "/etc/ssh"

DEFAULT_IDENTITY_FILES = (
    "~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk", "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss", "~/.ssh/id_dsa",
)
"""The identities OpenSSH tries when no IdentityFile is configured (OpenSSH 9)."""

DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")

DEFAULT_CIPHERS = (
    "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr",
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
)
"""OpenSSH's default cipher list, the base for ``Ciphers +x`` / ``-x`` / ``^x`` in the
fallback (``ssh -G`` applies those itself)."""

DEFAULT_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512", "rsa-sha2-256",
)
"""OpenSSH's default HostKeyAlgorithms (OpenSSH 8.8 and later: no ``ssh-rsa``), the
base for ``HostKeyAlgorithms +x`` / ``-x`` / ``^x`` in the fallback."""

_STRICT_MODES = {
    "yes": "yes", "true": "yes", "on": "yes",
    "no": "no", "false": "no", "off": "no",
    "ask": "ask", "accept-new": "accept-new",
}

# paramiko's own "keyword value" split (SSHConfig.SETTINGS_REGEX), so that the lines
# this module checks and rewrites are read the same way by paramiko afterwards.
_KEYWORD_RE = re.compile(r"(\w+)(?:\s*=\s*|\s+)(.+)")

# ssh -G prints this note on stderr when stdin is not a terminal; it is never the error.
_STDERR_NOISE = ("Pseudo-terminal will not be allocated",)


class SSHConfigError(ClusterError):
    """The ssh configuration for a target cannot be read (bad option, bad Include...)."""


@dataclass(frozen=True)
class SSHTarget:
    """Everything clusterctl needs to know to open an SSH connection to one host.

    Paths are absolute (``~`` and tokens expanded). ``proxy_command`` has its tokens
    (``%h %p %r %n %%``) expanded, ready for ``sh -c``; ``proxy_jump`` hops are as
    written, each to be resolved again with :func:`resolve`.

    ``host_key_algorithms`` is None when HostKeyAlgorithms is OpenSSH's default, else
    the resolved list. ``host_key_algorithms_verbatim`` says whether ssh offers that
    list as it is (a list written out, or ``^x``) or, like the default and ``+x`` /
    ``-x``, with the algorithms of the keys known_hosts holds for the host first
    (see :func:`clusterctl.hostkeys.order_host_key_algorithms`). ``ssh -G`` prints
    the list already expanded, so there a written-out list in the default's order is
    taken for ``+x`` / ``-x``; the difference is only which recorded key is used.
    """

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_jump: tuple[str, ...]
    proxy_command: str | None
    strict_host_key_checking: str
    user_known_hosts_files: tuple[str, ...]
    global_known_hosts_files: tuple[str, ...]
    connect_timeout: float | None
    batch_mode: bool
    server_alive_interval: float | None
    ciphers: tuple[str, ...] | None
    host_key_alias: str | None
    source: str
    host_key_algorithms: tuple[str, ...] | None = None
    host_key_algorithms_verbatim: bool = False
    hash_known_hosts: bool = False


_cache: dict[tuple, SSHTarget] = {}
_builtin_cache: dict[str, dict[str, list[str]]] = {}


def clear_cache() -> None:
    """Forget resolved targets.

    Results are cached for the life of the process, keyed also by the modification
    times of the configuration files (the user's or ``-F`` file, and the system one), so
    a long-lived process (the hub) sees an edited ``~/.ssh/config``. An edit of a file
    they Include only is seen after this, or by a new process.
    """
    _cache.clear()
    _builtin_cache.clear()
    _which_ssh.cache_clear()


def resolve(host: str, *, user: str | None = None, port: int | None = None,
            config_file: str | None = None, use_ssh_binary: bool | None = None) -> SSHTarget:
    """Resolve ``host`` (a hosts-file host part or an ssh alias) like ``ssh`` would.

    ``user`` and ``port`` are the explicit ones from the hosts file and override the
    configuration. ``config_file`` is ``ssh -F``: that file instead of ``~/.ssh/config``
    and the system file. ``use_ssh_binary``: None uses ``ssh -G`` when ``ssh`` is on
    PATH, True insists on it, False uses paramiko.

    Raises :class:`SSHConfigError` when the configuration cannot be read.
    """
    _check_target(host, user, port)
    ssh = _which_ssh(os.environ.get("PATH")) if use_ssh_binary is not False else None
    if use_ssh_binary and ssh is None:
        raise SSHConfigError("cannot resolve %s with ssh -G: no ssh on PATH" % host,
                             hint="install the OpenSSH client (ssh), or pass use_ssh_binary=None")
    config = os.path.expanduser(config_file) if config_file is not None else None
    key = (host, user, port, config, bool(ssh), os.path.expanduser("~"), _config_stamp(config))
    target = _cache.get(key)
    if target is None:
        if ssh:
            target = _resolve_with_ssh(ssh, host, user, port, config)
        else:
            target = _resolve_with_paramiko(host, user, port, config)
        _cache[key] = target
    return target


def _config_stamp(config: str | None) -> tuple:
    """The modification times of the files a resolution reads first: a change to one
    makes a new cache key."""
    if config is not None:
        paths: tuple = (config,)
    else:  # ssh reads the passwd entry's home, paramiko $HOME
        homes = dict.fromkeys((os.path.expanduser("~"), _passwd_home()))
        paths = (*(os.path.join(h, ".ssh", "config") for h in homes if h), SYSTEM_CONFIG)
    stamp = []
    for path in paths:
        try:
            stamp.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamp.append(None)
    return tuple(stamp)


@functools.lru_cache(maxsize=1)
def _passwd_home() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None


@functools.lru_cache(maxsize=4)
def _which_ssh(path: str | None) -> str | None:
    """Where ``ssh`` is on ``path``: looked up once per PATH (the hub resolves a host
    for every stream it opens, and a lookup is a stat per PATH entry)."""
    return shutil.which("ssh", path=path)


def _check_target(host: str, user: str | None, port: int | None) -> None:
    """Refuse what ``ssh`` would read as an option or what could not be one argument."""
    if not host or host.startswith("-") or any(c.isspace() or ord(c) < 32 for c in host):
        raise SSHConfigError("%r is not a host name ssh can resolve" % host,
                             hint="fix the host in the hosts file")
    if user is not None and (not user or user.startswith("-")
                             or any(c.isspace() or ord(c) < 32 for c in user)):
        raise SSHConfigError("%r is not a login name ssh accepts" % user,
                             hint="fix the user in the hosts file")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise SSHConfigError("port %r of %s is not between 1 and 65535" % (port, host),
                             hint="fix the port in the hosts file")


# --------------------------------------------------------------------------- ssh -G

def _ssh_g_command(ssh: str, host: str, user: str | None, port: int | None,
                   config: str | None) -> list[str]:
    command = [ssh, "-G"]
    if config is not None:
        command += ["-F", config]
    if user is not None:
        command += ["-l", user]
    if port is not None:
        command += ["-p", str(port)]
    return command + [host]


def _run_ssh_g(command: list[str], host: str) -> dict[str, list[str]]:
    """Run ``ssh -G``; its ``key value`` lines as key -> values (in order)."""
    shown = shlex.join(["ssh", *command[1:]])
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=SSH_G_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SSHConfigError("ssh -G %s took longer than %g s" % (host, SSH_G_TIMEOUT),
                             hint="check Match exec commands and CanonicalizeHostname in the ssh config; run: %s" % shown)
    except OSError as exc:
        raise SSHConfigError("could not run ssh -G %s: %s" % (host, exc.strerror or exc),
                             hint="run: %s" % shown)
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(_STDERR_NOISE)] or lines
        detail = lines[0] if lines else "exit status %d" % proc.returncode
        raise SSHConfigError("ssh config for %s: %s" % (host, detail), hint="run: %s" % shown)
    values: dict[str, list[str]] = {}
    for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
        name, _, value = line.strip().partition(" ")
        if name:
            values.setdefault(name.lower(), []).append(value.strip())
    if "hostname" not in values:
        raise SSHConfigError("ssh -G %s printed no hostname" % host, hint="run: %s" % shown)
    return values


def _resolve_with_ssh(ssh: str, host: str, user: str | None, port: int | None,
                      config: str | None) -> SSHTarget:
    values = _run_ssh_g(_ssh_g_command(ssh, host, user, port, config), host)

    def first(name: str) -> str | None:
        found = values.get(name)
        return found[0] if found else None

    hostname = first("hostname") or host
    try:
        resolved_port = int(first("port") or 22)
    except ValueError:
        raise SSHConfigError("ssh -G %s printed port %r" % (host, first("port")),
                             hint="run: ssh -G %s" % host)
    resolved_user = first("user") or _local_user()
    alias = first("hostkeyalias")
    alias = None if alias in (None, "", "none") else alias
    tokens = _tokens(host, hostname, resolved_port, resolved_user, alias)
    # OpenSSH (9.2) prints IdentityFile as written (tokens and ~ unexpanded) but
    # UserKnownHostsFile already expanded: expand only what it left.
    identity = tuple(_expand_path(path, tokens) for path in values.get("identityfile", [])
                     if path.lower() != "none")
    ciphers = tuple(c for c in (first("ciphers") or "").split(",") if c) or None
    if ciphers is not None and ciphers == _builtin_list(ssh, host, "ciphers"):
        ciphers = None
    algorithms = tuple(a for a in (first("hostkeyalgorithms") or "").split(",") if a) or None
    default_algorithms = _builtin_list(ssh, host, "hostkeyalgorithms") or DEFAULT_HOST_KEY_ALGORITHMS
    if algorithms == default_algorithms:
        algorithms = None
    jump = first("proxyjump")
    command = first("proxycommand")
    return SSHTarget(
        alias=host,
        hostname=hostname,
        port=resolved_port,
        user=resolved_user,
        identity_files=identity,
        identities_only=_yes(first("identitiesonly")),
        proxy_jump=_split_jump(jump),
        proxy_command=None if command in (None, "", "none") else _expand_tokens(command, tokens),
        strict_host_key_checking=_strict(first("stricthostkeychecking"), host),
        user_known_hosts_files=_path_list(first("userknownhostsfile"), None),
        global_known_hosts_files=_path_list(first("globalknownhostsfile"), None),
        connect_timeout=_seconds(first("connecttimeout"), "ConnectTimeout", host),
        batch_mode=_yes(first("batchmode")),
        server_alive_interval=_seconds(first("serveraliveinterval"), "ServerAliveInterval", host),
        ciphers=ciphers,
        host_key_alias=alias,
        source="ssh -G",
        host_key_algorithms=algorithms,
        host_key_algorithms_verbatim=(algorithms is not None
                                      and not _added_or_removed(algorithms, default_algorithms)),
        hash_known_hosts=_yes(first("hashknownhosts")),
    )


def _builtin_list(ssh: str, host: str, name: str) -> tuple[str, ...] | None:
    """OpenSSH's built-in value of a list option (Ciphers, HostKeyAlgorithms), so that
    only an explicit setting is reported.

    ``ssh -G`` always prints these lists; the same command with ``-F /dev/null``
    (which also skips the system file) shows the built-in ones. Asked once a process.
    """
    if ssh not in _builtin_cache:
        try:
            _builtin_cache[ssh] = _run_ssh_g([ssh, "-G", "-F", os.devnull, host], host)
        except SSHConfigError:
            _builtin_cache[ssh] = {}
    found = _builtin_cache[ssh].get(name, [""])[0]
    return tuple(c for c in found.split(",") if c) or None


def _added_or_removed(algorithms: tuple[str, ...], default: tuple[str, ...]) -> bool:
    """Whether ``algorithms`` is what ``+x`` or ``-x`` makes of ``default``: the default's
    algorithms in their order, then only algorithms the default lacks."""
    kept = [a for a in default if a in algorithms]
    return list(algorithms) == kept + [a for a in algorithms if a not in default]


# --------------------------------------------------------------------------- paramiko

def _resolve_with_paramiko(host: str, user: str | None, port: int | None,
                           config: str | None) -> SSHTarget:
    import paramiko

    home = os.path.expanduser("~")
    if config is not None:
        if not os.path.isfile(config):
            raise SSHConfigError("cannot open ssh config file %s" % config,
                                 hint="fix the --ssh-config path")
        sources = [(config, True)]
    else:
        sources = [(os.path.join(home, ".ssh", "config"), True), (SYSTEM_CONFIG, False)]
    lines: list[str] = []
    for path, user_conf in sources:
        if os.path.isfile(path):
            if lines:
                lines.append("Host *")  # a new file starts outside the last file's block
            _flatten(path, user_conf=user_conf, outer=[], resume="Host *", stack=(),
                     out=lines, home=home)

    class _Config(paramiko.SSHConfig):
        # paramiko's tokenizer replaces ``~`` anywhere in a value, has no ``%%``, and
        # resolves ``%l`` with socket.getfqdn() (a DNS query). Tokens are expanded
        # below, the OpenSSH way; paramiko keeps only Match exec's.
        def _allowed_tokens(self, key):
            return super()._allowed_tokens(key) if key == "match-exec" else []

    try:
        options = _Config.from_text("\n".join(lines)).lookup(host)
    except (paramiko.ConfigParseError, paramiko.CouldNotCanonicalize, ValueError) as exc:
        raise SSHConfigError("ssh config for %s: %s" % (host, exc),
                             hint="fix %s" % (config or "~/.ssh/config"))
    except ImportError as exc:  # Match exec needs the optional 'invoke' package
        raise SSHConfigError("ssh config for %s uses Match exec, which needs %s" % (host, exc.name),
                             hint="install the OpenSSH client (ssh) or the invoke package")
    return _target_from_options(host, user, port, options, home)


def _target_from_options(host: str, user: str | None, port: int | None,
                         options: Mapping, home: str) -> SSHTarget:
    def get(name: str) -> str | None:
        value = options.get(name)
        return value if isinstance(value, str) else None

    hostname = _expand_tokens(get("hostname") or host, {"%": "%", "h": host}).lower()
    if port is None:
        try:
            port = int(get("port") or 22)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise SSHConfigError("ssh config for %s: bad Port %r" % (host, get("port")),
                                 hint="fix Port in the ssh config")
    user = user or get("user") or _local_user()
    alias = get("hostkeyalias")
    alias = None if alias in (None, "", "none") else alias.lower()
    tokens = _tokens(host, hostname, port, user, alias)
    identity = options.get("identityfile") or list(DEFAULT_IDENTITY_FILES)
    identity = tuple(_expand_path(_unquote(p), tokens) for p in identity if _unquote(p).lower() != "none")
    batch = _yes(get("batchmode"))  # in batch mode OpenSSH's ServerAliveInterval default is 300 s
    # ProxyJump and ProxyCommand exclude each other; OpenSSH keeps the first one set.
    # paramiko keeps options in first-seen order, so the earlier key is the one.
    jump, command = get("proxyjump"), get("proxycommand")
    written = (get("hostkeyalgorithms") or "").strip()
    algorithms = _cipher_list(written or None, DEFAULT_HOST_KEY_ALGORITHMS)
    if algorithms == DEFAULT_HOST_KEY_ALGORITHMS:
        algorithms = None
    if "proxyjump" in options and "proxycommand" in options:
        first = next(k for k in options if k in ("proxyjump", "proxycommand"))
        jump, command = (jump, None) if first == "proxyjump" else (None, command)
    return SSHTarget(
        alias=host,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=identity,
        identities_only=_yes(get("identitiesonly")),
        proxy_jump=_split_jump(jump),
        proxy_command=None if command in (None, "", "none") else _expand_tokens(command, tokens),
        strict_host_key_checking=_strict(get("stricthostkeychecking"), host),
        user_known_hosts_files=_path_list(get("userknownhostsfile"), tokens,
                                          DEFAULT_USER_KNOWN_HOSTS),
        global_known_hosts_files=_path_list(get("globalknownhostsfile"), None,
                                            DEFAULT_GLOBAL_KNOWN_HOSTS),
        connect_timeout=_seconds(get("connecttimeout"), "ConnectTimeout", host),
        batch_mode=batch,
        server_alive_interval=_seconds(get("serveraliveinterval") or ("300" if batch else None),
                                      "ServerAliveInterval", host),
        ciphers=_cipher_list(get("ciphers")),
        host_key_alias=alias,
        source="paramiko",
        host_key_algorithms=algorithms,
        host_key_algorithms_verbatim=algorithms is not None and written[:1] not in ("+", "-"),
        hash_known_hosts=_yes(get("hashknownhosts")),
    )


def _flatten(path: str, *, user_conf: bool, outer: list[str], resume: str,
             stack: tuple[str, ...], out: list[str], home: str) -> bool:
    """Append the lines of config file ``path`` to ``out`` with every Include inlined.

    paramiko has no ``Include``. Pasting included text in place is not enough, because
    OpenSSH scopes it: an Include inside ``Host a`` applies only to ``a`` (also the
    Host blocks of the included file), and the lines after an Include still belong to
    the block the Include was in. So block headers of included files are rewritten to
    ``Match`` lines that also carry the enclosing block's condition (``Host a`` becomes
    ``originalhost a``, which is what ``Host`` tests), and the enclosing header is
    written again after the included text. ``outer`` is the enclosing condition as
    Match criteria, ``resume`` the header line to continue the enclosing block.

    Relative Include paths are relative to ``~/.ssh`` (``/etc/ssh`` for the system
    file), globs are expanded in sorted order, files that do not exist are skipped
    (all as OpenSSH does). A file including itself is an error, and so is nesting
    deeper than OpenSSH's limit of 16. Returns True when it wrote a block header.
    """
    real = os.path.realpath(path)
    text = _read_included(path, real, stack)
    wrote_header = False
    scope, header = outer, resume
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _KEYWORD_RE.fullmatch(line)
        if match is None:
            raise SSHConfigError("%s:%d: cannot parse %r" % (path, number, line),
                                 hint="write 'Keyword value'")
        keyword, value = match.group(1).lower(), match.group(2).strip()
        if keyword in ("host", "match"):
            try:
                own = _criteria(keyword, value)
            except ValueError as exc:
                raise SSHConfigError("%s:%d: %s" % (path, number, exc), hint="fix the %s line" % match.group(1))
            scope = outer + own
            if not outer:
                header = line                # top level: exactly as written
            elif scope:
                header = "Match " + shlex.join(scope)
            else:
                header = "Host *"
            out.append(header)
            wrote_header = True
        elif keyword == "include":
            nested = False
            for included in _include_paths(value, user_conf, home, "%s:%d" % (path, number)):
                nested |= _flatten(included, user_conf=user_conf, outer=scope, resume=header,
                                   stack=(*stack, real), out=out, home=home)
            if nested:
                out.append(header)
        else:
            out.append(line)
    return wrote_header


def _read_included(path: str, real: str, stack: tuple[str, ...]) -> str:
    """The text of config file ``path`` (``real`` its resolved path), after checking
    that the Include chain ``stack`` leading to it neither loops nor nests too deep."""
    if real in stack:
        chain = " -> ".join([*stack[stack.index(real):], real])
        raise SSHConfigError("ssh config Include loop: %s" % chain,
                             hint="remove the Include that leads back")
    if len(stack) > MAX_INCLUDE_DEPTH:
        raise SSHConfigError("ssh config Include nested deeper than %d at %s" % (MAX_INCLUDE_DEPTH, path),
                             hint="flatten the Include chain")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except OSError as exc:
        raise SSHConfigError("cannot read ssh config %s: %s" % (path, exc.strerror or exc),
                             hint="fix the file's permissions")


def _criteria(keyword: str, value: str) -> list[str]:
    """A Host or Match line's condition as Match criteria tokens ([] = every host)."""
    tokens = shlex.split(value)
    if not tokens:
        raise ValueError("%s needs an argument" % keyword)
    if keyword == "host":
        return [] if tokens == ["*"] else ["originalhost", ",".join(tokens)]
    return [t for t in tokens if t != "all"]


def _include_paths(value: str, user_conf: bool, home: str, where: str) -> list[str]:
    try:
        patterns = shlex.split(value)
    except ValueError as exc:
        raise SSHConfigError("%s: bad Include: %s" % (where, exc), hint="fix the quoting")
    found: list[str] = []
    for pattern in patterns:
        if pattern == "~" or pattern.startswith("~/"):
            pattern = home + pattern[1:]
        elif pattern.startswith("~"):
            pattern = os.path.expanduser(pattern)
        elif not os.path.isabs(pattern):
            pattern = os.path.join(home, ".ssh", pattern) if user_conf else os.path.join(SYSTEM_DIR, pattern)
        found += [p for p in sorted(glob.glob(pattern)) if os.path.isfile(p)]
    return found


# --------------------------------------------------------------------------- values

def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _tokens(original: str, hostname: str, port: int, user: str, alias: str | None) -> dict[str, str]:
    """OpenSSH's percent tokens for paths (ssh_config TOKENS)."""
    local = socket.gethostname()
    short = local.split(".")[0]
    return {
        "%": "%",
        "C": hashlib.sha1((local + hostname + str(port) + user).encode()).hexdigest(),
        "d": os.path.expanduser("~"),
        "h": hostname,
        "i": str(os.getuid()),
        "k": alias or original,
        "L": short,
        "l": local,
        "n": original,
        "p": str(port),
        "r": user,
        "u": _local_user(),
    }


def _expand_tokens(value: str, tokens: Mapping[str, str]) -> str:
    """Replace ``%x`` tokens in one pass (so ``%%h`` stays ``%h``); unknown ones stay."""
    return re.sub(r"%(.)", lambda m: tokens.get(m.group(1), m.group(0)), value, flags=re.S)


def _expand_path(path: str, tokens: Mapping[str, str] | None) -> str:
    if tokens is not None:
        path = _expand_tokens(path, tokens)
    return os.path.expanduser(path)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _path_list(value: str | None, tokens: Mapping[str, str] | None,
               default: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """A space-separated file list (UserKnownHostsFile); ``none`` means no file."""
    if value is None:
        items = list(default or ())
    else:
        try:
            items = shlex.split(value)
        except ValueError:
            items = value.split()
    if [i.lower() for i in items] == ["none"]:
        return ()
    return tuple(_expand_path(item, tokens) for item in items)


def _split_jump(value: str | None) -> tuple[str, ...]:
    if value is None or value.strip().lower() in ("", "none"):
        return ()
    return tuple(hop.strip() for hop in value.split(",") if hop.strip())


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true")


def _strict(value: str | None, host: str) -> str:
    if value is None:
        return "ask"
    mode = _STRICT_MODES.get(value.strip().lower())
    if mode is None:
        raise SSHConfigError("ssh config for %s: StrictHostKeyChecking %r is not yes, no, accept-new or ask"
                             % (host, value), hint="fix StrictHostKeyChecking in the ssh config")
    return mode


_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(value: str | None, name: str, host: str) -> float | None:
    """An ssh_config time (``30``, ``1m30s``); None for unset, ``none`` or 0 (no limit)."""
    if value is None or value.strip().lower() in ("", "none"):
        return None
    text = value.strip().lower()
    parts = re.findall(r"(\d+)([smhdw]?)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise SSHConfigError("ssh config for %s: bad %s %r" % (host, name, value),
                             hint="fix %s in the ssh config (seconds, or like 1m30s)" % name)
    total = sum(int(n) * _TIME_UNITS[u] for n, u in parts)
    return float(total) if total > 0 else None


def _cipher_list(value: str | None, default: tuple[str, ...] = DEFAULT_CIPHERS) -> tuple[str, ...] | None:
    """An algorithm list as OpenSSH reads it (Ciphers, HostKeyAlgorithms): a list, or
    +append, -remove (patterns), ^prepend."""
    if value is None:
        return None
    value = value.strip()
    if value[:1] in ("+", "-", "^"):
        items = [c for c in value[1:].split(",") if c]
        if value[0] == "+":
            return default + tuple(c for c in items if c not in default)
        if value[0] == "^":
            return tuple(items) + tuple(c for c in default if c not in items)
        return tuple(c for c in default if not any(fnmatch.fnmatchcase(c, p) for p in items))
    return tuple(c for c in value.split(",") if c)

