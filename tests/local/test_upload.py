"""Long sends over a slow link against a real node: a send that makes progress is life.

The node is reached through a relay that passes about 2 MB a second each way, and the
heartbeat timeout is 1 s, so a 6 MB argument takes about three heartbeat timeouts to
travel. While it travels the node answers nothing (it has not got the request yet), so
only the progress of our own write shows that the node is still there. A node that
stops reading altogether must still be declared lost within about the timeout. The same
over an SSH channel is in tests/ssh/test_upload_ssh.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import zlib

import pytest

from clusterctl import Cluster, errors
from clusterctl.config.hosts import HostSpec
from clusterctl.node.daemon import node as daemon
from clusterctl.transport.local import LocalTransport

from helpers import wait_for
from latency_proxy import ThrottledRelay

RATE = 2 << 20  # bytes a second through the relay, each way
SIZE = 6 << 20
HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT = 0.2, 1.0


class Relayed:
    """A running node n1, and a cluster that reaches it only through a throttled relay."""

    def __init__(self, env) -> None:
        self.spec = HostSpec(name="n1", target="local", slots=1)
        with Cluster([self.spec]) as starter:  # started and reached directly
            self.pid = starter.world()[0].pid
        real = daemon.socket_path(daemon.run_dir(), "n1")
        self.relay = ThrottledRelay(real, str(env.root / "relay.sock"), RATE)
        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(LocalTransport, "socket_path", property(lambda _: self.relay.path))
        self.cluster = Cluster([self.spec], heartbeat_interval=HEARTBEAT_INTERVAL,
                               heartbeat_timeout=HEARTBEAT_TIMEOUT)

    def close(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        try:
            self.cluster.close()
            self.relay.close()
        finally:
            self.patch.undo()
            with Cluster([self.spec]) as closer:
                closer.down()


@pytest.fixture
def relayed(env):
    """Local node n1 running, and a Cluster reaching it only through a throttled relay: for slow-link tests."""
    r = Relayed(env)
    try:
        yield r
    finally:
        r.close()


def test_an_upload_longer_than_the_heartbeat_timeout_completes(relayed, env):
    blob = os.urandom(SIZE)
    conn = relayed.cluster.connect("n1")
    assert relayed.cluster.rpc("n1", "operator.add", 1, 1) == 2  # through the relay
    t0 = time.monotonic()
    assert relayed.cluster.rpc("n1", "zlib.crc32", blob) == zlib.crc32(blob)
    took = time.monotonic() - t0
    assert took > 2 * HEARTBEAT_TIMEOUT  # the link was slow: the send outlasted the timeout
    assert conn.lost is None and relayed.cluster.connect("n1") is conn
    assert relayed.relay.forwarded["up"] > SIZE
    assert "no heartbeat" not in env.node_log("n1")


def test_a_download_longer_than_the_heartbeat_timeout_completes(relayed, env):
    """The mirror case: the node writes a large result slowly while the controller's pings
    reach it, so neither side gives up on the other."""
    conn = relayed.cluster.connect("n1")
    t0 = time.monotonic()
    assert len(relayed.cluster.rpc("n1", "os.urandom", SIZE)) == SIZE
    assert time.monotonic() - t0 > 2 * HEARTBEAT_TIMEOUT
    assert conn.lost is None
    assert relayed.cluster.rpc("n1", "operator.add", 2, 3) == 5
    assert "no heartbeat" not in env.node_log("n1")


def test_a_node_that_stops_reading_during_an_upload_is_lost_within_the_timeout(relayed):
    """Progress is what counts, not a send being under way: a frozen node (the relay and
    then our socket fill up) is lost about a heartbeat timeout after it stopped."""
    cluster = relayed.cluster
    conn = cluster.connect("n1")
    outcome = {}

    def upload():
        try:
            outcome["result"] = cluster.rpc("n1", "zlib.crc32", os.urandom(SIZE))
        except errors.ClusterError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    wait_for(lambda: relayed.relay.forwarded["up"] > 1 << 20, message="the upload to be under way")
    os.kill(relayed.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    wait_for(lambda: conn.lost is not None, timeout=10, message="the node to be lost")
    took = time.monotonic() - t0
    thread.join(5)
    assert 0.5 < took < HEARTBEAT_TIMEOUT + 2.5  # the timeout after the last progress, plus a margin
    assert relayed.relay.forwarded["up"] < SIZE  # it was lost mid-send
    assert "no heartbeat" in str(conn.lost)
    assert isinstance(outcome.get("error"), errors.NodeLost)
