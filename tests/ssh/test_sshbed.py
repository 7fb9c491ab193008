"""Tests of the SSH test bed itself (tests/support/sshbed.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import paramiko
import pytest

import sshbed

SSHTestBed = sshbed.SSHTestBed
NotSupported = sshbed.NotSupported

REASON = sshbed.available_reason()
OWN_BEDS = True  # builds its own beds: the shared one stops first

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.timeout(60),
    pytest.mark.skipif(REASON is not None, reason=REASON or "ssh test bed available"),
]

PRINT_XDG = ("python3 -c 'import os; print(os.environ[\"XDG_CACHE_HOME\"], "
             "os.environ[\"XDG_RUNTIME_DIR\"], os.environ[\"XDG_CONFIG_HOME\"])'")
# a daemon the code under test might leave behind: detached, own session
SPAWN_AGENT = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"


@pytest.fixture
def own_bed(tmp_path_factory):
    """A bed of three hosts of this module's own (``OWN_BEDS``), stopped after: for tests of the bed itself."""
    with SSHTestBed(3, tmp_path_factory.mktemp("bed")) as b:
        yield b


def _identity(pid: int):
    """(pid, start time) or None if the process is gone (zombies count as gone)."""
    try:
        data = Path("/proc/%d/stat" % pid).read_bytes()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return pid, int(rest[19])


def _bed_names(bed_id: str) -> list[str]:
    names = os.listdir("/sys/class/net")
    if os.path.isdir("/run/netns"):
        names += os.listdir("/run/netns")
    return sorted(n for n in names if n.startswith(bed_id))


def _ok(bed, alias, command="true", **kw):
    r = bed.ssh(alias, command, **kw)
    assert r.returncode == 0, "ssh %s %r failed (%d): %s" % (alias, command, r.returncode, r.stderr)
    return r.stdout


