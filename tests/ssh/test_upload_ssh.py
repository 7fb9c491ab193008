"""A long send over an SSH channel (it goes out a window at a time) arrives whole, and a
host frozen mid-send is lost within the heartbeat timeout (the same through a local
relay is in tests/local/test_upload.py)."""

from __future__ import annotations

import os
import threading
import time
import zlib

import pytest

from clusterctl import Cluster, errors
from sshbed import assert_no_clusterctl_left


# -- the same over an SSH channel (the send goes out a window at a time) -----------------

@pytest.fixture
def ssh_cluster(ssh_bed, tmp_path):
    """A Cluster of bed host h1 with a short heartbeat, brought down after: for a long send over SSH."""
    hosts = tmp_path / "hosts"
    hosts.write_text("h1\n")
    ssh = {"config_file": str(ssh_bed.ssh_config), "known_hosts": str(ssh_bed.known_hosts)}
    options = dict(ssh_options=ssh, connect_timeout=20)
    cluster = Cluster(hosts, heartbeat_interval=0.3, heartbeat_timeout=1.5, **options)
    try:
        yield cluster
    finally:
        ssh_bed.start_host("h1")
        cluster.close()
        with Cluster(hosts, **options) as closer:
            closer.down()
        assert_no_clusterctl_left(ssh_bed)


@pytest.mark.ssh
@pytest.mark.slow
def test_over_ssh_a_large_upload_arrives_whole_and_a_frozen_host_is_lost_mid_send(ssh_cluster, ssh_bed):
    blob = os.urandom(24 << 20)
    assert ssh_cluster.rpc("h1", "zlib.crc32", blob) == zlib.crc32(blob)
    conn = ssh_cluster.connect("h1")
    assert conn.lost is None
    outcome = {}

    def upload():
        try:
            outcome["result"] = ssh_cluster.rpc("h1", "zlib.crc32", blob * 2)
        except errors.ClusterError as exc:
            outcome["error"] = exc

    ssh_bed.stop_host("h1")  # its window and the buffers on the way fill, then nothing moves
    t0 = time.monotonic()
    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    thread.join(15)
    took = time.monotonic() - t0
    assert not thread.is_alive(), "the send to a frozen host never ended"
    assert isinstance(outcome.get("error"), errors.NodeLost), outcome
    assert 1.0 < took < 1.5 + 3.0
    assert "no heartbeat" in str(conn.lost)
