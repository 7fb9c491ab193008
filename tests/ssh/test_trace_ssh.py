"""A trace across real OpenSSH hosts (tests/support/sshbed.py): every host's tasks on
one timeline, each host's offset measured, the analysis reading them back."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

from clusterctl.api.trace.analysis import analyze, load
from sshbed import available_reason
from trace_checks import check_format

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(150)]

_reason = available_reason()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=f"SSH test bed unavailable: {_reason}"))

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def nap(seconds):
    time.sleep(seconds)
    return seconds


def test_a_trace_across_three_hosts(ssh_clusters, tmp_path):
    c = ssh_clusters.cluster("h1 slots=2\nh2 slots=2\nh3 slots=2\n")
    assert all(i.ok for i in c.world())
    path = tmp_path / "run.json"
    with c.trace(path):
        assert list(c.pmap(nap, [0.02] * 60, chunksize=1)) == [0.02] * 60
        assert list(c.pipeline([abs, (nap, {"nodes": ["h2"]})], [0.01] * 20)) == [0.01] * 20
    data = load(path)
    check_format(data)
    found = analyze(data)
    nodes = {n.name: n for n in found.nodes}
    assert set(nodes) == {"h1", "h2", "h3"}
    for node in nodes.values():
        assert node.tasks > 0 and node.rtt_us is not None
        assert abs(node.offset_us) <= node.offset_error_us + 1000  # one clock: offset ~ 0
    runs = {r.label: r for r in found.runs}
    # An item's own time, not its wait in a queue (that would be about 100 ms here): the
    # median sits near the 20 ms sleep; the mean may carry a slow item of a loaded machine.
    assert 20_000 <= runs["pmap nap"].median_item_us <= 24_000
    assert 20_000 <= runs["pmap nap"].per_item_us <= 30_000
    assert runs["pmap nap"].items == 60
    pinned = [e for e in data["traceEvents"] if e.get("cat") == "task" and e["ph"] == "X"
              and e["args"]["run"] == "stage 2 (nap)"]
    pids = {e["pid"] for e in pinned}
    names = {e["pid"]: e["args"]["name"] for e in data["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert {names[p].split(" ")[0] for p in pids} == {"h2"}
