"""The environment that travels: on the bed's hosts, whose ``python3`` has the standard
library only, a function that needs numpy or the user's own package runs under rpc,
pmap and spawn with no step on the hosts; a second run ships nothing; an edited local
package is used at once. (Shipping is content-addressed: api/env, node/workers/envs.py.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(240)]

TWO_HOSTS = "h1 slots=2\nh2 slots=2\n"
HOST_ENV_CACHE = '"${XDG_CACHE_HOME:-$HOME/.cache}/clusterctl/env"'  # (in a host's shell)


def empty_host_caches(ssh_bed) -> None:
    """No host holds a shipped package (an earlier test's are gone)."""
    for alias in ("h1", "h2"):
        assert ssh_bed.ssh(alias, f"rm -rf {HOST_ENV_CACHE}").returncode == 0


def write_package(root, version: int) -> None:
    """``mylib``: a package of the user's, next to the program, that imports numpy and a
    module of its own."""
    package = root / "mylib"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(f"""\
        import numpy
        from .more import twice

        VERSION = {version}

        def square(x):
            return int(numpy.square(x))

        def version():
            return VERSION
        """))
    (package / "more.py").write_text("def twice(x):\n    return 2 * x\n")


@pytest.fixture
def mylib(tmp_path, monkeypatch):
    """The user's package ``mylib`` importable here (as from the program's directory),
    forgotten after the test."""
    root = tmp_path / "project"
    root.mkdir()
    write_package(root, 1)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m == "mylib" or m.startswith("mylib.")]:
        del sys.modules[name]


def test_a_lambda_using_numpy_runs_on_a_bare_host_and_the_second_run_ships_nothing(
        ssh_clusters, ssh_bed):
    empty_host_caches(ssh_bed)
    with ssh_clusters.cluster(TWO_HOSTS) as c:
        result = c.rpc("h1", lambda n: np.arange(n) * 2, 4)
        first = c.shipper.sent
    assert result.tolist() == [0, 2, 4, 6]
    assert first > 1 << 20  # numpy went, zipped
    with ssh_clusters.cluster(TWO_HOSTS) as c:
        assert c.rpc("h1", lambda a: float(np.asarray(a).sum()), np.ones(3)) == 3.0
        assert c.shipper.sent == 0


def test_an_import_inside_the_function_body_is_shipped_too(ssh_clusters):
    def norm(values):
        import numpy

        return float(numpy.linalg.norm(values))

    with ssh_clusters.cluster(TWO_HOSTS) as c:
        assert list(c.pmap(norm, [[3, 4], [6, 8]])) == [5.0, 10.0]


def test_the_users_own_package_travels_and_an_edit_is_used_at_once(ssh_clusters, mylib):
    from mylib import square

    def bytecode_flags(module):  # (PEP 552: 3 is a checked hash-based cache file, 0 Python's own)
        import importlib

        with open(importlib.import_module(module).__cached__, "rb") as fh:
            return int.from_bytes(fh.read(8)[4:8], "little")

    with ssh_clusters.cluster(TWO_HOSTS) as c:
        assert list(c.pmap(square, range(6))) == [x * x for x in range(6)]
        assert c.rpc("h2", "mylib.version") == 1
        assert c.rpc("h2", bytecode_flags, "mylib.more") == 3  # (this Python's bytecode went along)
    write_package(mylib, 2)
    with ssh_clusters.cluster(TWO_HOSTS) as c:  # (the same nodes and workers run on)
        assert c.rpc("h2", "mylib.version") == 2
        assert c.rpc("h2", "mylib.twice", 21) == 42


def write_distribution(root, version: int) -> None:
    """``slowthing`` at ``version``, installed as pip leaves a pure-Python wheel (an
    earlier version's files replaced, as an upgrade does)."""
    for old in root.glob("slowthing*"):
        shutil.rmtree(old)
    (root / "slowthing").mkdir()
    (root / "slowthing" / "__init__.py").write_text(f"def version():\n    return {version}\n"
                                                    + "# a longer file\n" * version)
    info = root / f"slowthing-{version}.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: slowthing\nVersion: {version}.0\n")
    (info / "RECORD").write_text(f"slowthing/__init__.py,,\nslowthing-{version}.0.dist-info/METADATA,,\n"
                                 f"slowthing-{version}.0.dist-info/RECORD,,\n")


