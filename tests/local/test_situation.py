"""Where tasks run: on a local node in the program's directory, on other hosts in the
node's (home) directory unless ``cwd`` says otherwise, with ``setenv``'s variables on
every node; two programs on one node each get their own, and the node's own comes back
for a third. (This module imports nothing of clusterctl at its top: a bare host imports
it for its functions.)"""

from __future__ import annotations

import os
import threading

import pytest

from helpers import script


def where_am_i(_=None):
    import os

    return os.getcwd(), os.environ.get("CC_TEST_VAR")


def reads_data(_=None):
    with open("data/a.txt") as fh:
        return fh.read()


@pytest.mark.local_only
def test_a_local_task_runs_in_the_programs_directory_and_reads_files_next_to_it(local_cluster, env):
    (env.cwd / "data").mkdir()
    (env.cwd / "data" / "a.txt").write_text("next to the script")
    assert list(local_cluster.pmap(reads_data, range(6))) == ["next to the script"] * 6
    assert local_cluster.rpc("n2", where_am_i) == (str(env.cwd), None)


def test_cwd_and_setenv_reach_every_node(cluster, tmp_path):
    from clusterctl.api.situation import Situation

    cluster.situation = Situation("/tmp", {"CC_TEST_VAR": "forty two"})
    assert set(cluster.pmap(where_am_i, range(8))) == {("/tmp", "forty two")}
    assert cluster.multicall(where_am_i).succeeded == {n: ("/tmp", "forty two") for n in ("n1", "n2")}


def test_a_directory_that_is_not_there_is_said_in_one_line(cluster):
    from clusterctl import errors
    from clusterctl.api.situation import Situation

    cluster.situation = Situation("/no/such/directory", None)
    with pytest.raises(errors.ClusterError, match="/no/such/directory"):
        cluster.rpc("n1", where_am_i)


@pytest.mark.local_only
def test_two_programs_on_one_node_each_get_their_own_and_a_third_the_nodes(make_local_cluster, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    clusters = [make_local_cluster(cwd=first, setenv={"CC_TEST_VAR": "1"}),
                make_local_cluster(cwd=second, setenv={"CC_TEST_VAR": "2"})]
    seen: dict[int, set] = {}

    def run(i: int) -> None:
        seen[i] = set()
        for _ in range(3):
            seen[i] |= set(clusters[i].pmap(where_am_i, range(40), chunksize=1))

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == {0: {(str(first), "1")}, 1: {(str(second), "2")}}
    plain = make_local_cluster(cwd="/")  # (the node's environment again: no variable)
    assert set(plain.pmap(where_am_i, range(20), chunksize=1)) == {("/", None)}


def test_the_command_line_sets_the_directory_and_variables(local_hosts_env):
    env = local_hosts_env
    path = script(env, """
        import os

        def inputs():
            return range(4)

        def task(x):
            return [os.getcwd(), os.environ.get("CC_A"), os.environ.get("CC_B")]
    """)
    result = env.cli("--setenv", "CC_A=one", "pmap", path, "--setenv", "CC_B", "--cwd", "/tmp",
                     "--no-summary", env={"CC_B": "from here"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['["/tmp", "one", "from here"]'] * 4
    missing = env.cli("pmap", path, "--setenv", "CC_NOT_SET_ANYWHERE")
    assert missing.returncode == 2
    assert "--setenv CC_NOT_SET_ANYWHERE: CC_NOT_SET_ANYWHERE is not set here" in missing.stderr
    here = env.cli("pmap", path, "--no-summary")  # (CC_B: the node began with it in its environment)
    assert here.stdout.splitlines()[0].startswith(f'["{os.path.realpath(env.cwd)}", null, ')
