"""Fixtures of the tests over local nodes."""

from __future__ import annotations

import os
import signal

import pytest

from clusterctl import Cluster
from clusterctl.config.hosts import HostSpec


TWO_NODES = "local name=n1 slots=2\nlocal name=n2 slots=2\n"


@pytest.fixture
def world(env):
    """A two-node hosts file (n1, n2) in the test's directory, for the commands the
    tests run; the nodes are stopped afterwards."""
    env.hosts_file(TWO_NODES)
    yield env
    env.cli("down")


@pytest.fixture
def make_cluster(env):
    """Build Clusters over local nodes n1, n2, ...; every node is brought down after the test."""
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