def test_a_package_upgraded_between_two_runs_is_shipped_again_and_used(ssh_clusters, tmp_path,
                                                                       monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    write_distribution(site, 1)
    monkeypatch.syspath_prepend(str(site))
    try:
        import slowthing

        with ssh_clusters.cluster(TWO_HOSTS) as c:
            assert c.rpc("h1", lambda: slowthing.version()) == 1
            assert c.shipper.sent > 0
        write_distribution(site, 2)  # (pip install --upgrade slowthing, between two commands)
        del sys.modules["slowthing"]
        import slowthing  # noqa: F811 - the upgraded one, as the next command imports it

        with ssh_clusters.cluster(TWO_HOSTS) as c:  # (h1's node and worker run on)
            assert c.rpc("h1", lambda: slowthing.version()) == 2
            assert c.shipper.sent > 0
            held = c.shipper.held(c.connect("h1"))
        assert sorted(p["version"] for p in held if p["name"] == "slowthing") == ["1.0", "2.0"]
    finally:
        sys.modules.pop("slowthing", None)


def test_a_spawned_process_uses_a_shipped_package(ssh_clusters, mylib):
    from mylib import square

    def serve():
        from clusterctl.actor import receive, reply

        while True:
            reply(square(receive()))

    with ssh_clusters.cluster(TWO_HOSTS) as c:
        pid = c.spawn(serve, node="h1")
        assert c.call(pid, 12) == 144
        c.kill(pid)


def test_with_shipping_off_the_host_answers_its_import_error(ssh_clusters, monkeypatch):
    from clusterctl import errors

    monkeypatch.setenv("CLUSTERCTL_ENV", "off")
    with ssh_clusters.cluster(TWO_HOSTS) as c:
        with pytest.raises(errors.RemoteError, match="numpy"):
            c.rpc("h1", lambda: np.zeros(1))
        assert c.shipper.sent == 0


def test_a_pipelines_stages_take_what_they_need(ssh_clusters, mylib):
    from mylib import square, twice

    with ssh_clusters.cluster(TWO_HOSTS) as c:
        assert list(c.pipeline([square, (lambda x: np.int64(twice(x)).item(), {"replicas": 2})],
                               range(5))) == [2 * x * x for x in range(5)]


def write_compiled_distribution(root, glibc: str) -> None:
    """``fastthing`` 1.0, installed as from a wheel built for glibc ``glibc`` (a newer
    one than any host here has): a pure module and an extension module beside it (not
    a real one: it must never be loaded)."""
    package = root / "fastthing"
    package.mkdir()
    (package / "__init__.py").write_text("def speed():\n    return 1\n")
    (package / "_speed.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF not really")
    info = root / "fastthing-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fastthing\nVersion: 1.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nRoot-Is-Purelib: false\n"
                                f"Tag: cp311-cp311-manylinux_{glibc}_x86_64\n")
    record = ["fastthing/__init__.py,,", "fastthing/_speed.cpython-311-x86_64-linux-gnu.so,,",
              "fastthing-1.0.dist-info/METADATA,,", "fastthing-1.0.dist-info/WHEEL,,",
              "fastthing-1.0.dist-info/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_a_compiled_package_a_host_cannot_load_is_refused_before_anything_runs(
        ssh_clusters, ssh_bed, tmp_path, monkeypatch):
    from clusterctl import errors

    write_compiled_distribution(tmp_path, "2_99")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fastthing

    try:
        with ssh_clusters.cluster(TWO_HOSTS) as c:
            with pytest.raises(errors.Refused) as refused:
                c.rpc("h1", lambda: fastthing.speed())
            assert c.shipper.sent == 0
        message = refused.value.one_line()
        assert message.startswith("h1: fastthing 1.0 is built for manylinux_2_99_x86_64; h1 has "
                                  "glibc 2."), message
        assert "install fastthing on h1, or leave h1 out with --nodes" in message
        shipped = ssh_bed.ssh("h1", f"find {HOST_ENV_CACHE} -name '_speed*' 2>/dev/null; true")
        assert shipped.returncode == 0 and shipped.stdout.strip() == ""
    finally:
        sys.modules.pop("fastthing", None)


def test_a_module_named_only_at_run_time_is_asked_for_while_the_task_waits(ssh_clusters,
                                                                            ssh_bed, mylib):
    def square_by_computed_name(x):  # (no reading of the code finds mylib)
        import importlib

        return importlib.import_module("".join(["my", "lib"])).square(x)

    empty_host_caches(ssh_bed)
    with ssh_clusters.cluster(TWO_HOSTS) as c:
        assert c.shipper.packages(square_by_computed_name) == []  # (found by asking alone)
        assert c.rpc("h1", square_by_computed_name, 7) == 49
        asked = c.shipper.sent
        assert asked > 1 << 20  # mylib and the numpy it imports went to h1
        assert c.rpc("h1", square_by_computed_name, 8) == 64
        assert c.shipper.sent == asked  # (h1 has them: nothing goes twice)
        assert list(c.pmap(square_by_computed_name, range(40))) == [x * x for x in range(40)]
        assert c.rpc("h2", square_by_computed_name, 3) == 9


