"""Pipelines over real OpenSSH hosts (tests/support/sshbed.py): a host cut off, a node
killed, a pinned stage, and Ctrl-C to the CLI (a slowed node: tests/local/test_pipeline.py;
a host far away is pmap's scheduler's to handle: tests/ssh/test_pmap_ssh.py).

Each fault test checks that every item came back exactly once: the results equal the
composition of the stages over the input, in order, with no item missing or doubled;
and (through the ``ssh_clusters`` fixture) that no clusterctl process is left on any host
afterwards. An item learns which host runs it from its ``XDG_CACHE_HOME``, private to
each host of the bed (``<workdir>/hI/cache``).
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

from clusterctl.api.pipeline import Pipeline, figures
from helpers import CutUntilLost, end_process, wait_for
from sshbed import available_reason
from sshbed import clusterctl_processes as clusterctl_pids

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(150)]

_reason = available_reason()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=f"SSH test bed unavailable: {_reason}"))

# the hosts cannot import this module: its stage functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HOSTS = "h1 slots=2\nh2 slots=2\nh3 slots=2\n"


def host_here() -> str:
    """The bed host this process runs on (``h1``..): its XDG_CACHE_HOME is ``.../hI/cache``."""
    return os.path.basename(os.path.dirname(os.environ["XDG_CACHE_HOME"]))


def inc(x):
    time.sleep(0.005)
    return x + 1


def double(x):
    time.sleep(0.005)
    return x * 2


def minus3(x):
    time.sleep(0.005)
    return x - 3


def expected(items):
    """inc, then double, then minus3, over ``items`` (as written out: the stages sleep)."""
    return [(x + 1) * 2 - 3 for x in items]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def assert_every_stage_saw_every_item(run, n: int) -> None:
    rows = figures(run.stats)
    assert [r.items_out for r in rows] == [n] * len(rows), [(r.name, r.items_out) for r in rows]
    assert run.stats.done == n and run.stats.failed == 0


# -- faults ------------------------------------------------------------------------------

def test_a_host_cut_off_mid_run_loses_no_item(ssh_clusters, ssh_bed, tmp_path):
    """h3 is cut off while it runs items of a 3-stage pipeline (three farms: the middle
    stage has a fixed share), and restored as soon as it is declared lost, while the run
    goes on: every item once, in order, and the run reports h3 lost by heartbeat."""
    if ssh_bed.unsupported_reason("cut"):
        pytest.skip(ssh_bed.unsupported_reason("cut"))
    c = ssh_clusters.cluster(HOSTS, heartbeat_interval=0.5, heartbeat_timeout=3.0)
    assert all(i.ok for i in c.world())
    starts = tmp_path / "starts"  # the hosts share this machine's file system

    def mark(stage, x):
        with open(starts, "a") as fh:
            fh.write(f"{host_here()} {stage} {x}\n")

    def first(x):
        mark(1, x)
        return inc(x)

    def second(x):
        mark(2, x)
        return double(x)

    def third(x):
        mark(3, x)
        return minus3(x)

    def started_on_h3() -> int:
        text = starts.read_text() if starts.exists() else ""
        return sum(1 for line in text.splitlines() if line.startswith("h3 "))

    n = 900
    run = Pipeline(c, [first, (second, {"replicas": 4}), third], range(n), speculate=False)
    cut = CutUntilLost(ssh_bed, "h3", lambda: started_on_h3() >= 4,
                       lambda: run.stats.nodes.get("h3", "").startswith("lost"), start_timeout=60)
    got = list(run.values())
    assert cut.join() and cut.cut_at is not None, "h3 was never cut off"
    assert got == expected(range(n))
    assert_every_stage_saw_every_item(run, n)
    assert cut.restored_at < run.stats.finished  # restored mid-run
    h3 = run.stats.nodes["h3"]
    assert h3.startswith("lost") and "heartbeat" in h3, run.stats.nodes
    assert all(run.stats.nodes[h] == "running" for h in ("h1", "h2")), run.stats.nodes
    assert sum(f.stats.requeued for f in run.farms) > 0  # h3's chunks in flight were redone
    assert all(f.stats.duplicates == 0 for f in run.farms)
    for f in run.farms:  # each farm delivered every item once, between its nodes
        assert sum(node.items for node in f.stats.nodes.values()) == n, f.label


def test_a_node_sigkilled_mid_run_loses_no_item(ssh_clusters, ssh_bed):
    """The node on h2 is SIGKILLed while a pipeline of four stages (two farms) runs on it:
    every item once, in order; its chunks in flight are redone on h1 and h3."""
    c = ssh_clusters.cluster(HOSTS, heartbeat_timeout=3.0)
    infos = c.world()
    assert all(i.ok for i in infos)
    victim = {i.name: i.pid for i in infos}["h2"]
    assert victim in {pid for pid, _ in clusterctl_pids(ssh_bed, "h2")}

    def slow(x):
        time.sleep(0.01)
        return x

    n = 600
    run = Pipeline(c, [inc, slow, (double, {"replicas": 2}), minus3], range(n))
    got, killed = [], False
    for value in run.values():
        got.append(value)
        if not killed and len(got) >= 60 and run.farms[0].stats.nodes["h2"].items > 0:  # mid-run
            os.kill(victim, signal.SIGKILL)
            killed = True
    assert killed, "the run ended before h2 had done anything"
    wait_for(lambda: not _alive(victim), 10, message="h2's node to die")
    assert got == expected(range(n))
    assert_every_stage_saw_every_item(run, n)
    assert run.stats.nodes["h2"].startswith("lost"), run.stats.nodes
    assert sum(f.stats.requeued for f in run.farms) > 0


# -- where the stages run ----------------------------------------------------------------

def where(x):
    return (x, host_here())


def where_pinned(pair):
    return pair + (host_here(),)


def where_last(triple):
    return triple + (host_here(),)


def test_a_pinned_stage_runs_only_on_its_host(ssh_clusters):
    """Stage 2 pinned to h2: every item ran stage 2 on h2, and stages 1 and 3 elsewhere."""
    c = ssh_clusters.cluster(HOSTS)
    assert all(i.ok for i in c.world())
    n = 300
    run = Pipeline(c, [where, (where_pinned, {"nodes": ["h2"]}), where_last], range(n))
    got = list(run.values())
    assert [g[0] for g in got] == list(range(n))
    assert {g[2] for g in got} == {"h2"}
    others = {g[1] for g in got} | {g[3] for g in got}
    assert others and others <= {"h1", "h3"}, others
    assert_every_stage_saw_every_item(run, n)
    assert [f.stats.nodes.keys() for f in run.farms] == [{"h1", "h3"}, {"h2"}, {"h1", "h3"}]
    assert figures(run.stats)[1].replicas == 2  # h2's slots


# -- the CLI -----------------------------------------------------------------------------

def test_ctrl_c_mid_run_over_ssh_cancels_every_stage_on_every_host(ssh_clusters, ssh_bed, tmp_path):
    """SIGINT to `clusterctl pipeline` running three stages (three farms) on three hosts:
    it exits 130 with the stage table on stderr, and once it has exited nothing of the
    pipeline runs on any host any more (the nodes stay, idle, for the next command)."""
    log = tmp_path / "started.log"  # the hosts share this machine's file system
    script = tmp_path / "stages.py"
    script.write_text(textwrap.dedent(f"""
        import time

        def started(stage, x):
            with open({str(log)!r}, "a") as fh:
                fh.write(f"{{stage}}:{{x}}\\n")

        def parse(x):
            started(1, x)
            time.sleep(0.05)
            return x + 1

        def crunch(x):
            started(2, x)
            time.sleep(0.3)
            return x * 2

        def emit(x):
            started(3, x)
            time.sleep(0.05)
            return x - 3

        stages = [parse, (crunch, {{"replicas": 4}}), emit]

        def inputs():
            return range(10_000)
    """))
    proc = ssh_clusters.interruptible_cli(HOSTS, ["pipeline", "--no-progress", str(script)], tmp_path)
    try:
        def lines() -> list[str]:
            return log.read_text().split() if log.exists() else []

        wait_for(lambda: sum(line.startswith("2:") for line in lines()) >= 8, 60,
                 message="items to reach stage 2 on the hosts")
        busy = {a: len(clusterctl_pids(ssh_bed, a)) for a in ("h1", "h2", "h3")}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        end_process(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "of 10,000 items in" in err and "through 3 stages" in err, err
    for name in ("1 parse", "2 crunch", "3 emit"):  # the stage table
        assert name in err, err
    assert "bottleneck" in err, err
    written = [int(line) for line in out.split()]
    assert written == [(x + 1) * 2 - 3 for x in range(len(written))]  # in order, none twice
    started = len(lines())
    time.sleep(1.0)  # > 3 item times: a stage still running would have started another
    assert len(lines()) == started
    for alias in ("h1", "h2", "h3"):
        # node, its 2 workers and nothing else: the channel's boot script is gone
        wait_for(lambda: len(clusterctl_pids(ssh_bed, alias)) == busy[alias] - 1, 10,
                 message=f"only the idle node on {alias}")