def _paramiko_client(bed):
    client = paramiko.SSHClient()
    client.load_host_keys(str(bed.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


# -- basics ------------------------------------------------------------------------------

def test_layout_and_openssh_config(own_bed):
    assert own_bed.mode in ("netns", "loopback")
    if sshbed.netns_available():
        assert own_bed.mode == "netns"
    assert [h.alias for h in own_bed.hosts] == ["h1", "h2", "h3"]
    for i, h in enumerate(own_bed.hosts, 1):
        assert own_bed.host(h.alias) == h
        if own_bed.mode == "netns":
            lane = own_bed.plan.lane
            assert lane in range(sshbed.LANES) and own_bed.plan.network == "198.18.0.%d/26" % (64 * lane)
            assert (h.address, h.port) == ("198.18.0.%d" % (64 * lane + 10 + i), 22)
            assert h.namespace.startswith("cct") and len(h.namespace) <= 15
        else:
            assert h.address == "127.0.0.1" and h.namespace is None
        assert h.host_pubkey_line.startswith("ssh-ed25519 AAAA")
        assert h.env_dir == own_bed.workdir / h.alias
        for sub in ("cache", "run", "config"):
            assert (h.env_dir / sub).stat().st_mode & 0o777 == 0o700
        text = h.sshd_config.read_text()
        assert "AllowTcpForwarding no" in text and "UsePAM no" in text
    assert len({(h.address, h.port) for h in own_bed.hosts}) == 3
    known = own_bed.known_hosts.read_text().splitlines()
    assert sorted(known) == sorted("%s %s" % (h.known_hosts_name, h.host_pubkey_line) for h in own_bed.hosts)
    # plain OpenSSH with nothing but the bed's config
    r = subprocess.run(["ssh", "-F", str(own_bed.ssh_config), "h1", "true"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert _ok(own_bed, "h3", "id -un").strip() == own_bed.user


def test_setenv_gives_each_host_its_own_xdg_dirs(own_bed):
    seen = set()
    for h in own_bed.hosts:
        out = _ok(own_bed, h.alias, PRINT_XDG).split()
        assert out == [str(h.env_dir / "cache"), str(h.env_dir / "run"), str(h.env_dir / "config")]
        seen.add(out[0])
    assert len(seen) == 3


def test_paramiko_with_client_key_and_known_hosts(own_bed):
    h2 = own_bed.host("h2")
    client = _paramiko_client(own_bed)
    try:
        client.connect(h2.address, port=h2.port, username=own_bed.user, key_filename=str(own_bed.client_key),
                       look_for_keys=False, allow_agent=False, timeout=10)
        _, stdout, _ = client.exec_command("echo hi")
        assert stdout.read().decode().strip() == "hi"
        assert stdout.channel.recv_exit_status() == 0
        sftp = client.open_sftp()  # Subsystem sftp internal-sftp
        try:
            assert sorted(sftp.listdir(str(h2.env_dir))) == ["cache", "config", "home", "run"]
        finally:
            sftp.close()
    finally:
        client.close()


# -- network faults ------------------------------------------------------------------------

def test_cut_and_restore(own_bed):
    if own_bed.mode != "netns":
        with pytest.raises(NotSupported):
            own_bed.cut("h1")
        pytest.skip("network cut needs the netns bed")
    _ok(own_bed, "h1")
    own_bed.cut("h1")
    try:
        t0 = time.monotonic()
        r = own_bed.ssh("h1", "true")
        elapsed = time.monotonic() - t0
        assert r.returncode == 255, r
        assert elapsed < 5 + 3, "ssh to a cut host took %.1f s (ConnectTimeout 5)" % elapsed
        _ok(own_bed, "h2")
        assert own_bed.host_pids("h1"), "cut must not stop the host's processes"
    finally:
        own_bed.restore("h1")
    _ok(own_bed, "h1")


def test_slow(own_bed):
    reason = own_bed.unsupported_reason("slow")
    if reason:
        with pytest.raises(NotSupported):
            own_bed.slow("h1", 200)
        pytest.skip(reason)
    h1 = own_bed.host("h1")

    def connect_seconds():
        t0 = time.monotonic()
        socket.create_connection((h1.address, h1.port), timeout=5).close()
        return time.monotonic() - t0

    own_bed.slow("h1", 300)
    try:
        assert connect_seconds() >= 0.25
        _ok(own_bed, "h1")
    finally:
        own_bed.slow("h1", 0)
    assert connect_seconds() < 0.25


def test_stopped_host_hangs_then_resumes(own_bed):
    pids = own_bed.stop_host("h1")
    assert pids
    try:
        t0 = time.monotonic()
        r = own_bed.ssh("h1", "true", options=["-o", "ConnectTimeout=2"])
        assert r.returncode == 255
        assert time.monotonic() - t0 < 10
        _ok(own_bed, "h2")
    finally:
        own_bed.start_host("h1")
    _ok(own_bed, "h1")


def test_kill_host_and_restart_sshd(own_bed):
    agent = int(_ok(own_bed, "h1", SPAWN_AGENT))
    assert agent in own_bed.host_pids("h1")
    killed = own_bed.kill_host("h1")
    assert agent in killed
    assert own_bed.host_pids("h1") == []
    assert _identity(agent) is None
    r = own_bed.ssh("h1", "true")
    assert r.returncode == 255
    _ok(own_bed, "h2")
    own_bed.restart_sshd("h1")
    _ok(own_bed, "h1")


# -- forwarding and jump hosts ----------------------------------------------------------------

def test_forwarding_refused_by_default_but_proxyjump_via_jump_host(own_bed):
    h1, h3 = own_bed.host("h1"), own_bed.host("h3")
    # OpenSSH stdio forwarding through a default host is refused ...
    r = subprocess.run(own_bed.ssh_argv("h2", options=["-W", "%s:%d" % (h1.address, h1.port)]),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert r.returncode == 255
    assert "forwarding failed" in r.stderr or "prohibited" in r.stderr, r.stderr
    assert "refused local port forward" in own_bed.host("h2").log_path.read_text()
    # ... and so is a direct-tcpip channel opened with paramiko
    client = _paramiko_client(own_bed)
    try:
        client.connect(**own_bed.paramiko_connect_kwargs("h2"))
        with pytest.raises(paramiko.ChannelException):
            client.get_transport().open_channel("direct-tcpip", (h1.address, h1.port), ("127.0.0.1", 0))
    finally:
        client.close()

    alias = own_bed.add_jump("h1", "h3")
    assert alias == "h1-via-h3"
    assert "AllowTcpForwarding yes" in h3.sshd_config.read_text()
    out = _ok(own_bed, alias, PRINT_XDG).split()
    assert out[0] == str(h1.env_dir / "cache")
    if own_bed.mode == "netns":  # h1 saw the connection coming from h3
        assert "from %s port" % h3.address in h1.log_path.read_text()
    # the plain aliases still work, forwarding stays off elsewhere
    _ok(own_bed, "h3")
    assert "AllowTcpForwarding no" in h1.sshd_config.read_text()


# -- host keys ---------------------------------------------------------------------------------

def test_changed_host_key_is_rejected(own_bed):
    old = own_bed.host("h2").host_pubkey_line
    new = own_bed.set_host_key("h2")
    assert new != old and own_bed.host("h2").host_pubkey_line == new
    assert old in own_bed.known_hosts.read_text()
    r = own_bed.ssh("h2", "true")
    assert r.returncode == 255
    assert "Host key verification failed" in r.stderr, r.stderr
    client = _paramiko_client(own_bed)
    try:
        with pytest.raises(paramiko.BadHostKeyException):
            client.connect(**own_bed.paramiko_connect_kwargs("h2"))
    finally:
        client.close()
    own_bed.refresh_known_hosts()
    _ok(own_bed, "h2")


# -- cleanup -------------------------------------------------------------------------------------

def test_everything_is_gone_after_exit(tmp_path_factory):
    collected = set()
    with SSHTestBed(3, tmp_path_factory.mktemp("bed")) as b:
        bed_id = b.bed_id
        assert _bed_names(bed_id)
        for h in b.hosts:
            agent = int(_ok(b, h.alias, SPAWN_AGENT))
            pids = b.host_pids(h.alias)
            assert agent in pids
            for other in b.hosts:
                if other.alias != h.alias:
                    assert agent not in b.host_pids(other.alias)
            collected |= {_identity(p) for p in pids}
        b.stop_host("h2")  # a frozen host must be cleaned up as well
        collected |= {_identity(p) for p in b.seen_pids}
    collected.discard(None)
    assert collected
    survivors = [pid for pid, start in collected if _identity(pid) == (pid, start)]
    assert survivors == []
    assert _bed_names(bed_id) == []
    if b.mode == "netns":
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert bed_id not in listed
    assert not list(sshbed._StateDir().path.glob(bed_id + "*"))
    b.stop()  # idempotent


def test_failed_start_cleans_up(tmp_path_factory, monkeypatch):
    original = SSHTestBed._start_sshds
    started = {}

    def start_then_fail(self, hosts):
        original(self, hosts)
        started["pids"] = {_identity(p) for p in self.seen_pids} - {None}
        started["id"] = self.bed_id
        raise RuntimeError("injected failure after the hosts came up")

    monkeypatch.setattr(SSHTestBed, "_start_sshds", start_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        with SSHTestBed(2, tmp_path_factory.mktemp("bed")):
            pass
    assert started["pids"]
    assert [p for p, s in started["pids"] if _identity(p) == (p, s)] == []
    assert _bed_names(started["id"]) == []


def test_bad_sshd_config_reports_sshd_output(tmp_path_factory):
    bed = SSHTestBed(1, tmp_path_factory.mktemp("bed"), extra_sshd_config="NoSuchOptionAtAll yes")
    with pytest.raises(sshbed.BedError, match="NoSuchOptionAtAll"):
        bed.start()
    assert _bed_names(bed.bed_id) == []


def test_leftovers_of_a_dead_owner_are_removed(tmp_path_factory):
    """A bed whose process died without cleanup is removed by the next bed."""
    workdir = tmp_path_factory.mktemp("dead")
    script = textwrap.dedent("""
        import json, os, sys
        sys.path.insert(0, %r)
        import sshbed
        bed = sshbed.SSHTestBed(2, %r).start()
        agent = bed.ssh("h1", %r).stdout.strip()
        pids = sorted(set(bed.host_pids("h1") + bed.host_pids("h2")))
        print(json.dumps({"id": bed.bed_id, "mode": bed.mode, "pids": pids, "agent": int(agent)}), flush=True)
        os._exit(0)  # dies like a SIGKILLed test run: no cleanup, no atexit
    """) % (str(Path(sshbed.__file__).parent), str(workdir), SPAWN_AGENT)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=40)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    leftovers = {_identity(p) for p in info["pids"]} - {None}
    assert info["agent"] in {p for p, _ in leftovers}
    if info["mode"] == "netns":
        assert _bed_names(info["id"])
    try:
        with SSHTestBed(1, tmp_path_factory.mktemp("bed"), mode=info["mode"]) as b:
            _ok(b, "h1")
        assert [p for p, s in leftovers if _identity(p) == (p, s)] == []
        assert _bed_names(info["id"]) == []
    finally:  # never leave them around, even if the cleanup under test failed
        for pid, start in leftovers:
            if _identity(pid) == (pid, start):
                os.kill(pid, 9)
        sshbed._delete_network(["%sh%d" % (info["id"], i) for i in (1, 2)],
                               ["%sv%d" % (info["id"], i) for i in (1, 2)] + [info["id"] + "br"])


def test_atexit_cleans_up_when_the_owner_exits_without_stop(tmp_path_factory):
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, %r)
        import sshbed
        bed = sshbed.SSHTestBed(2, %r).start()
        bed.ssh("h2", %r)
        pids = sorted(set(bed.host_pids("h1") + bed.host_pids("h2")))
        print(json.dumps({"id": bed.bed_id, "pids": pids}), flush=True)
        sys.exit(0)  # normal interpreter exit without bed.stop()
    """) % (str(Path(sshbed.__file__).parent), str(tmp_path_factory.mktemp("atexit")), SPAWN_AGENT)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=40)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert len(info["pids"]) >= 3  # two sshd + the agent
    assert [p for p in info["pids"] if _identity(p) is not None] == []
    assert _bed_names(info["id"]) == []


@pytest.mark.skipif(not sshbed.netns_available(), reason="needs the netns bed")
def test_beds_of_two_processes_run_at_once_in_lanes_of_their_own(tmp_path_factory):
    """Test processes side by side (pytest -n) each have a bed: another process's bed
    takes another lane, and both work at once, each host reaching only its own lane."""
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, %r)
        import sshbed
        with sshbed.SSHTestBed(2, %r) as bed:
            print(json.dumps({"lane": bed.plan.lane, "h1": bed.host("h1").address}), flush=True)
            sys.stdin.readline()  # until the test is done with it
    """) % (str(Path(sshbed.__file__).parent), str(tmp_path_factory.mktemp("other")))
    other = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        theirs = json.loads(other.stdout.readline())
        with SSHTestBed(2, tmp_path_factory.mktemp("bed")) as ours:
            assert ours.plan.lane != theirs["lane"]
            assert _ok(ours, "h1", "echo hi").strip() == "hi"
            # (no route from a lane to another: hosts talk to their own lane only)
            reach = ours.ssh("h1", "python3 -c 'import socket; socket.create_connection((%r, 22), 2)'"
                             % theirs["h1"])
            assert reach.returncode != 0
    finally:
        other.stdin.close()
        other.wait(30)
        other.stdout.close()


@pytest.mark.skipif(not sshbed.netns_available(), reason="needs the netns bed")
def test_stale_cleanup_leaves_unrecorded_names_alone(tmp_path_factory):
    decoy = "cct0000aah1"  # our naming pattern, but no owner record: not ours to remove
    subprocess.run(["ip", "netns", "add", decoy], check=True, capture_output=True)
    try:
        with SSHTestBed(1, tmp_path_factory.mktemp("bed")) as b:
            _ok(b, "h1")
        assert decoy in os.listdir("/run/netns")
    finally:
        subprocess.run(["ip", "netns", "del", decoy], capture_output=True)


# -- loopback mode ---------------------------------------------------------------------------------

def test_loopback_mode(tmp_path_factory):
    collected = set()
    with SSHTestBed(2, tmp_path_factory.mktemp("lo"), mode="loopback") as b:
        assert b.mode == "loopback"
        h1, h2 = b.hosts
        assert h1.address == h2.address == "127.0.0.1" and h1.port != h2.port
        assert "[127.0.0.1]:%d %s" % (h1.port, h1.host_pubkey_line) in b.known_hosts.read_text()
        assert _ok(b, "h2", PRINT_XDG).split()[0] == str(h2.env_dir / "cache")
        agent = int(_ok(b, "h1", SPAWN_AGENT))
        assert agent in b.host_pids("h1") and agent not in b.host_pids("h2")
        collected |= {_identity(p) for p in b.host_pids("h1") + b.host_pids("h2")}
        for fault in (lambda: b.cut("h1"), lambda: b.restore("h1"), lambda: b.slow("h1", 100)):
            with pytest.raises(NotSupported):
                fault()
        assert b.unsupported_reason("cut")
    collected.discard(None)
    assert [p for p, s in collected if _identity(p) == (p, s)] == []
