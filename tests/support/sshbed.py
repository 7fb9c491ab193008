"""A throw-away multi-host SSH test bed built from real OpenSSH servers.

``SSHTestBed(n, workdir)`` starts ``n`` independent ``sshd`` processes, each
playing one remote host ``h1`` .. ``hN``, plus everything an SSH client needs
to reach them: a client key, an ``ssh_config`` with one ``Host`` alias per
host and a ``known_hosts`` file holding every host key.  Nothing outside
``workdir`` is read or written on the client side; the system ``sshd_config``
and ``~/.ssh`` are never used.

Two modes:

``"netns"`` (root, working ``ip netns``)
    A bridge ``<id>br`` in the root network namespace carries
    ``198.18.0.1/24``.  Host ``hI`` lives in its own network namespace
    ``<id>hI``, connected to the bridge by a veth pair (``<id>vI`` on the
    bridge, ``<id>pI`` inside the namespace), with address
    ``198.18.0.(10+I)/24``; its sshd listens on port 22 there.  Every process
    a session starts (including daemons the code under test leaves behind)
    stays inside that namespace, so a host can be partitioned (``cut``),
    frozen (``stop_host``) or crashed (``kill_host``) as a whole.  No default
    route is installed in the namespaces and IPv6 address generation is
    switched off on the bed's interfaces, so hosts can only talk to
    ``198.18.0.0/24``.  No sysctl is changed.  ``<id>`` is ``cct`` plus six
    random hex digits.  The fixed address plan means one netns bed per
    machine at a time: a bed in another process waits for it
    (``lock_timeout``), a second one in the same process is refused.
    A root sshd needs ``/run/sshd``; it is created if missing.

``"loopback"`` (fallback)
    sshd on ``127.0.0.1`` with one free port per host, run as the current
    user.  Network faults (``cut``, ``slow``) raise :class:`NotSupported`.

``"auto"`` picks ``"netns"`` when :func:`netns_available` says so.

All hosts share this machine's filesystem and user account.  To keep them
apart, every host's sshd sets ``XDG_CACHE_HOME``, ``XDG_RUNTIME_DIR`` and
``XDG_CONFIG_HOME`` (``SetEnv``, OpenSSH >= 8.7) to private 0700 directories
under ``workdir/hI/``.  Keep ``workdir`` short if the code under test
creates UNIX sockets in ``XDG_RUNTIME_DIR`` (108-byte path limit).

Layout of ``workdir``::

    client/id_ed25519{,.pub}  client/ssh_config  client/known_hosts
    hI/{cache,run,config}/                       (the host's environment)
    sshd/hI/sshd_config  ssh_host_ed25519_key{,.pub}  authorized_keys
            sshd.pid  sshd.log  ssh_host_{ecdsa,rsa}_key{,.pub} (add_host_key)

Usage::

    with SSHTestBed(3, tmp_path) as bed:
        bed.ssh("h1", "true").check_returncode()
        client.connect(**bed.paramiko_connect_kwargs("h2"))
        bed.cut("h3")          # h3 unreachable, processes keep running
        bed.restore("h3")

Things to know:

* Sessions run the account's login shell; bash sources ``~/.bashrc`` for
  commands run by sshd, so a slow ``.bashrc`` (pyenv init, ...) adds to every
  connection, exactly as on a real host.
* With ``UsePAM no`` sshd itself decides whether the account is usable and
  refuses accounts it considers locked; logins then fail with
  "Permission denied (publickey)" and the host log (``log_path``) says
  "account is locked".  Root works; some system/CI accounts may not.
* sshd_config takes the first value of an option, so ``extra_sshd_config``
  can add options but not override the generated ones (use ``Match`` blocks
  or ``set_forwarding`` for that).

Cleanup: leaving the ``with`` block (or :meth:`SSHTestBed.stop`) sends
SIGTERM, then SIGKILL, to every process of every host, waits for them,
and deletes the namespaces, veths and the bridge.  It is also registered with
:mod:`atexit`.  If the owning process dies without cleaning up (SIGKILL), the
next bed removes what it left behind: each bed records its owner pid and its
resources in ``/run/cct-beds/<id>.json`` (non-root: a per-user directory in
the temp dir), and only resources listed in a record whose owner is gone are
ever removed.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NoReturn

__all__ = [
    "BedError",
    "BedHost",
    "NotSupported",
    "SSHTestBed",
    "available_reason",
    "netns_available",
    "netns_unavailable_reason",
    "openssh_version",
]

PREFIX = "cct"
SUBNET = "198.18.0.0/24"
BRIDGE_ADDRESS = "198.18.0.1"
HOST_OFFSET = 10
MAX_HOSTS = 254 - HOST_OFFSET
NETNS_DIR = Path("/run/netns")
ROOT_STATE_DIR = Path("/run/cct-beds")

_ID_RE = re.compile(r"^%s[0-9a-f]{6}$" % PREFIX)
_ID_LEN = len(PREFIX) + 6


class BedError(RuntimeError):
    """The bed could not be set up or torn down (message includes sshd logs)."""


class NotSupported(BedError):
    """The requested fault cannot be produced in this mode / on this kernel.

    Tests usually turn it into a skip::

        try:
            bed.slow("h1", 200)
        except NotSupported as exc:
            pytest.skip(str(exc))
    """


@dataclass(frozen=True)
class BedHost:
    """One simulated remote host (a snapshot; ask ``bed.host()`` again after
    ``set_host_key`` or a restart)."""

    alias: str
    address: str
    port: int
    namespace: str | None
    host_key_path: Path
    host_pubkey_line: str
    log_path: Path
    env_dir: Path
    index: int = 0
    sshd_config: Path | None = None
    authorized_keys: Path | None = None
    extra_pubkey_lines: tuple[str, ...] = ()   # host keys served besides the ed25519 one

    @property
    def known_hosts_name(self) -> str:
        """The host name as it appears in known_hosts (``[addr]:port`` off port 22)."""
        return self.address if self.port == 22 else "[%s]:%d" % (self.address, self.port)


def clusterctl_processes(bed: "SSHTestBed", alias: str) -> list[tuple[int, str]]:
    """(pid, command line) of clusterctl's processes (node, workers, boot script) on one
    test host, zombies left out."""
    found = []
    for pid in bed.host_pids(alias):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and ("clusterctl" in cmd or "sys.stdin.buffer.readline" in cmd):
            found.append((pid, cmd))
    return found


def assert_no_clusterctl_left(bed: "SSHTestBed", timeout: float = 5.0) -> None:
    """Fail if clusterctl processes are still on any test host after ``timeout`` seconds
    (boot scripts exit once sshd closes their channel); whatever is left is killed."""
    deadline = time.monotonic() + timeout
    while True:
        leftovers = {a: p for a in bed.aliases if (p := clusterctl_processes(bed, a))}
        if not leftovers or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for procs in leftovers.values():
        for pid, _ in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not leftovers, f"processes left on test hosts: {leftovers}"


# -- tools, versions, capabilities -------------------------------------------------

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    for d in _SBIN_DIRS:
        cand = os.path.join(d, name)
        if os.access(cand, os.X_OK):
            return cand
    return None


_version_cache: dict[str, tuple[int, int] | None] = {}


def openssh_version() -> tuple[int, int] | None:
    """(major, minor) of the installed OpenSSH server, or None if unknown."""
    if "sshd" not in _version_cache:
        ver = None
        for exe, args in ((_which("sshd"), ["-V"]), (_which("ssh"), ["-V"])):
            if not exe:
                continue
            try:
                p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                continue
            m = re.search(r"OpenSSH_(\d+)\.(\d+)", p.stdout + p.stderr)
            if m:
                ver = (int(m.group(1)), int(m.group(2)))
                break
        _version_cache["sshd"] = ver
    return _version_cache["sshd"]


def available_reason() -> str | None:
    """Why no bed can run here (missing OpenSSH pieces), or None if it can."""
    for name, what in (("sshd", "OpenSSH server"), ("ssh-keygen", "ssh-keygen"), ("ssh", "OpenSSH client")):
        if _which(name) is None:
            return "%s (%s) not found" % (what, name)
    ver = openssh_version()
    if ver is not None and ver < (8, 7):
        return "OpenSSH %d.%d is too old: sshd_config SetEnv needs 8.7 or later" % ver
    return None


_netns_reason_cache: list[str | None] = []
_netns_probe_lock = threading.Lock()


def netns_unavailable_reason() -> str | None:
    """Why ``mode="netns"`` cannot be used here, or None if it can (cached)."""
    with _netns_probe_lock:
        if not _netns_reason_cache:
            _netns_reason_cache.append(_probe_netns())
        return _netns_reason_cache[0]


def netns_available() -> bool:
    """True if we are root and can create namespaces, veths and bridges."""
    return netns_unavailable_reason() is None


def _probe_netns() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    ip = _which("ip")
    if ip is None:
        return "iproute2 (ip) not found"
    if not os.path.exists("/proc/self/ns/net"):
        return "kernel without network namespaces"
    try:
        p = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "ip netns list failed: %s" % exc
    if p.returncode:
        return "ip netns list failed: %s" % p.stderr.strip()
    # Create a scratch namespace (recorded, so a crash here is cleaned up later)
    # and build a bridge + veth pair inside it, where nothing can be disturbed.
    state = _StateDir()
    with state.locked():
        bed_id = state.new_id()
        ns = bed_id + "pr"
        state.write_record(bed_id, {"mode": "probe", "namespaces": [ns], "links": []})
    try:
        p = subprocess.run([ip, "netns", "add", ns], capture_output=True, text=True, timeout=10)
        if p.returncode:
            return "ip netns add failed: %s" % p.stderr.strip()
        script = "link add pbr type bridge\nlink add pa type veth peer name pb\nlink set pa master pbr\n"
        p = subprocess.run([ip, "-n", ns, "-batch", "-"], input=script, capture_output=True, text=True,
                           timeout=10)
        if p.returncode:
            return "cannot create bridge/veth: %s" % p.stderr.strip()
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "netns probe failed: %s" % exc
    finally:
        subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=10)
        state.remove_record(bed_id)


# -- /proc helpers -----------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, None if it does not exist."""
    try:
        data = Path("/proc/%d/stat" % pid).read_bytes()
    except OSError:
        return None
    try:
        rest = data[data.rindex(b")") + 2:].split()
        return rest[0].decode(), int(rest[1]), int(rest[19])
    except (ValueError, IndexError):
        return None


