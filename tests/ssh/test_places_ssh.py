"""Places on disk over the SSH test bed: ``python=`` never reaches the remote shell as
shell syntax, and a damaged remote code cache is shipped again (the local checks are in
tests/local/test_places.py)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from clusterctl import Cluster
from clusterctl.transport.bundle import agent_bundle
from clusterctl.config.hosts import HostSpec
from sshbed import assert_no_clusterctl_left


# -- python= over SSH -------------------------------------------------------------------

@pytest.mark.ssh
@pytest.mark.timeout(120)
def test_python_option_is_not_run_by_the_remote_shell(ssh_bed, tmp_path):
    marker = tmp_path / "injected"
    # were it run by the shell: touch, then the boot stub as usual
    python = f"touch${{IFS}}{marker};python3"
    spec = HostSpec(name="h1", target="h1", host="h1", python=python, source="hosts:1")
    ssh = {"config_file": str(ssh_bed.ssh_config), "known_hosts": str(ssh_bed.known_hosts)}
    with Cluster([spec], ssh_options=ssh, connect_timeout=20) as c:
        info, = c.world()
    assert not marker.exists()  # the shell ran no command of the option's
    assert info.status == "pang"
    assert f"no Python at {python!r}" in info.reason
    assert_no_clusterctl_left(ssh_bed)


@pytest.mark.ssh
@pytest.mark.timeout(120)
def test_python_option_with_a_home_relative_path_still_works(ssh_bed, tmp_path):
    # "~/" is the one shell form kept: the remote shell's home, here the host's own
    home = ssh_bed.host("h1").env_dir / "home"
    link = Path(tempfile.mkdtemp(prefix=".ccpy", dir=home))
    try:
        (link / "py").symlink_to(ssh_bed.bare_python / "bin" / "python3")
        spec = HostSpec(name="h1", target="h1", host="h1", python=f"~/{link.name}/py", source="hosts:1")
        ssh = {"config_file": str(ssh_bed.ssh_config), "known_hosts": str(ssh_bed.known_hosts)}
        with Cluster([spec], ssh_options=ssh, connect_timeout=20) as c:
            info, = c.world()
            assert info.status == "pong", info.reason
            c.down()
    finally:
        shutil.rmtree(link, ignore_errors=True)
    assert_no_clusterctl_left(ssh_bed)


@pytest.mark.ssh
@pytest.mark.timeout(120)
def test_a_damaged_remote_code_cache_is_shipped_again_and_replaced(ssh_bed):
    ssh = {"config_file": str(ssh_bed.ssh_config), "known_hosts": str(ssh_bed.known_hosts)}
    specs = [HostSpec(name="h1", target="h1", host="h1", source="hosts:1")]
    with Cluster(specs, ssh_options=ssh, connect_timeout=20) as c:
        assert c.world()[0].ok
        c.down()
    code_dir = ssh_bed.host("h1").env_dir / "cache" / "clusterctl" / "code" / agent_bundle().code_id
    (code_dir / "clusterctl_node" / "worker.py").write_text("raise SystemExit('damaged')\n")
    try:
        with Cluster(specs, ssh_options=ssh, connect_timeout=20, hub=False) as c:  # its own pool
            info, = c.world()
            assert info.status == "pong", info.reason
            assert c.ssh.shipped == 1
            assert c.rpc("h1", "operator.add", 1, 2) == 3
            c.down()
    finally:
        assert_no_clusterctl_left(ssh_bed)
