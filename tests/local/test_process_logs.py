"""What a spawned process prints is kept by its node and shown by ``logs`` (the API's
``Cluster.logs`` and ``clusterctl logs [-f]``): its last lines, and, followed, each new
one as it comes, until the process ends."""

from __future__ import annotations

import threading

import pytest

from actor_programs import prints_then_waits, prints_what_it_gets
from helpers import script, wait_for


def test_what_a_process_prints_is_kept_for_logs_also_once_it_ended(cluster):
    pid = cluster.spawn(prints_then_waits, 5, node="n2", name="printer")
    wait_for(lambda: len(list(cluster.logs(pid))) == 6, timeout=10, message="six lines kept")
    lines = list(cluster.logs("printer"))
    assert [(line.stream, line.text) for line in lines] == \
        [("out", f"line {i}") for i in range(5)] + [("err", "a warning")]
    assert [line.text for line in cluster.logs(pid, lines=2)] == ["line 4", "a warning"]
    cluster.send(pid, "end")
    wait_for(lambda: not any(r["id"] == pid for r in cluster.processes()), timeout=10,
             message="the process to end")
    assert [line.text for line in cluster.logs(pid)][-2:] == ["line 4", "a warning"]
    assert [line.text for line in cluster.logs("printer", lines=1)] == ["a warning"]


def test_following_a_process_gives_each_line_as_it_comes_until_it_ends(cluster):
    pid = cluster.spawn(prints_what_it_gets, node="n1")
    followed = cluster.logs(pid, follow=True)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(line.text for line in followed), daemon=True)
    reader.start()
    for msg in ("a", "b"):
        cluster.send(pid, msg)
    wait_for(lambda: got == ["got a", "got b"], timeout=10, message="the lines as they come")
    cluster.send(pid, "stop")
    reader.join(15)
    assert not reader.is_alive() and got == ["got a", "got b", "got stop"]
    assert followed.ended == "normal"


@pytest.mark.local_only  # (the same code on any transport)
def test_logs_of_nobody_is_a_clear_error(cluster):
    from clusterctl import errors

    with pytest.raises(errors.NoProcess, match="none that ended lately had that name"):
        list(cluster.logs("nobody-here"))


def test_the_command_prints_stdout_and_stderr_apart_and_follows_to_the_end(local_hosts_env):
    env = local_hosts_env
    path = script(env, """
        import sys
        import time

        def talk(n):
            for i in range(n):
                print("tick", i, flush=True)
                time.sleep(0.1)
            print("done", file=sys.stderr)
            raise ValueError("talked out")
    """, "talker.py")
    spawned = env.cli("spawn", "--name", "talker", path, "talk", "20")
    assert spawned.returncode == 0, spawned.stderr
    followed = env.cli("logs", "-f", "talker", timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == [f"tick {i}" for i in range(20)]
    assert followed.stderr.splitlines() == ["done", f"{spawned.stdout.strip()} ended: ValueError: "
                                            "talked out"]
    last = env.cli("logs", "-n", "1", "talker")
    assert last.returncode == 0 and last.stdout == "" and last.stderr == "done\n", last.stderr
    nobody = env.cli("logs", "nobody")
    assert nobody.returncode != 0 and "no process is registered as nobody" in nobody.stderr