def _start_time(pid: int) -> int | None:
    st = _proc_stat(pid)
    return None if st is None else st[2]


def _alive(pid: int, start: int | None = None) -> bool:
    """Running (not a zombie) and, if ``start`` is given, the same process."""
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X", "x"):
        return False
    return start is None or st[2] == start


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _protected_pids() -> set[int]:
    """This process and its ancestors: never signalled, whatever happens."""
    out = set()
    pid = os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        st = _proc_stat(pid)
        if st is None:
            break
        pid = st[1]
    out.add(1)
    return out


def _netns_members(namespaces: Iterable[str]) -> dict[str, set[int]]:
    """Pids whose network namespace is one of ``namespaces`` (as ``ip netns pids``)."""
    namespaces = list(namespaces)
    ids = {}
    for ns in namespaces:
        try:
            st = os.stat(NETNS_DIR / ns)
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = ns
    out: dict[str, set[int]] = {ns: set() for ns in namespaces}
    if not ids:
        return out
    for pid in _all_pids():
        try:
            st = os.stat("/proc/%d/ns/net" % pid)
        except OSError:
            continue
        ns = ids.get((st.st_dev, st.st_ino))
        if ns is not None and _alive(pid):
            out[ns].add(pid)
    return out


def _process_tree_and_markers(roots: Mapping[str, Iterable[int]],
                              markers: Mapping[str, bytes]) -> dict[str, set[int]]:
    """Per key: the live descendants of its root pids (roots included) plus every
    process whose environment contains its marker entry."""
    children: dict[int, list[int]] = {}
    live = []
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X", "x"):
            continue
        live.append(pid)
        children.setdefault(st[1], []).append(pid)
    out: dict[str, set[int]] = {}
    for key, pids in roots.items():
        found: set[int] = set()
        stack = [p for p in pids if _alive(p)]
        while stack:
            p = stack.pop()
            if p in found:
                continue
            found.add(p)
            stack.extend(children.get(p, ()))
        out[key] = found
    if markers:
        by_marker = {m: k for k, m in markers.items()}
        for pid in live:
            try:
                env = Path("/proc/%d/environ" % pid).read_bytes()
            except OSError:
                continue
            if not env:
                continue
            for entry in env.split(b"\0"):
                key = by_marker.get(entry)
                if key is not None:
                    out.setdefault(key, set()).add(pid)
                    break
    return out