def test_pmap_items_that_need_a_package_get_it_while_the_task_waits(ssh_clusters, ssh_bed):
    empty_host_caches(ssh_bed)
    items = [np.ones(n) for n in range(1, 9)]  # (``len`` needs nothing: the items need numpy)
    with ssh_clusters.cluster(TWO_HOSTS) as c:
        assert list(c.pmap(len, items)) == list(range(1, 9))
        assert c.shipper.sent > 1 << 20


def test_a_module_asked_for_that_nobody_has_is_the_usual_import_error(ssh_clusters):
    from clusterctl import errors

    def imports(name):
        import importlib

        return importlib.import_module(name)

    with ssh_clusters.cluster(TWO_HOSTS) as c:
        with pytest.raises(errors.RemoteError) as raised:
            c.rpc("h1", imports, "no_module_of_that_name")
        assert raised.value.remote_type == "ModuleNotFoundError"
        assert "No module named 'no_module_of_that_name'" in str(raised.value)
        assert c.shipper.sent == 0
        assert c.rpc("h1", imports, "json").__name__ == "json"  # (the worker goes on)


def test_a_compiled_package_asked_for_where_it_cannot_load_is_an_import_error_naming_why(
        ssh_clusters, tmp_path, monkeypatch):
    from clusterctl import errors

    write_compiled_distribution(tmp_path, "2_99")
    monkeypatch.syspath_prepend(str(tmp_path))

    def speed():
        import importlib

        return importlib.import_module("fast" + "thing").speed()

    with ssh_clusters.cluster(TWO_HOSTS) as c:
        with pytest.raises(errors.RemoteError) as raised:
            c.rpc("h1", speed)
        assert raised.value.remote_type == "ImportError"
        assert "fastthing 1.0 is built for manylinux_2_99_x86_64; h1 has glibc 2." in str(raised.value)
        assert c.shipper.sent == 0


def host_env_listing(ssh_bed, alias: str) -> list[str]:
    """What a host's cache of shipped packages holds, one entry a line (hidden ones too)."""
    listed = ssh_bed.ssh(alias, f"ls -A {HOST_ENV_CACHE} 2>/dev/null; true")
    assert listed.returncode == 0
    return sorted(listed.stdout.split())


