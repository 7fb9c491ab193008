"""The SSH test bed's fixtures: ``bed``, the run's one bed (tests/support/sharedbed.py),
and ``world``, clusters over its hosts brought down after the test, with a check that
no clusterctl process is left on any host. Both put back what a test changed on the
hosts. A module that builds beds of its own sets ``OWN_BEDS = True``: the shared one is
stopped before it (a netns bed is one per machine).
"""

from __future__ import annotations

import pytest

from sharedbed import World, heal_hosts, release_shared_bed, reset_hosts, shared_bed
from sshbed import assert_no_clusterctl_left


@pytest.fixture(autouse=True, scope="module")
def _one_bed_at_a_time(request):
    if getattr(request.module, "OWN_BEDS", False):
        release_shared_bed()


@pytest.fixture
def bed():
    test_bed = shared_bed()
    yield test_bed
    reset_hosts(test_bed)


@pytest.fixture
def world(bed, tmp_path):
    w = World(bed, tmp_path)
    yield w
    heal_hosts(bed)
    w.down_everything()
    assert_no_clusterctl_left(bed)
