"""Fixtures of the tests over local nodes: ``make_local_cluster`` builds Clusters of local
nodes n1, n2, ... in the test; ``local_hosts_env`` writes ./hosts of two local nodes for the
``clusterctl`` commands a test runs (``env.cli``). Both bring every node down after the test."""

from __future__ import annotations

import os
import signal

import pytest

from clusterctl import Cluster
from clusterctl.config.hosts import HostSpec


TWO_NODES = "local name=n1 slots=2\nlocal name=n2 slots=2\n"


@pytest.fixture
def local_hosts_env(env):
    """The test's ``env`` with ./hosts naming local nodes n1, n2: for a test of ``clusterctl`` commands."""
    # the nodes the commands started are stopped after the test (``clusterctl down``)
    env.hosts_file(TWO_NODES)
    yield env
    env.cli("down")


@pytest.fixture
def make_local_cluster(env):
    """A maker of Clusters of local nodes n1, n2, ... (slots, options): for a test that needs its own."""
    # every node is brought down after the test (a stopped one is continued first)
    made: list[tuple[Cluster, list[HostSpec]]] = []

    def make(slots=(2, 2), **options) -> Cluster:
        specs = [HostSpec(name=f"n{i + 1}", target="local", slots=s) for i, s in enumerate(slots)]
        cluster = Cluster(specs, **options)
        made.append((cluster, specs))
        return cluster

    yield make
    for cluster, specs in made:
        cluster.close()
        for name in [s.name for s in specs]:  # a stopped node must run again to be stopped
            try:
                os.kill(env.node_pid(name), signal.SIGCONT)
            except (OSError, ValueError):
                pass
        with Cluster(specs) as closer:
            closer.down()
