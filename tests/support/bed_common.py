"""The SSH test bed's shared pieces: the address plan, its errors, the host records,
the tools it runs (OpenSSH, iproute2) and small helpers."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "cct"
SUBNET = "198.18.0.0/24"  # every bed's addresses are in it
BRIDGE_ADDRESS = "198.18.0.1"  # (a bed of the whole subnet)
HOST_OFFSET = 10
MAX_HOSTS = 254 - HOST_OFFSET
LANES = 4  # a bed of at most LANE_HOSTS hosts takes a quarter of the subnet, a /26: so
LANE_SIZE = 64  # test processes side by side (pytest -n) each have a bed of their own
LANE_HOSTS = LANE_SIZE - HOST_OFFSET - 2


@dataclass(frozen=True)
class AddressPlan:
    """Where a netns bed's network lies: a lane (a /26 of ``SUBNET``) or, for a bed of
    more than ``LANE_HOSTS`` hosts, the whole /24. The bridge has the first address,
    host ``hI`` the base plus ``HOST_OFFSET + I``."""

    lane: int | None  # None: the whole subnet

    @property
    def base(self) -> int:
        return 0 if self.lane is None else self.lane * LANE_SIZE

    @property
    def prefixlen(self) -> int:
        return 24 if self.lane is None else 26

    @property
    def network(self) -> str:
        return "198.18.0.%d/%d" % (self.base, self.prefixlen)

    @property
    def bridge(self) -> str:
        return "198.18.0.%d" % (self.base + 1)

    def host(self, index: int) -> str:
        return "198.18.0.%d" % (self.base + HOST_OFFSET + index)
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
