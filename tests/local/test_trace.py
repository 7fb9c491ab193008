"""Traces of real runs on local nodes: the file keeps the Chrome trace format's rules,
the analysis reads back known service times, a node whose clock really runs elsewhere
(a Linux time namespace) lands on the controller's timeline within the offset's bound,
a full ring reports its drops, and an interrupted or faulted run still leaves a
readable trace with its failed attempts linked to their retries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import cloudpickle
import pytest

from clusterctl import Cluster
from clusterctl.api.pmap import PMap
from clusterctl.api.trace.analysis import analyze, load
from clusterctl.config.hosts import HostSpec

from helpers import node_pid
from trace_checks import check_format

pytestmark = pytest.mark.local_only

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def nap(seconds):
    time.sleep(seconds)
    return seconds


def inc(x):
    return x + 1


def test_a_traced_pmap_and_pipeline_give_a_well_formed_file_and_known_service_times(
        make_local_cluster, tmp_path):
    cluster = make_local_cluster()
    path = tmp_path / "run.json"
    started = time.monotonic()
    with cluster.trace(path):
        assert list(cluster.pmap(nap, [0.03] * 24, chunksize=1)) == [0.03] * 24
        assert list(cluster.pipeline([abs, (nap, {"replicas": 2})], [0.005] * 50)) == [0.005] * 50
    wall = time.monotonic() - started
    data = load(path)
    check_format(data)
    assert 0.5 * wall * 1e6 < data["metadata"]["duration_us"] <= wall * 1e6  # microseconds
    found = analyze(data)
    runs = {r.label: r for r in found.runs}
    # 30 ms sleeps: never less; a loaded machine oversleeps (34 ms seen), so up to 1.5x
    # (two items counted as one would be 60 ms)
    assert 30_000 <= runs["pmap nap"].per_item_us <= 45_000
    assert runs["pmap nap"].items == 24 and runs["stage 2 (nap)"].items == 50
    assert {n.name for n in found.nodes} == {"n1", "n2"}
    assert all(n.offset_error_us is not None and n.offset_error_us < 50_000 for n in found.nodes)
    assert any(e.get("cat") == "stage" for e in data["traceEvents"])  # farm to farm arrows
    queues = [e for e in data["traceEvents"] if e["ph"] == "C" and e["name"] == "queue"]
    assert queues and all(set(e["args"]) == {"stage 2 (nap)"} for e in queues)
    assert found.pipelines and found.pipelines[0]["farms"][1]["label"] == "stage 2 (nap)"


def test_a_slow_stage_is_named_by_the_analysis_as_by_the_run(make_local_cluster, tmp_path):
    from clusterctl.api.pipeline import Pipeline, bottleneck, figures

    cluster = make_local_cluster()
    path = tmp_path / "run.json"
    with cluster.trace(path):
        run = Pipeline(cluster, [inc, lambda x: nap(0.01) and x, inc], range(100))
        assert list(run.values()) == [x + 2 for x in range(100)]
    shown, why = bottleneck(figures(run.stats))
    pipeline = analyze(load(path)).pipelines[0]
    assert pipeline["bottleneck"] == shown.index == 1 and pipeline["why"] == why
    stage = pipeline["stages"][1]
    assert stage["t_s"] == pytest.approx(figures(run.stats)[1].t_s)
    assert stage["rho"] == pytest.approx(figures(run.stats)[1].rho)


def test_a_killed_node_leaves_failed_attempts_linked_to_their_retries(make_local_cluster, tmp_path):
    cluster = make_local_cluster()
    victim = node_pid(cluster, "n1")
    node_pid(cluster, "n2")
    path = tmp_path / "run.json"
    with cluster.trace(path):
        run = PMap(cluster, lambda x: nap(0.01) and x, range(200), chunksize=2, speculate=False)
        got = []
        for value in run.values():
            got.append(value)
            if len(got) == 20:
                os.kill(victim, signal.SIGKILL)
    assert got == list(range(200))
    data = load(path)
    check_format(data)
    found = analyze(data)
    lost = [f for f in found.failed_attempts if f["node"] == "n1"]
    assert lost and all(f["how"].startswith("lost") for f in lost)
    retries = [e for e in data["traceEvents"] if e.get("cat") == "retry" and e["ph"] == "s"]
    assert len(retries) == len(lost)
    assert "n1" in found.lost_nodes and found.nodes[0].state.startswith("lost")
    ok = [e for e in data["traceEvents"] if e.get("cat") == "task" and e["args"]["how"] == "ok"]
    covered = Counter(i for e in ok for i in range(e["args"]["items"][0],
                                                    sum(e["args"]["items"])))
    n2 = {i for e in ok if e["pid"] == 3 for i in range(e["args"]["items"][0], sum(e["args"]["items"]))}
    assert {i for i, _ in covered.items()} >= n2 and all(c == 1 for c in covered.values())
    assert sum(f["items"][1] for f in lost) == found.requeued_items


def test_a_full_ring_drops_the_oldest_and_says_how_many(make_local_cluster, tmp_path):
    cluster = make_local_cluster(slots=(2,))
    path = tmp_path / "run.json"
    with cluster.trace(path, capacity=10):
        assert list(cluster.pmap(inc, range(60), chunksize=1)) == list(range(1, 61))
    data = load(path)
    found = analyze(data)
    assert found.dropped == 60 - 10 and data["metadata"]["dropped"]["n1"] == 50
    assert found.nodes[0].tasks == 10


def test_an_interrupted_run_still_leaves_a_readable_trace(make_local_cluster, tmp_path):
    cluster = make_local_cluster()
    path = tmp_path / "run.json"
    with pytest.raises(KeyboardInterrupt):
        with cluster.trace(path):
            for i, _ in enumerate(cluster.pmap(nap, [0.01] * 400, chunksize=1)):
                if i == 30:
                    raise KeyboardInterrupt
    data = load(path)
    check_format(data)
    assert analyze(data).runs[0].items >= 30


@pytest.fixture
def shifted_python(tmp_path):
    """An interpreter whose monotonic clock runs 5000 s ahead (a time namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("a time namespace needs unshare and root")
    probe = subprocess.run([unshare, "--time", "--monotonic", "5000", "--fork", sys.executable,
                            "-c", "import time; print(time.monotonic())"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0 or float(probe.stdout) < time.monotonic() + 4000:
        pytest.skip(f"no time namespaces here: {probe.stderr.strip()}")
    wrapper = tmp_path / "shifted-python"
    wrapper.write_text(f'#!/bin/sh\nexec {unshare} --time --monotonic 5000 --fork {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_a_node_in_a_time_namespace_lands_on_the_controllers_timeline(env, tmp_path, shifted_python):
    specs = [HostSpec(name="shifted", target="local", slots=2, python=shifted_python)]
    path = tmp_path / "run.json"
    try:
        with Cluster(specs) as cluster:
            with cluster.trace(path):
                assert list(cluster.pmap(nap, [0.02] * 20, chunksize=1)) == [0.02] * 20
        data = load(path)
        check_format(data)
        offset = data["metadata"]["offsets"]["shifted"]
        assert 4999e6 < offset["offset_us"] < 5001e6  # the node's clock is 5000 s ahead
        bound = offset["error_us"]
        sent = {e["args"]["rid"]: e["ts"] for e in data["traceEvents"]
                if e.get("cat") == "chunk" and e["ph"] == "X"}
        tasks = [e for e in data["traceEvents"] if e.get("cat") == "task" and e["ph"] == "X"]
        assert len(tasks) == 20
        for task in tasks:  # each task ran after it was sent, on the merged timeline
            assert task["ts"] >= sent[task["args"]["rid"]] - bound
            assert task["ts"] + task["dur"] <= data["metadata"]["duration_us"] + bound
    finally:
        with Cluster(specs) as closer:
            closer.down()


def test_spawned_processes_of_a_node_in_a_time_namespace_land_on_the_controllers_timeline(
        env, tmp_path, shifted_python):
    """A process's life, the messages it is delivered and its restart, recorded on a node
    whose clock runs 5000 s ahead, sit inside the run on the merged timeline, after the
    program sent them; the restart is marked on the new process's thread."""
    from actor_programs import ended, kvs

    import threading

    from clusterctl.api.trace import record

    specs = [HostSpec(name="shifted", target="local", slots=2, python=shifted_python)]
    path = tmp_path / "run.json"
    try:
        with Cluster(specs) as cluster:
            cluster.world()
            recorder = threading.Thread(target=record, args=(cluster, path, 4.0))
            recorder.start()
            try:
                time.sleep(0.5)  # (recording)
                began = time.monotonic()
                first = cluster.spawn(kvs, name="kvs", restart="permanent")
                assert cluster.call("kvs", ("store", "a", 1), timeout=10) is True
                cluster.send("kvs", ("crash", "on purpose"))
                second = None
                deadline = time.monotonic() + 3
                while second in (None, first) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    second = cluster.whereis("kvs")
                assert second not in (None, first)
                assert cluster.call("kvs", ("lookup", "a"), timeout=10) is None
                ended(cluster, second, then=lambda: cluster.kill(second))
                took_us = (time.monotonic() - began) * 1e6
            finally:
                recorder.join()
        data = load(path)
        check_format(data)
        bound = data["metadata"]["offsets"]["shifted"]["error_us"] + 1000
        mine = [e for e in data["traceEvents"] if e.get("cat") in ("process", "message")]
        lives = {e["args"]["id"]: e for e in mine if e["ph"] == "X"}
        assert set(lives) == {first, second}
        for e in mine:  # all within the run (a node's own clock would put them 5000 s out)
            assert -bound <= e["ts"] and e["ts"] + e.get("dur", 0) <= data["metadata"]["duration_us"] + bound
        assert lives[first]["ts"] + lives[first]["dur"] <= lives[second]["ts"] + bound
        assert lives[second]["dur"] <= took_us
        restarts = [e for e in mine if e["name"] == f"restarted (was {first})"]
        assert len(restarts) == 1 and restarts[0]["tid"] == lives[second]["tid"]
        assert sum(1 for e in mine if e["ph"] == "i" and e["name"].startswith("message")) >= 3
    finally:
        with Cluster(specs) as closer:
            closer.down()


def test_cli_trace_and_analyze(env, tmp_path):
    env.hosts_file("local name=n1 slots=2\n")
    path = tmp_path / "cli.json"
    try:
        primes = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "examples", "primes.py")
        done = env.cli("--trace", str(path), "pmap", primes, "--limit", "40", "--no-summary")
        assert done.returncode == 0, done.stderr
        assert done.stderr == (f"trace written to {path}: read it with `clusterctl trace {path}`, "
                               "or open it in ui.perfetto.dev\n")
        shown = env.cli("trace", "--analyze", str(path))
        assert shown.returncode == 0, shown.stderr
        for word in ("busy over time", "n1", "pmap task", "load imbalance"):
            assert word in shown.stdout
        guessed = env.cli("trace", str(path))  # (the natural guess: the file alone)
        assert guessed.returncode == 0 and guessed.stdout == shown.stdout, guessed.stderr
        two = env.cli("trace", str(path), "--analyze", str(path))
        assert two.returncode == 2 and "give one trace to analyze" in two.stderr
        as_json = json.loads(env.cli("--json", "trace", "--analyze", str(path)).stdout)
        assert as_json["runs"][0]["items"] == 40
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        refused = env.cli("trace", "--analyze", str(bad))
        assert refused.returncode == 2 and "not a clusterctl trace" in refused.stderr
        nowhere = env.cli("--trace", str(tmp_path / "no" / "such" / "dir.json"), "world")
        assert nowhere.returncode == 2 and "cannot write the trace to" in nowhere.stderr
    finally:
        env.cli("down")


def chatter(partner, n):
    """Send ``n`` messages to ``partner``, then end."""
    from clusterctl.actor import send

    for i in range(n):
        send(partner, ("hello", i))


def listener():
    """Take messages for ever (a process to send to)."""
    from clusterctl.actor import receive

    while True:
        receive()


def test_trace_record_shows_the_processes_lives_and_messages(env, tmp_path):
    """`trace record` over a running world: each spawned process a thread of its node with
    its life and its messages; the analysis counts each process's messages in and out,
    and says how the ones that ended did; `trace` alone or `record` without its options
    is a usage error."""
    specs = [HostSpec(name="n1", target="local", slots=1), HostSpec(name="n2", target="local", slots=1)]
    path = tmp_path / "record.json"
    cluster = Cluster(specs)
    try:
        ear = cluster.spawn(listener, node="n2", name="ear")
        done = []

        def talk() -> None:
            time.sleep(0.3)
            done.append(cluster.spawn(chatter, ear, 25, node="n1"))
            cluster.send("ear", "from the program")

        import threading

        talker = threading.Thread(target=talk)
        talker.start()
        from clusterctl.api.trace import record

        with Cluster(specs) as recorder:
            record(recorder, path, 1.2)
        talker.join()
        data = json.loads(path.read_text())
        check_format(data)
        threads = {e["args"]["name"] for e in data["traceEvents"]
                   if e.get("name") == "thread_name" and e["args"]["name"].startswith("process")}
        assert f"process {ear} (ear)" in threads and f"process {done[0]}" in threads
        found = {p["id"]: p for p in analyze(load(path)).processes}
        assert found[ear]["messages_in"] == 26 and found[ear]["node"] == "n2"
        assert found[done[0]]["messages_out"] == 25 and found[done[0]]["exit"] == "normal"
        assert found[done[0]]["function"].endswith("chatter")
        shown = env.cli("trace", "--analyze", str(path))
        assert shown.returncode == 0 and "spawned processes" in shown.stdout, shown.stderr
        for wrong in (["trace"], ["trace", "record", "--for", "1"], ["trace", "--for", "1"]):
            refused = env.cli(*wrong)
            assert refused.returncode == 2 and "error:" in refused.stderr, wrong
    finally:
        cluster.down()
        cluster.close()
