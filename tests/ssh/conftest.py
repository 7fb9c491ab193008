"""The SSH test bed's fixtures: ``ssh_bed``, the run's one bed (tests/support/sharedbed.py),
and ``ssh_clusters``, clusters over its hosts brought down after the test, with a check
that no clusterctl process is left on any host. Both put back what a test changed on the
hosts. A module that builds beds of its own sets ``OWN_BEDS = True``: the shared one is
stopped before it (a netns bed is one a process; test processes side by side each have
theirs, in a lane of the address plan of its own).
"""

from __future__ import annotations

import pytest

from sharedbed import World, heal_hosts, release_shared_bed, reset_hosts, shared_bed
from sshbed import assert_no_clusterctl_left


@pytest.fixture(autouse=True, scope="module")
def _one_bed_at_a_time(request):
    """Stops the shared bed before a module that builds beds of its own (``OWN_BEDS``)."""
    if getattr(request.module, "OWN_BEDS", False):
        release_shared_bed()


@pytest.fixture
def ssh_bed(env):
    """The run's shared SSH test bed (hosts h1..h4), put back after: for a test that works its hosts."""
    # the test gets its own XDG directories (``env``), so its own hub and cookie: test
    # processes side by side, each with a bed of its own, share nothing
    test_bed = shared_bed()
    yield test_bed
    reset_hosts(test_bed)
    stop_hub(env)


def stop_hub(env) -> None:
    """The hub a test's clusters started (``ssh_clusters`` stops its own; a test with
    ``ssh_bed`` alone may have started one too)."""
    from clusterctl.config.cookie import load_or_create_cookie
    from clusterctl.hub import place
    from clusterctl.hub.client import HubClient
    from clusterctl.transport.base import NodeSettings
    from clusterctl.transport.bundle import agent_bundle

    if place.read_pid(place.hub_dir(str(env.run_dir))) is not None:
        HubClient(NodeSettings(cookie=load_or_create_cookie(), bundle=agent_bundle())).stop(10.0)


@pytest.fixture
def ssh_clusters(ssh_bed, tmp_path):
    """Makes Clusters, commands and programs over the bed's hosts (all down after): for an SSH test."""
    w = World(ssh_bed, tmp_path)
    yield w
    heal_hosts(ssh_bed)
    w.down_everything()
    assert_no_clusterctl_left(ssh_bed)