def _signal(pids: Iterable[int], sig: int) -> None:
    protected = _protected_pids()
    for pid in pids:
        if pid in protected:
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: Iterable[int], timeout: float, reap: Iterable[subprocess.Popen] = ()) -> set[int]:
    """Wait until none of ``pids`` runs any more; return the survivors."""
    pending = set(pids)
    reap = list(reap)
    deadline = time.monotonic() + timeout
    while True:
        for p in reap:
            p.poll()
        pending = {p for p in pending if _alive(p)}
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.01)


# -- owner records (for cleaning up after a bed whose process died) ----------------

class _StateDir:
    def __init__(self) -> None:
        if os.geteuid() == 0:
            self.path = ROOT_STATE_DIR
        else:
            self.path = Path(tempfile.gettempdir()) / ("cct-beds-%d" % os.getuid())
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.path.stat()
        if st.st_uid != os.geteuid():
            raise BedError("%s is not owned by us" % self.path)

    def locked(self, name: str = "state.lock", timeout: float | None = None) -> "_FileLock":
        return _FileLock(self.path / name, timeout)

    def new_id(self) -> str:
        existing = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
        existing |= set(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else set()
        while True:
            bed_id = PREFIX + secrets.token_hex(3)
            if (self.path / (bed_id + ".json")).exists():
                continue
            if any(n[:_ID_LEN] == bed_id for n in existing):
                continue
            return bed_id

    def write_record(self, bed_id: str, data: dict) -> None:
        data = dict(data)
        data["owner_pid"] = os.getpid()
        data["owner_start"] = _start_time(os.getpid())
        tmp = self.path / (".%s.tmp" % bed_id)
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path / (bed_id + ".json"))

    def remove_record(self, bed_id: str) -> None:
        try:
            (self.path / (bed_id + ".json")).unlink()
        except FileNotFoundError:
            pass

    def clean_stale(self) -> list[str]:
        """Remove what beds of dead owners left behind (caller holds the lock)."""
        cleaned = []
        for rec in sorted(self.path.glob(PREFIX + "*.json")):
            bed_id = rec.name[:-5]
            if not _ID_RE.match(bed_id):
                continue
            try:
                data = json.loads(rec.read_text())
            except (OSError, ValueError):
                continue
            if _alive(int(data.get("owner_pid", 0)), data.get("owner_start")):
                continue
            _clean_record(bed_id, data)
            self.remove_record(bed_id)
            cleaned.append(bed_id)
        return cleaned


def _clean_record(bed_id: str, data: dict) -> None:
    def ours(name: str) -> bool:
        return isinstance(name, str) and name[:_ID_LEN] == bed_id and len(name) <= 15

    namespaces = [n for n in data.get("namespaces", []) if ours(n)]
    links = [n for n in data.get("links", []) if ours(n)]
    markers = {str(i): m.encode() for i, m in enumerate(data.get("markers", []))}
    roots = {"sshd": [pid for pid, start in data.get("sshd", [])
                      if _alive(pid, start) and _comm(pid) == "sshd"]}
    for _ in range(3):
        pids: set[int] = set()
        for s in _netns_members(namespaces).values():
            pids |= s
        for s in _process_tree_and_markers(roots, markers).values():
            pids |= s
        if not pids:
            break
        _signal(pids, signal.SIGKILL)
        _wait_gone(pids, 5.0)
    _delete_network(namespaces, links)


def _comm(pid: int) -> str | None:
    try:
        return Path("/proc/%d/comm" % pid).read_text().strip()
    except OSError:
        return None


def _delete_network(namespaces: Iterable[str], links: Iterable[str]) -> list[str]:
    """Delete the given links (root namespace) and namespaces if present;
    return the names that still exist afterwards."""
    ip = _which("ip")
    if ip is None:
        return []
    namespaces, links = list(namespaces), list(links)
    have_links = set(os.listdir("/sys/class/net"))
    have_ns = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
    # veths first (deleting one end removes its peer), then namespaces, bridges last
    order = sorted((n for n in links if n in have_links), key=lambda n: n.endswith("br"))
    cmds = ["link del dev %s" % n for n in order if not n.endswith("br")]
    cmds += ["netns del %s" % n for n in namespaces if n in have_ns]
    cmds += ["link del dev %s" % n for n in order if n.endswith("br")]
    if cmds:
        subprocess.run([ip, "-force", "-batch", "-"], input="\n".join(cmds) + "\n",
                       capture_output=True, text=True, timeout=60)
    have_links = set(os.listdir("/sys/class/net"))
    have_ns = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
    return [n for n in links if n in have_links] + [n for n in namespaces if n in have_ns]


class _FileLock:
    def __init__(self, path: Path, timeout: float | None) -> None:
        self.path, self.timeout, self.fd = path, timeout, -1

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                os.close(self.fd)
                self.fd = -1
                raise BedError("timed out after %.0f s waiting for %s" % (self.timeout, self.path))
            time.sleep(0.05)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "_FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# -- config rendering ----------------------------------------------------------------

def _q(value: object) -> str:
    """Quote one argument for sshd_config / ssh_config."""
    s = str(value)
    if any(c in s for c in '"\n\r\0'):
        raise BedError("cannot put %r into an OpenSSH config file" % s)
    if s == "" or any(c in s for c in " \t'#\\="):
        return '"%s"' % s
    return s


def _q_env(name: str, value: str) -> str:
    entry = "%s=%s" % (name, value)
    if any(c in entry for c in '"\n\r\0'):
        raise BedError("cannot put %r into SetEnv" % entry)
    return '"%s"' % entry if any(c in entry for c in " \t'#\\") else entry


@dataclass
class _Host:
    index: int
    alias: str
    address: str
    port: int
    namespace: str | None
    veth: str | None  # bridge side
    peer: str | None  # namespace side
    env_dir: Path
    sshd_dir: Path
    forwarding: bool = False
    popen: subprocess.Popen | None = None
    sshd_start: int | None = None
    pubkey_line: str = ""
    extra_config: str = ""
    extra_keys: list[tuple[Path, str]] = field(default_factory=list)  # (private key, public line)

    @property
    def config(self) -> Path:
        return self.sshd_dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.sshd_dir / "ssh_host_ed25519_key"

    @property
    def log(self) -> Path:
        return self.sshd_dir / "sshd.log"

    @property
    def pidfile(self) -> Path:
        return self.sshd_dir / "sshd.pid"

    @property
    def authorized_keys(self) -> Path:
        return self.sshd_dir / "authorized_keys"

    @property
    def marker(self) -> bytes:
        return ("XDG_CACHE_HOME=%s" % (self.env_dir / "cache")).encode()

    def public(self) -> BedHost:
        return BedHost(alias=self.alias, address=self.address, port=self.port, namespace=self.namespace,
                       host_key_path=self.host_key, host_pubkey_line=self.pubkey_line, log_path=self.log,
                       env_dir=self.env_dir, index=self.index, sshd_config=self.config,
                       authorized_keys=self.authorized_keys,
                       extra_pubkey_lines=tuple(line for _, line in self.extra_keys))


