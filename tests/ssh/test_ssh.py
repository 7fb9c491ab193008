"""clusterctl over real OpenSSH servers: the multi-host test bed from tests/support/sshbed.py.

Every test brings its nodes down and checks that no clusterctl process is left on any
host. The bed's hosts do not allow TCP forwarding (but the jump host), so these tests
also prove that nothing needs it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from clusterctl import errors
from helpers import wait_for
from sharedbed import JUMP
from sshbed import available_reason
from sshbed import clusterctl_processes as clusterctl_pids

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

_reason = available_reason()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=f"SSH test bed unavailable: {_reason}"))

def test_world_rpc_multicall_across_hosts(ssh_clusters):
    c = ssh_clusters.cluster("h1\nh2 slots=3\nh3\n")
    infos = c.world()
    assert [i.status for i in infos] == ["pong"] * 3, infos
    assert infos[1].slots == 3
    assert all(i.python.startswith("%d.%d." % sys.version_info[:2]) for i in infos)
    assert c.rpc("h1", "math.pow", 2, 10) == 1024.0
    homes = c.multicall(lambda: os.environ["XDG_CACHE_HOME"])
    assert homes.ok
    assert len(set(homes.values())) == 3  # three distinct hosts answered
    assert all(v.endswith(f"/{n}/cache") for n, v in homes.items())
    with pytest.raises(errors.RemoteError) as info:
        c.rpc("h2", "operator.truediv", 1, 0)
    assert info.value.node == "h2" and info.value.remote_type == "ZeroDivisionError"


def test_second_bootstrap_ships_no_code_and_nodes_persist(ssh_clusters, ssh_bed):
    """Direct connections (no hub), so the pool's count of bundles shipped is ours to read;
    through the hub, test_hub.py counts them."""
    hosts = "h1\nh2\n"
    for alias in ("h1", "h2"):  # earlier tests cached the code: start from an empty cache
        shutil.rmtree(ssh_bed.host(alias).env_dir / "cache" / "clusterctl", ignore_errors=True)
    first = ssh_clusters.cluster(hosts, hub=False)
    pids = {i.name: i.pid for i in first.world()}
    assert first.ssh.shipped == 2  # the first bootstrap ships the code to each host
    first.close()
    second = ssh_clusters.cluster(hosts, hub=False)
    again = {i.name: i.pid for i in second.world()}
    assert again == pids  # the same nodes answered: they outlived the first controller
    assert second.ssh.shipped == 0
    assert second.down() == {"h1": "stopped", "h2": "stopped"}
    assert clusterctl_pids(ssh_bed, "h1") == [] and clusterctl_pids(ssh_bed, "h2") == []
    third = ssh_clusters.cluster(hosts, hub=False)
    assert all(i.ok for i in third.world())
    assert third.ssh.shipped == 0  # the code cache survives down


def test_proxyjump_through_a_jump_host(ssh_clusters, ssh_bed):
    alias = ssh_bed.add_jump("h1", JUMP)
    c = ssh_clusters.cluster(f"{alias} name=far\n")
    info, = c.world()
    assert info.ok, info
    assert c.rpc("far", lambda: os.environ["XDG_CACHE_HOME"]).endswith("/h1/cache")
    jump_address = ssh_bed.host(JUMP).address
    assert jump_address in ssh_bed.host("h1").log_path.read_text()


def test_ssh_config_alias_through_include(ssh_clusters, ssh_bed, tmp_path):
    extra = tmp_path / "extra.conf"
    h2 = ssh_bed.host("h2")
    extra.write_text(f"Host included-h2\n    HostName {h2.address}\n    Port {h2.port}\n"
                     f"    User {ssh_bed.user}\n    IdentityFile {ssh_bed.client_key}\n    IdentitiesOnly yes\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {extra}\n" + ssh_bed.ssh_config.read_text())
    c = ssh_clusters.cluster("included-h2\n", ssh={"config_file": str(config)})
    info, = c.world()
    assert info.ok, info


def _asking_config(bed, tmp_path, first: str = "StrictHostKeyChecking ask") -> Path:
    """The bed's ssh config (StrictHostKeyChecking yes) with ``first`` put before it:
    ssh takes the first value of an option, so ``first`` wins."""
    config = tmp_path / "asking_ssh_config"
    config.write_text(first + "\n" + bed.ssh_config.read_text())
    return config


def _server_key(cluster, alias: str) -> str:
    """``type base64`` of the host key the cluster's live connection to a bed host got."""
    target = cluster.ssh.target(alias)
    transport, = [t for key, t in cluster.ssh._transports.items() if key[:2] == (target.hostname, target.port)]
    key = transport.get_remote_server_key()
    return f"{key.get_name()} {key.get_base64()}"


