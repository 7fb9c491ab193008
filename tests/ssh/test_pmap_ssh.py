"""pmap over real OpenSSH hosts (tests/support/sshbed.py): a host killed, cut off or slowed mid-run.

Each test checks that every item came back exactly once, and (through the ``ssh_clusters``
fixture of tests/ssh/conftest.py) that no clusterctl process is left on any host afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from clusterctl.api.pmap import PMap
from helpers import CutUntilLost, end_process, wait_for
from latency_proxy import LatencyProxy
from sshbed import available_reason
from sshbed import clusterctl_processes as clusterctl_pids

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

_reason = available_reason()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=f"SSH test bed unavailable: {_reason}"))

HOSTS = "h1 slots=2\nh2 slots=2\nh3 slots=2\n"


def test_pmap_over_three_hosts_equals_map(ssh_clusters):
    c = ssh_clusters.cluster(HOSTS)
    assert all(i.ok for i in c.world())
    # a millisecond an item: long enough that every host takes part however slow the
    # others are to answer their first ping, on a loaded machine
    run = PMap(c, lambda x: (time.sleep(0.001), x * x, os.environ["XDG_CACHE_HOME"][-8:])[1:],
               range(3000))
    results = list(run.values())
    assert [r[0] for r in results] == [x * x for x in range(3000)]
    assert all(run.stats.nodes[h].items > 0 for h in ("h1", "h2", "h3"))
    blobs = [bytes([i]) * (2 << 20) for i in range(12)]  # 2 MB items
    assert list(c.pmap(lambda b: hashlib.md5(b).hexdigest(), blobs)) == \
        [hashlib.md5(b).hexdigest() for b in blobs]


def test_a_host_killed_mid_run(ssh_clusters, ssh_bed):
    c = ssh_clusters.cluster(HOSTS, heartbeat_timeout=3.0)
    assert all(i.ok for i in c.world())
    run = PMap(c, lambda x: time.sleep(0.01) or x, range(600))
    got, killed = [], False
    for value in run.values():  # (world went through the hub: the map opens its own streams)
        got.append(value)
        if not killed and len(got) >= 60 and run.stats.nodes["h2"].items > 0:  # mid-run
            ssh_bed.kill_host("h2")
            killed = True
    ssh_bed.restart_sshd("h2")  # the host comes back, for the tests after this one
    assert killed and got == list(range(600))
    assert run.stats.nodes["h2"].state == "lost"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.slow
def test_a_host_cut_off_mid_run_is_lost_by_heartbeat(ssh_clusters, ssh_bed, tmp_path):
    """h3 is cut off while its workers run items (20 s each there), and restored as soon
    as it is declared lost, while the run goes on: each item once, nothing from h3, and
    h3's node drops the lost connection's work (the workers running it are killed)."""
    if ssh_bed.unsupported_reason("cut"):
        pytest.skip(ssh_bed.unsupported_reason("cut"))
    c = ssh_clusters.cluster(HOSTS, heartbeat_interval=0.5, heartbeat_timeout=3.0)
    assert all(i.ok for i in c.world())
    starts = tmp_path / "starts"  # the hosts share this machine's file system
    far = str(ssh_bed.host("h3").env_dir / "cache")

    def work(x):
        here = os.environ.get("XDG_CACHE_HOME") == far
        with open(starts, "a") as fh:
            fh.write(f"{int(here)} {os.getpid()} {x}\n")
        time.sleep(20.0 if here else 0.02)
        return x

    def started_on_h3() -> list[list[str]]:
        text = starts.read_text() if starts.exists() else ""
        return [f for f in (line.split() for line in text.splitlines()) if f[0] == "1"]

    run = PMap(c, work, range(1200), speculate=False)
    cut = CutUntilLost(ssh_bed, "h3", lambda: len(started_on_h3()) >= 2,
                       lambda: run.stats.nodes["h3"].state == "lost")
    got = list(run.values())
    cut.join()
    assert got == list(range(1200))
    assert cut.restored_at < run.stats.finished  # restored mid-run
    h3 = run.stats.nodes["h3"]
    assert h3.state == "lost" and "heartbeat" in h3.reason
    assert run.stats.done == 1200 and run.stats.duplicates == 0
    assert h3.items == 0 and sum(n.items for n in run.stats.nodes.values()) == 1200
    workers = {int(f[1]) for f in started_on_h3()}
    wait_for(lambda: not any(_alive(pid) for pid in workers), 15,
             message="h3's workers running the lost connection's items to be killed")


def test_a_host_behind_200_ms_of_latency_gets_fewer_items(ssh_clusters, ssh_bed, tmp_path):
    """h1 is 200 ms further away (round trip): by netem on its link where the kernel has
    it, else through a relay on loopback that holds every byte 100 ms each way."""
    with contextlib.ExitStack() as stack:
        if ssh_bed.unsupported_reason("slow"):
            h1 = ssh_bed.host("h1")
            proxy = stack.enter_context(LatencyProxy((h1.address, h1.port), delay=0.1))
            stack.callback(ssh_clusters.down_everything)  # through the relay, while it still runs
            config = tmp_path / "ssh_config"
            config.write_text(f"Host h1far\n  HostName 127.0.0.1\n  Port {proxy.port}\n"
                              f"  HostKeyAlias {h1.known_hosts_name}\n"
                              + ssh_bed.ssh_config.read_text())
            ssh_clusters.ssh = dict(ssh_clusters.ssh, config_file=str(config))
            c = ssh_clusters.cluster(HOSTS.replace("h1 slots=2", "h1far name=h1 slots=2"))
            infos = c.world()
            if not all(i.ok for i in infos):
                # Seen once in a full CI-like run, never alone: h1's SSH login through the
                # relay failed reading the banner (EBADF). This test is about scheduling
                # under latency, so the world gets one more try, and the first reason is
                # kept in the message if that fails too.
                first = [(i.name, i.reason) for i in infos if not i.ok]
                infos = c.world()
                assert all(i.ok for i in infos), (first, [(i.name, i.reason) for i in infos])
            assert c.world()[0].rtt > 0.2  # the ping went through the relay
        else:
            c = ssh_clusters.cluster(HOSTS)
            assert all(i.ok for i in c.world())
            ssh_bed.slow("h1", 200)
        run = PMap(c, lambda x: time.sleep(0.02) or x, range(400))
        assert list(run.values()) == list(range(400))
        counts = {h: run.stats.nodes[h].items for h in ("h1", "h2", "h3")}
        assert counts["h1"] < min(counts["h2"], counts["h3"]), counts


def test_ctrl_c_mid_run_over_ssh_cancels_the_work_on_every_host(ssh_clusters, ssh_bed, tmp_path):
    """SIGINT to `clusterctl pmap` running on three hosts: it exits 130 with the summary,
    and once it has exited nothing of the job runs on any host any more (the nodes stay,
    idle, for the next command)."""
    log = tmp_path / "started.log"  # the hosts share this machine's file system
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(f"""
        import time

        def task(x):
            with open({str(log)!r}, "a") as fh:
                fh.write(f"{{x}}\\n")
            time.sleep(0.3)
            return x

        def inputs():
            return range(10_000)
    """))
    proc = ssh_clusters.interruptible_cli(HOSTS, ["pmap", str(job)], tmp_path)
    try:
        wait_for(lambda: log.exists() and len(log.read_text().split()) >= 12, 60,
                 message="items to start on the hosts")
        busy = {a: len(clusterctl_pids(ssh_bed, a)) for a in ("h1", "h2", "h3")}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        end_process(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "of 10,000 items in" in err
    started = len(log.read_text().split())
    time.sleep(1.0)  # > 3 item times: a task still running would have started another
    assert len(log.read_text().split()) == started
    for alias in ("h1", "h2", "h3"):
        # node, its 2 workers and nothing else: the channel's boot script is gone
        wait_for(lambda: len(clusterctl_pids(ssh_bed, alias)) == busy[alias] - 1, 10,
                 message=f"only the idle node on {alias}")
