"""The SSH test bed's owner records: each bed writes down its owner and what it made
(namespaces, links, sshd pids, environment markers), under a file lock, so the next bed
removes what one whose owner died left behind."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path

from bed_common import _ID_LEN, _ID_RE, NETNS_DIR, PREFIX, ROOT_STATE_DIR, BedError
from bed_network import _delete_network
from bed_processes import _alive, _comm, _netns_members, _process_tree_and_markers, _signal, _start_time, _wait_gone


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