def test_unknown_host_key_refused_then_accepted_on_request(ssh_clusters, ssh_bed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("# nothing known yet\n")
    asking = _asking_config(ssh_bed, tmp_path)   # ssh's default: ask (nobody to ask here)
    c = ssh_clusters.cluster("h3\n", ssh={"known_hosts": str(empty), "config_file": str(asking)})
    info, = c.world()
    assert info.status == "pang"
    assert "not known" in info.reason and "SHA256:" in info.reason
    assert empty.read_text() == "# nothing known yet\n"
    trusting = ssh_clusters.cluster("h3\n", ssh={"known_hosts": str(empty), "config_file": str(asking),
                                          "accept_new_host_keys": True})
    assert trusting.world()[0].ok
    lines = empty.read_text().splitlines()
    assert lines[0] == "# nothing known yet" and len(lines) == 2
    assert lines[1] == f"{ssh_bed.host('h3').known_hosts_name} {ssh_bed.host('h3').host_pubkey_line}"


def test_changed_host_key_is_refused_naming_the_file_and_line(ssh_clusters, ssh_bed, tmp_path):
    known = tmp_path / "known_hosts"
    h1, h2 = ssh_bed.host("h1"), ssh_bed.host("h2")
    known.write_text(f"# hosts\n\n{h1.known_hosts_name} {h1.host_pubkey_line}\n"
                     f"{h2.known_hosts_name} {h2.host_pubkey_line}\n")     # h2 on line 4
    before, stat_before = known.read_bytes(), known.stat()
    accept_new = _asking_config(ssh_bed, tmp_path, "StrictHostKeyChecking accept-new")
    ssh_bed.set_host_key("h2")
    try:
        c = ssh_clusters.cluster("h2\nh1\n", ssh={"known_hosts": str(known), "config_file": str(accept_new),
                                            "accept_new_host_keys": True})
        h2_info, h1_info = c.world()
        assert h1_info.ok
        assert h2_info.status == "pang" and "HOST KEY OF h2 CHANGED" in h2_info.reason
        assert f"{known}:4 has another ED25519 key" in h2_info.reason
        stat_after = known.stat()
        assert known.read_bytes() == before          # not appended to, not rewritten
        assert (stat_after.st_ino, stat_after.st_mtime_ns) == (stat_before.st_ino, stat_before.st_mtime_ns)
    finally:
        ssh_bed.refresh_known_hosts()


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_host_recorded_with_another_key_type_connects_under_strict_checking(ssh_clusters, ssh_bed, tmp_path,
                                                                           key_type):
    """ssh offers first the algorithms of the keys known_hosts holds for the host: a host
    serving ed25519 and ECDSA (or RSA) keys, recorded only with the latter, is known."""
    recorded = ssh_bed.add_host_key("h3", key_type)
    try:
        known = tmp_path / "known_hosts"
        known.write_text(f"{ssh_bed.host('h3').known_hosts_name} {recorded}\n")
        before = known.read_bytes()
        c = ssh_clusters.cluster("h3\n", ssh={"known_hosts": str(known)}, hub=False)   # the bed's config: yes; its own pool, to read the key
        info, = c.world()
        assert info.ok, info
        assert c.rpc("h3", "operator.add", 2, 3) == 5
        assert _server_key(c, "h3") == recorded
        assert known.read_bytes() == before
        assert c.down() == {"h3": "stopped"}    # while the recorded key still opens h3
    finally:
        ssh_bed.drop_host_keys("h3")


@pytest.mark.parametrize("how", ["config", "flag"])
def test_accept_new_uses_the_recorded_key_type_not_a_new_ed25519_key(ssh_clusters, ssh_bed, tmp_path, how):
    """Under accept-new, a host recorded with its ECDSA key that also offers ed25519 is
    reached with the recorded key: the ed25519 key is not trusted and not written down."""
    recorded = ssh_bed.add_host_key("h3", "ecdsa")
    try:
        known = tmp_path / "known_hosts"
        known.write_text(f"{ssh_bed.host('h3').known_hosts_name} {recorded}\n")
        before = known.read_bytes()
        if how == "config":
            ssh = {"config_file": str(_asking_config(ssh_bed, tmp_path, "StrictHostKeyChecking accept-new"))}
        else:
            ssh = {"config_file": str(_asking_config(ssh_bed, tmp_path)), "accept_new_host_keys": True}
        c = ssh_clusters.cluster("h3\n", ssh={"known_hosts": str(known), **ssh}, hub=False)  # its own pool
        info, = c.world()
        assert info.ok, info
        assert _server_key(c, "h3") == recorded
        assert known.read_bytes() == before
        assert c.down() == {"h3": "stopped"}    # while the recorded key still opens h3
    finally:
        ssh_bed.drop_host_keys("h3")


def test_accept_new_flag_does_not_override_strict_checking_in_the_config(ssh_clusters, ssh_bed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    c = ssh_clusters.cluster("h3\n", ssh={"known_hosts": str(empty), "accept_new_host_keys": True})
    info, = c.world()                           # the bed's config says StrictHostKeyChecking yes
    assert info.status == "pang"
    assert "not known" in info.reason and "StrictHostKeyChecking yes" in info.reason
    assert empty.read_text() == ""


def test_hash_known_hosts_hashes_the_appended_name(ssh_clusters, ssh_bed, tmp_path):
    import subprocess

    known = tmp_path / "known_hosts"
    known.write_text("")
    config = _asking_config(ssh_bed, tmp_path, "HashKnownHosts yes\nStrictHostKeyChecking accept-new")
    c = ssh_clusters.cluster("h1\n", ssh={"known_hosts": str(known), "config_file": str(config)})
    assert c.world()[0].ok
    h1 = ssh_bed.host("h1")
    line, = known.read_text().splitlines()
    assert line.startswith("|1|") and h1.address not in line
    assert line.split()[1:] == h1.host_pubkey_line.split()
    found = subprocess.run(["ssh-keygen", "-F", h1.known_hosts_name, "-f", str(known)],
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0 and line in found.stdout
    # and OpenSSH itself trusts the host with it under strict checking
    run = ssh_bed.ssh("h1", "true", options=["-o", f"UserKnownHostsFile={known}"])
    assert run.returncode == 0, run.stderr


def test_wrong_user_is_a_clear_auth_error(ssh_clusters):
    c = ssh_clusters.cluster("nosuchuser@h1 name=bad\nh2\n")
    bad, good = c.world()
    assert good.ok
    assert bad.status == "pang" and "permission denied" in bad.reason.lower()


def test_stopped_host_shows_pang_within_the_timeout_while_others_answer(ssh_clusters, ssh_bed):
    ssh_bed.stop_host("h3")
    try:
        c = ssh_clusters.cluster("h1\nh2\nh3\n", connect_timeout=4)
        started = time.monotonic()
        infos = c.world()
        elapsed = time.monotonic() - started
        assert [i.status for i in infos] == ["pong", "pong", "pang"]
        assert elapsed < 15
    finally:
        ssh_bed.start_host("h3")


def test_python_version_mismatch_is_reported_at_world_time(ssh_clusters, tmp_path):
    shim = tmp_path / "oldpy"
    # a Python that says it is 3.9 and runs the code it is given (the last argument)
    shim.write_text("#!/bin/sh\nexec python3 -c 'import sys; sys.version_info = (3, 9, 18, \"final\", 0); "
                    "code = sys.argv[-1]; sys.argv = [\"-c\"]; exec(code)' \"$@\"\n")
    shim.chmod(0o755)
    c = ssh_clusters.cluster(f"h1 python={shim}\nh2\n")
    h1, h2 = c.world()
    assert h2.ok
    assert h1.status == "pang"
    assert "3.9.18" in h1.reason and "python=" in (h1.reason + str(c.spec('h1').source))


def test_missing_python_is_a_clear_error(ssh_clusters):
    c = ssh_clusters.cluster("h1 python=/nonexistent/python3\n")
    info, = c.world()
    assert info.status == "pang" and "no Python" in info.reason


def test_down_leaves_no_process_on_any_host(ssh_clusters, ssh_bed):
    c = ssh_clusters.cluster("h1\nh2\nh3\n")
    assert all(i.ok for i in c.world())
    assert clusterctl_pids(ssh_bed, "h1")
    assert c.down() == {"h1": "stopped", "h2": "stopped", "h3": "stopped"}
    for alias in ("h1", "h2", "h3"):
        assert clusterctl_pids(ssh_bed, alias) == []


def io_counters(pid: int) -> tuple[int, int]:
    """(bytes read, bytes written) by a process, from /proc."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def test_the_node_serves_the_ssh_channel_itself(ssh_clusters, ssh_bed):
    """The boot script hands the channel's stdin and stdout to the node and copies
    nothing: traffic through the channel does not pass through it."""
    c = ssh_clusters.cluster("h1\n")
    assert c.rpc("h1", "operator.add", 1, 2) == 3
    procs = clusterctl_pids(ssh_bed, "h1")
    boots = [pid for pid, cmd in procs if "sys.stdin.buffer.readline" in cmd]
    assert len(boots) == 1
    assert not {0, 1} & {int(fd) for fd in os.listdir(f"/proc/{boots[0]}/fd")}
    before = io_counters(boots[0])
    blob = b"x" * 100_000
    for _ in range(20):
        assert c.rpc("h1", "operator.getitem", [blob], 0) == blob  # 4 MB through the channel
    after = io_counters(boots[0])
    assert after[0] - before[0] < 10_000 and after[1] - before[1] < 10_000
    node = c.world()[0].pid
    c.close()  # the channel closes: the boot script exits, the node stays
    wait_for(lambda: boots[0] not in {pid for pid, _ in clusterctl_pids(ssh_bed, "h1")},
             message="the boot script to exit")
    assert node in {pid for pid, _ in clusterctl_pids(ssh_bed, "h1")}


def test_unknown_host_keys_are_listed_once_and_trusted_on_request(ssh_clusters, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    asking = tmp_path / "ssh_config"  # OpenSSH's default: ask (the first value wins)
    asking.write_text("StrictHostKeyChecking ask\n" + ssh_clusters.bed.ssh_config.read_text())
    c = ssh_clusters.cluster("h1\nh2\nh2 name=again\n", ssh={"known_hosts": str(empty),
                                                      "config_file": str(asking)})
    unknowns = c.unknown_host_keys()
    assert sorted(u.host_label for u in unknowns) == sorted(
        {ssh_clusters.bed.host("h1").known_hosts_name, ssh_clusters.bed.host("h2").known_hosts_name})
    assert all(u.fingerprint.startswith("SHA256:") for u in unknowns)
    c.trust_host_keys(unknowns)
    assert all(i.ok for i in c.world())
    assert len(empty.read_text().splitlines()) == 2


def _cli_world(bed, tmp_path, config: Path, known: Path, *options: str):
    import json
    import subprocess

    hosts = tmp_path / "hosts"
    hosts.write_text("h1\n")
    run = subprocess.run([sys.executable, "-m", "clusterctl", "--hosts", str(hosts), "--ssh-config",
                          str(config), "--known-hosts", str(known), *options, "--json", "world"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert "Traceback" not in run.stderr
    return run, (json.loads(run.stdout) if run.stdout.strip() else None)


def test_cli_refuses_unknown_host_keys_when_nobody_can_be_asked(ssh_clusters, ssh_bed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    run, nodes = _cli_world(ssh_bed, tmp_path, _asking_config(ssh_bed, tmp_path), empty)
    assert run.returncode == 3
    node, = nodes
    assert node["status"] == "pang"
    assert "not known" in node["reason"] and "--accept-new-host-keys" in node["reason"]
    assert empty.read_text() == ""


def test_cli_accept_new_flag_refused_by_strict_checking_in_the_config(ssh_clusters, ssh_bed, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    run, nodes = _cli_world(ssh_bed, tmp_path, ssh_bed.ssh_config, empty, "--accept-new-host-keys")
    assert run.returncode == 3
    node, = nodes
    assert node["status"] == "pang"
    assert "StrictHostKeyChecking yes" in node["reason"] and "does not override" in node["reason"]
    assert empty.read_text() == ""


def test_cut_network_during_rpc_is_detected_by_heartbeat(ssh_clusters, ssh_bed, tmp_path):
    import threading

    c = ssh_clusters.cluster("h1\nh2\n", heartbeat_timeout=3.0)
    assert all(i.ok for i in c.world())
    marker = tmp_path / "started"

    def long_task(path=str(marker)):
        import os as o
        import time as t

        with open(path + ".tmp", "w") as f:
            f.write(str(o.getppid()))  # the node that runs it
        o.replace(path + ".tmp", path)
        t.sleep(30)

    outcome = {}

    def call():
        started = time.monotonic()
        try:
            c.rpc("h2", long_task)
        except errors.ClusterError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the task never started on h2"
    ssh_bed.cut("h2")
    try:
        caller.join(20)
        assert not caller.is_alive()
        assert isinstance(outcome.get("error"), errors.NodeLost)
        assert "outcome" in str(outcome["error"])
        assert outcome["seconds"] < 12
        assert c.rpc("h1", "operator.add", 1, 1) == 2  # the other host keeps working
        # the node on h2 noticed its controller was gone and killed the sleeping worker
        log = ssh_bed.host("h2").env_dir / "run" / "clusterctl" / "h2.log"
        deadline = time.monotonic() + 10
        while "controller went away" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        node = int(marker.read_text())
        mine = [line for line in text.splitlines() if f"[{node}]" in line]
        alive = node in {pid for pid, _ in clusterctl_pids(ssh_bed, "h2")}
        assert any("no heartbeat" in line for line in mine) and "controller went away" in text, (
            f"node {node} ran the task and is {'alive' if alive else 'gone'}; "
            f"its log lines: {mine[-8:]}; processes on h2: {clusterctl_pids(ssh_bed, 'h2')}; "
            f"the log ends: {text.splitlines()[-6:]}")
    finally:
        ssh_bed.restore("h2")


def test_unwritable_code_cache_is_a_clear_error(ssh_clusters, tmp_path):
    # root may write anywhere on disk, so point the cache where nobody can write: /proc
    shim = tmp_path / "py-nocache"
    shim.write_text('#!/bin/sh\nXDG_CACHE_HOME=/proc/1/no-such-dir exec python3 "$@"\n')
    shim.chmod(0o755)
    c = ssh_clusters.cluster(f"h1 python={shim}\n")
    info, = c.world()
    assert info.status == "pang"
    assert "cannot write the code cache" in info.reason


def _config_with(bed, tmp_path, extra: str) -> Path:
    config = tmp_path / "ssh_config"
    config.write_text(extra + "\n" + bed.ssh_config.read_text())
    return config


def test_multi_hop_proxyjump(ssh_clusters, ssh_bed, tmp_path):
    ssh_bed.set_forwarding("h3", True)
    ssh_bed.set_forwarding(JUMP, True)
    h1 = ssh_bed.host("h1")
    config = _config_with(ssh_bed, tmp_path, f"Host two-hops\n    HostName {h1.address}\n    Port {h1.port}\n"
                                         f"    User {ssh_bed.user}\n    IdentityFile {ssh_bed.client_key}\n"
                                         f"    IdentitiesOnly yes\n    ProxyJump h3,{JUMP}\n")
    c = ssh_clusters.cluster("two-hops name=far\n", ssh={"config_file": str(config)})
    info, = c.world()
    assert info.ok, info
    # h1 saw the connection come from the last hop, which was reached through the first
    assert ssh_bed.host(JUMP).address in ssh_bed.host("h1").log_path.read_text()
    assert ssh_bed.host("h3").address in ssh_bed.host(JUMP).log_path.read_text()


def test_proxycommand_runs_through_a_shell_and_is_reaped(ssh_clusters, ssh_bed, tmp_path):
    ssh_bed.set_forwarding(JUMP, True)
    h2 = ssh_bed.host("h2")
    # $SSH_CONFIG is expanded by the shell: paramiko's own ProxyCommand could not do that
    config = _config_with(ssh_bed, tmp_path, f"Host via-command\n    HostName {h2.address}\n    Port {h2.port}\n"
                                         f"    User {ssh_bed.user}\n    IdentityFile {ssh_bed.client_key}\n"
                                         f"    IdentitiesOnly yes\n"
                                         f"    ProxyCommand ssh -F \"$BED_SSH_CONFIG\" -W %h:%p {JUMP}\n")
    os.environ["BED_SSH_CONFIG"] = str(ssh_bed.ssh_config)
    try:
        c = ssh_clusters.cluster("via-command name=piped\n", ssh={"config_file": str(config)}, hub=False)
        info, = c.world()
        assert info.ok, info
        proxies = list(c.ssh._proxies)
        assert proxies and proxies[0].proc.poll() is None
        assert c.down() == {"piped": "stopped"}
        c.close()
        assert proxies[0].proc.poll() is not None  # ended and reaped, no zombie left
    finally:
        del os.environ["BED_SSH_CONFIG"]


def test_an_idle_connection_sleeps_and_its_thread_ends_at_once_when_closed(ssh_clusters):
    """An established SSH connection's thread reads with a long timeout (it does not
    wake ten times a second to look whether it was closed), and closing the cluster
    wakes it: the thread is gone at once, not when that timeout runs out."""
    from clusterctl.transport import ssh as ssh_transport

    c = ssh_clusters.cluster("h1\n", hub=False)
    assert c.rpc("h1", "operator.add", 1, 2) == 3
    [transport] = list(c.ssh._transports.values())
    assert transport.sock.gettimeout() == ssh_transport.IDLE_WAKE_SECONDS >= 1.0
    assert transport.is_alive()
    c.close()
    closed = time.monotonic()
    wait_for(lambda: not transport.is_alive(), 5, 0.01, "the transport's thread to end")
    assert time.monotonic() - closed < 0.5