def test_two_nodes_of_one_host_shipping_the_same_packages_at_once_store_one_copy(
        ssh_clusters, ssh_bed, mylib):
    from mylib import square

    empty_host_caches(ssh_bed)
    hosts = "h1 name=a slots=1\nh1 name=b slots=1\n"  # two nodes, one host, one cache
    with ssh_clusters.cluster(hosts) as first, ssh_clusters.cluster(hosts) as second:
        first.world()
        second.world()
        ids = sorted(p.code_id for p in first.shipper.packages(square))
        start = threading.Barrier(2)
        results = {}

        def run(cluster, node, x):
            start.wait(10)
            results[node] = cluster.rpc(node, square, x)

        threads = [threading.Thread(target=run, args=(first, "a", 3)),
                   threading.Thread(target=run, args=(second, "b", 4))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == {"a": 9, "b": 16}
        assert first.shipper.sent > 0 or second.shipper.sent > 0  # (mostly both: at once)
    held = host_env_listing(ssh_bed, "h1")
    assert [e for e in held if not e.endswith(".json") and not e.startswith(".lock")] == ids, held


def test_a_node_killed_mid_shipping_never_uses_a_half_written_package(ssh_clusters, ssh_bed):
    from clusterctl import errors

    empty_host_caches(ssh_bed)
    killed = []

    def kill():
        time.sleep(0.2)  # (numpy, 22 MB zipped, is on its way)
        killed.extend(ssh_bed.kill_host("h1"))

    killer = threading.Thread(target=kill, daemon=True)
    try:
        with ssh_clusters.cluster(TWO_HOSTS) as c:
            c.world()
            c.shipper.report = lambda node, package, size: killer.start()
            with pytest.raises(errors.ClusterError):
                c.rpc("h1", lambda n: np.arange(n).tolist(), 3)
            killer.join(30)
        assert killed
    finally:
        killer.join(30)
        ssh_bed.restart_sshd("h1")
    with ssh_clusters.cluster(TWO_HOSTS) as c:  # a new node, the same cache
        assert c.rpc("h1", lambda n: np.arange(n).tolist(), 3) == [0, 1, 2]
        assert c.shipper.sent > 1 << 20  # what was cut off went again, whole


def test_a_full_disk_on_a_host_is_one_line_naming_the_host_and_the_room_needed(
        ssh_clusters, ssh_bed):
    from clusterctl import errors

    empty_host_caches(ssh_bed)
    cache = ssh_bed.host("h1").env_dir / "cache" / "clusterctl" / "env"
    cache.mkdir(parents=True, exist_ok=True)
    # a 2 MB file system over h1's cache, mounted where h1's processes see it (a host of
    # the bed has a mount namespace of its own)
    in_h1 = ["nsenter", "--mount", "--target", str(ssh_bed.host_pids("h1")[0])]
    mounted = subprocess.run([*in_h1, "mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                              str(cache)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"no small file system to fill on h1: {mounted.stderr.strip()}")
    try:
        with ssh_clusters.cluster(TWO_HOSTS) as c:
            with pytest.raises(errors.ClusterError) as raised:
                c.rpc("h1", lambda n: np.arange(n).tolist(), 3)
            assert c.rpc("h1", "os.getpid") > 0  # (the node goes on)
        line = raised.value.one_line()
        assert "\n" not in line
        assert line.startswith("h1: no room on this host for numpy "), line
        assert f"its cache {cache.parent} needs about " in line and "MB more" in line, line
    finally:
        subprocess.run([*in_h1, "umount", str(cache)], capture_output=True)


NUMPY_SCRIPT = """\
import numpy as np


def inputs():
    return range(6)


def task(n):
    return float(np.arange(n).sum())
"""


def test_a_pmap_script_that_imports_numpy_says_what_it_ships_once(ssh_clusters, ssh_bed, tmp_path):
    empty_host_caches(ssh_bed)
    script = tmp_path / "sums.py"
    script.write_text(NUMPY_SCRIPT)
    off = ssh_clusters.cli(TWO_HOSTS, "--env", "off", "pmap", str(script), cwd=tmp_path)
    assert off.returncode != 0 and "No module named 'numpy'" in off.stderr, off.stderr
    assert "shipping" not in off.stderr
    first = ssh_clusters.cli(TWO_HOSTS, "pmap", str(script), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [str(float(sum(range(n)))) for n in range(6)]
    shipped = [line for line in first.stderr.splitlines() if line.startswith("shipping numpy")]
    assert sorted(line.split()[4] for line in shipped) == ["h1:", "h2:"], first.stderr
    second = ssh_clusters.cli(TWO_HOSTS, "pmap", str(script), cwd=tmp_path)
    assert second.returncode == 0 and "shipping" not in second.stderr, second.stderr


def test_an_environment_over_the_limit_is_refused_naming_its_largest_parts(ssh_clusters,
                                                                            monkeypatch):
    from clusterctl import errors

    monkeypatch.setenv("CLUSTERCTL_ENV_LIMIT", "5")
    with ssh_clusters.cluster(TWO_HOSTS) as c:
        with pytest.raises(errors.UsageError, match=r"over the limit of 5\.0 MB: numpy 2") as over:
            c.rpc("h1", lambda: np.zeros(1))
        assert "CLUSTERCTL_ENV_LIMIT" in over.value.one_line() and c.shipper.sent == 0


def test_env_lists_what_hosts_hold_and_removes_what_was_unused(ssh_clusters, ssh_bed, tmp_path):
    import json

    empty_host_caches(ssh_bed)
    with ssh_clusters.cluster(TWO_HOSTS) as c:
        c.rpc("h1", lambda: float(np.ones(2).sum()))
    listed = ssh_clusters.cli(TWO_HOSTS, "--json", "env", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    held = json.loads(listed.stdout)
    assert [p["name"] for p in held["h1"]] == ["numpy"] and held["h2"] == []
    assert held["h1"][0]["version"] == np.__version__ and held["h1"][0]["size"] > 1 << 20
    assert held["h1"][0]["used"] is not None
    shown = ssh_clusters.cli(TWO_HOSTS, "env", cwd=tmp_path)
    assert "numpy" in shown.stdout and "just now" in shown.stdout, shown.stdout
    kept = ssh_clusters.cli(TWO_HOSTS, "--json", "env", "--remove-unused", "1", cwd=tmp_path)
    assert json.loads(kept.stdout) == {"h1": [], "h2": []}  # (used a moment ago)
    removed = ssh_clusters.cli(TWO_HOSTS, "--json", "env", "--remove-unused", "0", cwd=tmp_path)
    assert [p["name"] for p in json.loads(removed.stdout)["h1"]] == ["numpy"]
    after = json.loads(ssh_clusters.cli(TWO_HOSTS, "--json", "env", cwd=tmp_path).stdout)
    assert after == {"h1": [], "h2": []}
    with ssh_clusters.cluster(TWO_HOSTS) as c:  # (what a call needs is shipped again)
        assert c.rpc("h1", lambda: float(np.ones(3).sum())) == 3.0
        assert c.shipper.sent > 1 << 20