# in-process registry: the fixed address plan allows one netns bed at a time
_active_netns_beds: set[str] = set()


class SSHTestBed:
    """``n_hosts`` sshd-backed hosts ``h1``..``hN`` plus a matching client setup.

    Parameters (keyword-only besides the first two):

    mode
        ``"auto"`` (default), ``"netns"`` or ``"loopback"``.
    forwarding
        aliases whose sshd allows TCP forwarding (jump hosts) from the start;
        all others have ``AllowTcpForwarding no``.
    extra_sshd_config
        text appended to every host's sshd_config.
    extra_env
        more ``SetEnv`` variables for every host (e.g. ``PATH``).
    start_timeout, lock_timeout, term_timeout
        seconds to wait for sshd to accept connections, for another netns bed
        to finish, and for processes to exit on SIGTERM before SIGKILL.
    """

    def __init__(self, n_hosts: int, workdir: Path | str, *, mode: str = "auto",
                 forwarding: Iterable[str] = (), extra_sshd_config: str = "",
                 extra_env: Mapping[str, str] | None = None, start_timeout: float = 20.0,
                 lock_timeout: float = 120.0, term_timeout: float = 2.0) -> None:
        if not 1 <= int(n_hosts) <= MAX_HOSTS:
            raise ValueError("n_hosts must be between 1 and %d" % MAX_HOSTS)
        if mode not in ("auto", "netns", "loopback"):
            raise ValueError("mode must be 'auto', 'netns' or 'loopback', not %r" % mode)
        self.n_hosts = int(n_hosts)
        self.workdir = Path(workdir).absolute()
        self.requested_mode = mode
        self.mode = ""
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.client_dir = self.workdir / "client"
        self.client_key = self.client_dir / "id_ed25519"
        self.ssh_config = self.client_dir / "ssh_config"
        self.known_hosts = self.client_dir / "known_hosts"
        self.bed_id = ""
        self.bridge: str | None = None
        self._forwarding_init = set(forwarding)
        self._extra_sshd_config = extra_sshd_config
        self._extra_env = dict(extra_env or {})
        self._start_timeout = start_timeout
        self._lock_timeout = lock_timeout
        self._term_timeout = term_timeout
        self._hosts: list[_Host] = []
        self._by_alias: dict[str, _Host] = {}
        self._jumps: dict[str, tuple[str, str]] = {}
        self._lock = threading.RLock()
        self._state: _StateDir | None = None
        self._netns_lock: _FileLock | None = None
        self._record: dict = {}
        self._started = False
        self._stopped = False
        self._netem_reason: str | None | bool = False  # False: not probed yet
        self.seen_pids: set[int] = set()  # every host pid this bed has ever listed
        self.start_seconds = 0.0
        self.stop_seconds = 0.0

    # -- public read-only view ----------------------------------------------------

    @property
    def hosts(self) -> list[BedHost]:
        return [h.public() for h in self._hosts]

    @property
    def aliases(self) -> list[str]:
        return [h.alias for h in self._hosts]

    def host(self, alias: str) -> BedHost:
        return self._host(alias).public()

    def _host(self, alias: str) -> _Host:
        try:
            return self._by_alias[alias]
        except KeyError:
            raise KeyError("no host %r in this bed (have %s)" % (alias, ", ".join(self._by_alias))) from None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> "SSHTestBed":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "SSHTestBed":
        """Start everything; on any failure, undo what was done and re-raise."""
        with self._lock:
            if self._started:
                raise BedError("bed already started")
            self._started = True
            t0 = time.monotonic()
            atexit.register(self._atexit_stop)
            try:
                self._start()
            except BaseException:
                try:
                    self.stop()
                except Exception:
                    pass  # the original error is the interesting one
                raise
            self.start_seconds = time.monotonic() - t0
            return self

    def _start(self) -> None:
        reason = available_reason()
        if reason:
            raise BedError("cannot start an SSH test bed: " + reason)
        if self.requested_mode == "netns":
            why = netns_unavailable_reason()
            if why:
                raise BedError("netns mode unavailable: " + why)
            self.mode = "netns"
        elif self.requested_mode == "loopback":
            self.mode = "loopback"
        else:
            self.mode = "netns" if netns_available() else "loopback"

        self._state = _StateDir()
        if self.mode == "netns":
            if _active_netns_beds:
                raise BedError("another netns bed (%s) is running in this process; the 198.18.0.0/24 "
                               "address plan allows one at a time" % ", ".join(sorted(_active_netns_beds)))
            self._netns_lock = self._state.locked("netns.lock", self._lock_timeout)
            self._netns_lock.acquire()
        with self._state.locked():
            self._state.clean_stale()
            self.bed_id = self._state.new_id()
            self._plan()
            self._save_record()
        if self.mode == "netns":
            _active_netns_beds.add(self.bed_id)

        self._prepare_files()
        self._check_configs()
        if self.mode == "netns":
            self._setup_network()
        self._start_sshds(self._hosts)

    def _plan(self) -> None:
        ports = _free_ports(self.n_hosts) if self.mode == "loopback" else [22] * self.n_hosts
        for i in range(1, self.n_hosts + 1):
            alias = "h%d" % i
            netns = self.mode == "netns"
            h = _Host(index=i, alias=alias,
                      address="198.18.0.%d" % (HOST_OFFSET + i) if netns else "127.0.0.1",
                      port=ports[i - 1],
                      namespace="%sh%d" % (self.bed_id, i) if netns else None,
                      veth="%sv%d" % (self.bed_id, i) if netns else None,
                      peer="%sp%d" % (self.bed_id, i) if netns else None,
                      env_dir=self.workdir / alias, sshd_dir=self.workdir / "sshd" / alias,
                      forwarding=alias in self._forwarding_init)
            self._hosts.append(h)
            self._by_alias[alias] = h
        unknown = self._forwarding_init - set(self._by_alias)
        if unknown:
            raise ValueError("forwarding names unknown hosts: %s" % ", ".join(sorted(unknown)))
        if self.mode == "netns":
            self.bridge = self.bed_id + "br"
        self._record = {
            "mode": self.mode,
            "workdir": str(self.workdir),
            "namespaces": [h.namespace for h in self._hosts if h.namespace],
            "links": [h.veth for h in self._hosts if h.veth] + ([self.bridge] if self.bridge else []),
            "sshd": [],
            "markers": [h.marker.decode() for h in self._hosts],
        }

    def _save_record(self) -> None:
        if self._state and self.bed_id:
            self._state.write_record(self.bed_id, self._record)

    def _prepare_files(self) -> None:
        self.client_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.client_dir, 0o700)
        jobs = []
        for path, comment in [(self.client_key, "clusterctl-test-client")] + [
                (h.host_key, "clusterctl-test-%s" % h.alias) for h in self._hosts]:
            path.parent.mkdir(parents=True, exist_ok=True)
            for p in (path, path.with_name(path.name + ".pub")):
                if p.exists():
                    p.unlink()
            jobs.append([_which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
        _run_parallel(jobs, "ssh-keygen")
        client_pub = _pub_line(self.client_key.with_name(self.client_key.name + ".pub"))
        for h in self._hosts:
            for sub in ("", "cache", "run", "config"):
                d = h.env_dir / sub
                d.mkdir(parents=True, exist_ok=True)
                os.chmod(d, 0o700)
            os.chmod(h.sshd_dir, 0o700)
            h.pubkey_line = _pub_line(h.host_key.with_name(h.host_key.name + ".pub"))
            h.authorized_keys.write_text(client_pub + " clusterctl-test-client\n")
            h.log.touch()
            self._write_sshd_config(h)
        self._write_client_files()

    def _write_sshd_config(self, h: _Host) -> None:
        ver = openssh_version() or (0, 0)
        env = {"XDG_CACHE_HOME": str(h.env_dir / "cache"), "XDG_RUNTIME_DIR": str(h.env_dir / "run"),
               "XDG_CONFIG_HOME": str(h.env_dir / "config")}
        env.update(self._extra_env)
        fwd = "yes" if h.forwarding else "no"
        lines = [
            "# sshd_config of test bed host %s (generated; the system sshd_config is not used)" % h.alias,
            "ListenAddress %s" % h.address,
            "Port %d" % h.port,
            "AddressFamily inet",
            "HostKey %s" % _q(h.host_key),
            *("HostKey %s" % _q(path) for path, _ in h.extra_keys),
            "PidFile %s" % _q(h.pidfile),
            "AuthorizedKeysFile %s" % _q(h.authorized_keys),
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "AllowTcpForwarding %s" % fwd,
            "AllowStreamLocalForwarding %s" % fwd,
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "GatewayPorts no",
            "PermitUserEnvironment no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "MaxStartups 200",
            "MaxSessions 64",
            "LoginGraceTime 30",
            "LogLevel VERBOSE",
            "SetEnv " + " ".join(_q_env(k, v) for k, v in env.items()),
        ]
        if ver >= (9, 8):
            # bursts of connections from the test process must not get it blocked
            lines.append("PerSourcePenalties no")
        text = "\n".join(lines) + "\n"
        for extra in (self._extra_sshd_config, h.extra_config):
            if extra:
                text += extra.rstrip("\n") + "\n"
        h.config.write_text(text)

    def _write_client_files(self) -> None:
        with self._lock:
            self.known_hosts.write_text("".join("%s %s\n" % (h.public().known_hosts_name, h.pubkey_line)
                                                for h in self._hosts))
            blocks = ["# ssh_config of the test bed (use: ssh -F %s h1 ...)\n" % self.ssh_config]
            for h in self._hosts:
                blocks.append("Host %s\n  HostName %s\n  Port %d\n" % (h.alias, h.address, h.port))
            for name, (target, via) in self._jumps.items():
                t = self._host(target)
                blocks.append("Host %s\n  HostName %s\n  Port %d\n  ProxyJump %s\n"
                              % (name, t.address, t.port, via))
            blocks.append("\n".join([
                "Host *",
                "  User %s" % _q(self.user),
                "  IdentityFile %s" % _q(self.client_key),
                "  IdentitiesOnly yes",
                "  IdentityAgent none",
                "  UserKnownHostsFile %s" % _q(self.known_hosts),
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  UpdateHostKeys no",
                "  CheckHostIP no",
                "  HashKnownHosts no",
                "  BatchMode yes",
                "  ConnectTimeout 5",
                "  ControlMaster no",
                "  ControlPath none",
                "  ForwardAgent no",
                "  ForwardX11 no",
                "  LogLevel ERROR",
            ]) + "\n")
            tmp = self.ssh_config.with_name(".ssh_config.tmp")
            tmp.write_text("\n".join(blocks))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.ssh_config)

    def _check_configs(self) -> None:
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            # privilege separation directory a root sshd insists on (what the
            # distribution's service unit would create)
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sshd = _which("sshd")
        procs = [(h, subprocess.Popen([sshd, "-t", "-f", str(h.config)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                 for h in self._hosts]
        errors = []
        for h, p in procs:
            out, _ = p.communicate(timeout=30)
            if p.returncode:
                errors.append("%s: %s" % (h.alias, out.strip()))
        if errors:
            raise BedError("sshd -t rejected the generated config:\n" + "\n".join(errors))

    def _setup_network(self) -> None:
        ip = _which("ip")
        taken = _run([ip, "-4", "-o", "addr", "show", "to", SUBNET]).stdout.strip()
        if taken:
            raise BedError("%s is already in use on this machine, not touching it:\n%s" % (SUBNET, taken))
        routes = [r for r in _run([ip, "-4", "-o", "route", "show", "match", BRIDGE_ADDRESS]).stdout.splitlines()
                  if r.strip() and not r.startswith("default")]
        if routes:
            raise BedError("a route already covers %s, not touching it:\n%s" % (SUBNET, "\n".join(routes)))
        v6 = os.path.isdir("/proc/sys/net/ipv6")
        br = self.bridge
        cmds = ["link add name %s type bridge" % br]
        if v6:
            cmds.append("link set dev %s addrgenmode none" % br)
        cmds += ["addr add %s/24 dev %s" % (BRIDGE_ADDRESS, br), "link set dev %s up" % br]
        for h in self._hosts:
            cmds.append("netns add %s" % h.namespace)
            cmds.append("link add name %s type veth peer name %s netns %s" % (h.veth, h.peer, h.namespace))
            if v6:
                cmds.append("link set dev %s addrgenmode none" % h.veth)
            cmds += ["link set dev %s master %s" % (h.veth, br), "link set dev %s up" % h.veth]
        _run([ip, "-batch", "-"], input="\n".join(cmds) + "\n")
        jobs = []
        for h in self._hosts:
            sub = ["link set dev lo up"]
            if v6:
                sub.append("link set dev %s addrgenmode none" % h.peer)
            sub += ["addr add %s/24 dev %s" % (h.address, h.peer), "link set dev %s up" % h.peer]
            jobs.append(([ip, "-n", h.namespace, "-batch", "-"], "\n".join(sub) + "\n"))
        _run_parallel(jobs, "ip")

    # -- sshd processes ----------------------------------------------------------------

    def _spawn_sshd(self, h: _Host) -> None:
        cmd = [_which("sshd"), "-D", "-e", "-f", str(h.config), "-E", str(h.log)]
        if h.namespace:
            cmd = [_which("ip"), "netns", "exec", h.namespace] + cmd
        try:
            h.pidfile.unlink()
        except FileNotFoundError:
            pass
        with open(h.log, "ab") as log:
            log.write(("--- bed: starting sshd for %s at %s ---\n"
                       % (h.alias, time.strftime("%H:%M:%S"))).encode())
            log.flush()
            h.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       close_fds=True, start_new_session=True)
        h.sshd_start = _start_time(h.popen.pid)
        self._record["sshd"].append([h.popen.pid, h.sshd_start])
        self._save_record()
        self.seen_pids.add(h.popen.pid)

    def _start_sshds(self, hosts: list[_Host]) -> None:
        retries = {h.alias: 0 for h in hosts}
        for h in hosts:
            self._spawn_sshd(h)
        pending = list(hosts)
        deadline = time.monotonic() + self._start_timeout
        while pending:
            still = []
            for h in pending:
                if h.popen.poll() is not None:
                    log = _tail(h.log)
                    if (self.mode == "loopback" and "Address already in use" in log
                            and retries[h.alias] < 5):
                        retries[h.alias] += 1
                        h.port = _free_ports(1)[0]
                        self._write_sshd_config(h)
                        self._write_client_files()
                        self._spawn_sshd(h)
                        still.append(h)
                        continue
                    raise BedError("sshd of %s exited with status %s; log %s:\n%s"
                                   % (h.alias, h.popen.returncode, h.log, log))
                if not _ssh_banner(h.address, h.port):
                    still.append(h)
            pending = still
            if pending:
                if time.monotonic() >= deadline:
                    raise BedError("sshd did not accept connections within %.0f s on %s; logs:\n%s" % (
                        self._start_timeout, ", ".join(h.alias for h in pending),
                        "\n".join("[%s] %s" % (h.alias, _tail(h.log)) for h in pending)))
                time.sleep(0.02)

    def _stop_sshd(self, h: _Host, timeout: float = 5.0) -> None:
        p = h.popen
        if p is None:
            return
        if p.poll() is None:
            _signal([p.pid], signal.SIGTERM)
            _signal([p.pid], signal.SIGCONT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal([p.pid], signal.SIGKILL)
                p.wait(timeout)

    def restart_sshd(self, alias: str) -> BedHost:
        """(Re)start the sshd of a host, e.g. after ``kill_host``; sessions stay."""
        with self._lock:
            h = self._host(alias)
            self._stop_sshd(h)
            self._start_sshds([h])
            return h.public()

    # -- processes of a host -----------------------------------------------------------

    def _pids_by_host(self, hosts: Iterable[_Host]) -> dict[str, set[int]]:
        hosts = list(hosts)
        out: dict[str, set[int]] = {h.alias: set() for h in hosts}
        ns_hosts = [h for h in hosts if h.namespace]
        if ns_hosts:
            members = _netns_members(h.namespace for h in ns_hosts)
            for h in ns_hosts:
                out[h.alias] |= members.get(h.namespace, set())
        lo_hosts = [h for h in hosts if not h.namespace]
        if lo_hosts:
            roots = {h.alias: [h.popen.pid] if h.popen is not None and h.popen.poll() is None else []
                     for h in lo_hosts}
            found = _process_tree_and_markers(roots, {h.alias: h.marker for h in lo_hosts})
            for h in lo_hosts:
                out[h.alias] |= found.get(h.alias, set())
        protected = _protected_pids()
        for alias in out:
            out[alias] -= protected
            self.seen_pids |= out[alias]
        return out

    def host_pids(self, alias: str) -> list[int]:
        """Every live process of the host: netns mode, all processes in its
        namespace (``ip netns pids``); loopback, its sshd with descendants and
        any process carrying the host's XDG_CACHE_HOME (detached daemons)."""
        h = self._host(alias)
        return sorted(self._pids_by_host([h])[alias])

    def stop_host(self, alias: str) -> list[int]:
        """Freeze the host (SIGSTOP to all its processes): it accepts TCP
        connections but never answers.  Returns the pids stopped."""
        pids = self.host_pids(alias)
        _signal(pids, signal.SIGSTOP)
        return pids

    def start_host(self, alias: str) -> list[int]:
        """Undo ``stop_host`` (SIGCONT to all its processes)."""
        pids = self.host_pids(alias)
        _signal(pids, signal.SIGCONT)
        return pids

    def kill_all_in_host(self, alias: str) -> list[int]:
        """SIGKILL every process of the host (sshd included); does not wait."""
        pids = self.host_pids(alias)
        _signal(pids, signal.SIGKILL)
        return pids

    def kill_host(self, alias: str, timeout: float = 10.0) -> list[int]:
        """Crash the host: SIGKILL everything of it and wait until it is gone.
        Its network stays up (connections are refused); bring sshd back with
        ``restart_sshd``."""
        h = self._host(alias)
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            pids = set(self.kill_all_in_host(alias))
            killed |= pids
            left = _wait_gone(pids, max(0.0, deadline - time.monotonic()),
                              [h.popen] if h.popen else [])
            if not left and not self.host_pids(alias):
                break
            if time.monotonic() >= deadline:
                raise BedError("processes of %s survived SIGKILL: %s" % (alias, sorted(left)))
        if h.popen is not None:
            h.popen.poll()
        return sorted(killed)

    # -- network faults ------------------------------------------------------------------

    def _need_netns(self, what: str) -> NoReturn:
        raise NotSupported("%s needs the netns bed (root + ip netns); this bed runs in %s mode"
                           % (what, self.mode))

    def cut(self, alias: str) -> None:
        """Partition the host: both ends of its veth go down.  Processes keep
        running; packets to and from it are dropped, new connections fail."""
        h = self._host(alias)
        if not h.namespace:
            self._need_netns("cut()")
        ip = _which("ip")
        _run([ip, "link", "set", "dev", h.veth, "down"])
        _run([ip, "-n", h.namespace, "link", "set", "dev", h.peer, "down"])

    def restore(self, alias: str) -> None:
        """Undo ``cut``."""
        h = self._host(alias)
        if not h.namespace:
            self._need_netns("restore()")
        ip = _which("ip")
        _run([ip, "-n", h.namespace, "link", "set", "dev", h.peer, "up"])
        _run([ip, "link", "set", "dev", h.veth, "up"])

    def slow(self, alias: str, delay_ms: int) -> None:
        """Delay every packet sent to the host by ``delay_ms`` (netem on the
        bridge side of its veth, so the round trip grows by ``delay_ms``);
        ``delay_ms <= 0`` removes the delay."""
        h = self._host(alias)
        if not h.namespace:
            self._need_netns("slow()")
        tc = _which("tc")
        if tc is None:
            raise NotSupported("slow() needs tc (iproute2) which is not installed")
        if delay_ms <= 0:
            subprocess.run([tc, "qdisc", "del", "dev", h.veth, "root"], capture_output=True, timeout=30)
            return
        p = subprocess.run([tc, "qdisc", "replace", "dev", h.veth, "root", "netem", "delay",
                            "%dms" % int(delay_ms)], capture_output=True, text=True, timeout=30)
        if p.returncode:
            err = p.stderr.strip()
            if "unknown" in err.lower() or "not supported" in err.lower() or "No such file" in err:
                raise NotSupported("slow() needs the netem qdisc, which this kernel lacks "
                                   "(sch_netem not built/loaded): %s" % err)
            raise BedError("tc netem failed: %s" % err)

    def unsupported_reason(self, feature: str) -> str | None:
        """Why ``cut``/``slow`` (feature names) cannot work on this bed, else None."""
        if feature not in ("cut", "slow"):
            raise ValueError("unknown feature %r" % feature)
        if self.mode != "netns":
            return "%s() needs the netns bed; this bed runs in %s mode" % (feature, self.mode)
        if feature == "slow":
            if self._netem_reason is False:
                tc = _which("tc")
                if tc is None:
                    self._netem_reason = "tc (iproute2) not installed"
                else:
                    p = subprocess.run([tc, "qdisc", "add", "dev", self.bridge, "root", "netem", "delay",
                                        "1ms"], capture_output=True, text=True, timeout=30)
                    if p.returncode:
                        self._netem_reason = "netem qdisc unavailable: %s" % p.stderr.strip()
                    else:
                        subprocess.run([tc, "qdisc", "del", "dev", self.bridge, "root"],
                                       capture_output=True, timeout=30)
                        self._netem_reason = None
            return self._netem_reason or None
        return None

    # -- host keys, forwarding, jump aliases -----------------------------------------

    def set_host_key(self, alias: str, new_key: Path | str | None = None) -> str:
        """Give the host a new host key (freshly generated, or a copy of the
        private key file ``new_key``) and restart its sshd.  known_hosts keeps
        the old key, so clients now see a changed host key.  Returns the new
        public key line; ``refresh_known_hosts()`` trusts it."""
        with self._lock:
            h = self._host(alias)
            pub = h.host_key.with_name(h.host_key.name + ".pub")
            for p in (h.host_key, pub):
                if p.exists():
                    p.unlink()
            keygen = _which("ssh-keygen")
            if new_key is None:
                _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "clusterctl-test-%s" % alias,
                      "-f", str(h.host_key)])
            else:
                shutil.copyfile(new_key, h.host_key)
                os.chmod(h.host_key, 0o600)
                pub.write_text(_run([keygen, "-y", "-f", str(h.host_key)]).stdout)
            h.pubkey_line = _pub_line(pub)
            self.restart_sshd(alias)
            return h.pubkey_line

    def add_host_key(self, alias: str, key_type: str = "ecdsa") -> str:
        """Let the host serve one more host key, a new one of ``key_type`` (``ecdsa``,
        ``rsa``), besides its ed25519 key, and restart its sshd.  known_hosts is not
        changed (it keeps only the ed25519 key).  Returns the new public key line
        (``type base64``); ``drop_host_keys`` undoes."""
        if key_type not in ("ecdsa", "rsa"):
            raise ValueError("key_type must be 'ecdsa' or 'rsa', not %r" % key_type)
        with self._lock:
            h = self._host(alias)
            path = h.sshd_dir / ("ssh_host_%s_key" % key_type)
            if any(p == path for p, _ in h.extra_keys):
                raise BedError("%s already serves an extra %s key" % (alias, key_type))
            for p in (path, path.with_name(path.name + ".pub")):
                if p.exists():
                    p.unlink()
            _run([_which("ssh-keygen"), "-q", "-t", key_type, "-N", "", "-C",
                  "clusterctl-test-%s" % alias, "-f", str(path)])
            line = _pub_line(path.with_name(path.name + ".pub"))
            h.extra_keys.append((path, line))
            self._write_sshd_config(h)
            self.restart_sshd(alias)
            return line

    def drop_host_keys(self, alias: str) -> None:
        """Undo ``add_host_key``: the host serves only its ed25519 key again."""
        with self._lock:
            h = self._host(alias)
            if not h.extra_keys:
                return
            for path, _ in h.extra_keys:
                for p in (path, path.with_name(path.name + ".pub")):
                    if p.exists():
                        p.unlink()
            h.extra_keys.clear()
            self._write_sshd_config(h)
            self.restart_sshd(alias)

    def refresh_known_hosts(self) -> None:
        """Rewrite known_hosts with every host's current key."""
        self._write_client_files()

    def set_forwarding(self, alias: str, allowed: bool = True) -> None:
        """Switch ``AllowTcpForwarding`` of one host, restarting its sshd if needed."""
        with self._lock:
            h = self._host(alias)
            if h.forwarding == bool(allowed):
                return
            h.forwarding = bool(allowed)
            self._write_sshd_config(h)
            if h.popen is not None:
                self.restart_sshd(alias)

    def add_jump(self, target_alias: str, via_alias: str) -> str:
        """Add ssh_config alias ``<target>-via-<via>`` reaching the target with
        ``ProxyJump <via>``; turns on forwarding on ``via``.  Returns the alias."""
        with self._lock:
            self._host(target_alias)
            self.set_forwarding(via_alias, True)
            name = "%s-via-%s" % (target_alias, via_alias)
            self._jumps[name] = (target_alias, via_alias)
            self._write_client_files()
            return name

    # -- client helpers ------------------------------------------------------------------

    def ssh_argv(self, alias: str, command: str | None = None, options: Iterable[str] = ()) -> list[str]:
        """argv for OpenSSH ``ssh`` to ``alias`` using the bed's ssh_config."""
        argv = [_which("ssh") or "ssh", "-F", str(self.ssh_config), *options, alias]
        if command is not None:
            argv.append(command)
        return argv

    def ssh(self, alias: str, command: str, timeout: float = 20, *, input: str | None = None,
            options: Iterable[str] = ()) -> subprocess.CompletedProcess:
        """Run ``command`` on ``alias`` with OpenSSH; output captured as text,
        exit status not checked.  ``options`` are extra ssh arguments such as
        ``["-o", "ConnectTimeout=2"]``."""
        return subprocess.run(self.ssh_argv(alias, command, options), input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def paramiko_connect_kwargs(self, alias: str) -> dict:
        """Keyword arguments for ``paramiko.SSHClient.connect`` (pair with
        ``client.load_host_keys(bed.known_hosts)`` and RejectPolicy)."""
        h = self._host(alias)
        return {"hostname": h.address, "port": h.port, "username": self.user,
                "key_filename": str(self.client_key), "look_for_keys": False, "allow_agent": False,
                "timeout": 10, "banner_timeout": 10, "auth_timeout": 10}

    # -- teardown --------------------------------------------------------------------------

    def _atexit_stop(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    def stop(self) -> None:
        """Stop every process of every host, remove the network; idempotent."""
        with self._lock:
            if self._stopped or not self._started:
                return
            self._stopped = True
            t0 = time.monotonic()
            problems: list[str] = []
            try:
                self._terminate_everything(problems)
            except Exception as exc:
                problems.append("killing processes: %r" % (exc,))
                for h in self._hosts:  # at least the sshd processes we started
                    if h.popen is not None and h.popen.poll() is None:
                        h.popen.kill()
                        h.popen.wait()
            if self.mode == "netns" and self._record:
                try:
                    left = _delete_network(self._record.get("namespaces", []), self._record.get("links", []))
                    if left:
                        problems.append("could not delete: %s" % ", ".join(left))
                except Exception as exc:
                    problems.append("deleting network: %r" % (exc,))
            if not problems and self._state and self.bed_id:
                self._state.remove_record(self.bed_id)  # otherwise the next bed retries
            _active_netns_beds.discard(self.bed_id)
            if self._netns_lock is not None:
                self._netns_lock.release()
                self._netns_lock = None
            atexit.unregister(self._atexit_stop)
            self.stop_seconds = time.monotonic() - t0
            if problems:
                raise BedError("test bed %s cleanup incomplete: %s" % (self.bed_id, "; ".join(problems)))

    close = stop

    def _terminate_everything(self, problems: list[str]) -> None:
        popens = [h.popen for h in self._hosts if h.popen is not None]

        def collect() -> set[int]:
            pids = set()
            for s in self._pids_by_host(self._hosts).values():
                pids |= s
            pids |= {p.pid for p in popens if p.poll() is None}
            return pids - _protected_pids()

        pids = collect()
        if pids:
            _signal(pids, signal.SIGTERM)
            _signal(pids, signal.SIGCONT)  # stopped processes must run to see SIGTERM
            deadline = time.monotonic() + self._term_timeout
            while True:
                left = _wait_gone(pids, min(0.1, max(0.0, deadline - time.monotonic())), popens)
                new = collect() - pids  # forked meanwhile
                if new:
                    _signal(new, signal.SIGTERM)
                    _signal(new, signal.SIGCONT)
                pids = left | new
                if not pids or time.monotonic() >= deadline:
                    break
        deadline = time.monotonic() + 10.0
        while True:
            pids = collect()
            if not pids:
                break
            if time.monotonic() >= deadline:
                problems.append("processes survived SIGKILL: %s" % sorted(pids))
                break
            _signal(pids, signal.SIGKILL)
            _wait_gone(pids, 0.5, popens)
        for p in popens:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                problems.append("sshd %d not reaped" % p.pid)

    def __repr__(self) -> str:
        return "<SSHTestBed %s mode=%s hosts=%d>" % (self.bed_id or "-", self.mode or "-", self.n_hosts)


# -- small helpers ------------------------------------------------------------------------

def _run(cmd: list, *, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise BedError("command failed (%d): %s\n%s" % (p.returncode, shlex.join(map(str, cmd)),
                                                      (p.stderr or p.stdout).strip()))
    return p


def _run_parallel(jobs: list, what: str) -> None:
    """Run commands concurrently; each job is an argv or (argv, stdin text)."""
    procs = []
    try:
        for job in jobs:
            argv, data = (job if isinstance(job, tuple) else (job, None))
            p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE if data is not None else
                                 subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append((argv, p, data))
        errors = []
        for argv, p, data in procs:
            out, _ = p.communicate(data, timeout=60)
            if p.returncode:
                errors.append("%s: %s" % (shlex.join(map(str, argv)), out.strip()))
        if errors:
            raise BedError("%s failed:\n%s" % (what, "\n".join(errors)))
    finally:
        for _, p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _pub_line(path: Path) -> str:
    parts = path.read_text().split()
    if len(parts) < 2:
        raise BedError("unexpected public key file %s" % path)
    return "%s %s" % (parts[0], parts[1])


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "(cannot read %s: %s)" % (path, exc)
    return data[-limit:].decode(errors="replace")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ssh_banner(address: str, port: int) -> bool:
    """True once something at address:port greets with an SSH banner."""
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            s.settimeout(2.0)
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"SSH-")
    except OSError:
        return False
