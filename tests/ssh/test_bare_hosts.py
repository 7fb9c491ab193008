"""Bare hosts: the bed's hosts have a ``python3`` with the standard library and nothing
else, as a fresh machine has, and everything the README and ``examples/`` teach works
there: every example runs over SSH, from the shell and as a program, and its output is
checked."""

from __future__ import annotations

import importlib.util
import json
import runpy
import sys
from pathlib import Path

import cloudpickle
import pytest

from helpers import lines

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(180)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TWO_HOSTS = "h1 slots=2\nh2 slots=2\n"

# What a host's python3 says of itself and of what it can import.
PROBE = ("python3 -c 'import importlib.util as u, json, sys; "
         "print(json.dumps([list(sys.version_info[:2]), "
         "{m: u.find_spec(m) is not None for m in sys.argv[1:]}]))' ")
NOT_ON_A_FRESH_HOST = ("clusterctl", "cloudpickle", "paramiko", "numpy", "click", "rich")


def test_every_bed_host_has_a_bare_python3(ssh_bed):
    for alias in ssh_bed.aliases:
        out = ssh_bed.ssh(alias, PROBE + " ".join(NOT_ON_A_FRESH_HOST))
        assert out.returncode == 0, out.stderr
        version, importable = json.loads(out.stdout)
        assert version == list(sys.version_info[:2]), alias
        assert importable == dict.fromkeys(NOT_ON_A_FRESH_HOST, False), alias
    # (and the controller has them, so the probe can tell)
    assert all(importlib.util.find_spec(m) for m in ("clusterctl", "cloudpickle", "paramiko"))


# -- the examples ---------------------------------------------------------------------------

def example(name: str):
    """An example's module namespace, run here: what its functions give locally."""
    return runpy.run_path(str(EXAMPLES / name))


def check_primes(ssh_clusters, cwd):
    out = ssh_clusters.cli(TWO_HOSTS, "pmap", str(EXAMPLES / "primes.py"), "--limit", "10", cwd=cwd)
    assert out.returncode == 0, out.stderr
    primes = example("primes.py")
    assert lines(out.stdout) == [primes["task"](start) for start in list(primes["inputs"]())[:10]]


def check_erf(ssh_clusters, cwd):
    out = ssh_clusters.cli(TWO_HOSTS, "pmap", str(EXAMPLES / "erf.py"), "--limit", "4", cwd=cwd)
    assert out.returncode == 0, out.stderr
    erf = example("erf.py")
    assert lines(out.stdout) == [erf["task"](x) for x in list(erf["inputs"]())[:4]]


def check_wordstats(ssh_clusters, cwd):  # textutil.py, next to the script, travels with it
    out = ssh_clusters.cli(TWO_HOSTS, "pmap", str(EXAMPLES / "wordstats.py"), cwd=cwd,
                    input='"the quick brown fox"\n"jumps over the lazy dog"\n')
    assert out.returncode == 0, out.stderr
    assert lines(out.stdout) == [{"words": 4, "longest": "quick", "vowels": 5},
                                 {"words": 5, "longest": "jumps", "vowels": 6}]


def check_text_pipeline(ssh_clusters, cwd):
    out = ssh_clusters.cli(TWO_HOSTS, "pipeline", str(EXAMPLES / "text_pipeline.py"), "--limit", "8", cwd=cwd)
    assert out.returncode == 0, out.stderr
    text = example("text_pipeline.py")
    expected = text["initial"]
    for item in range(8):
        expected = text["fold"](expected, text["count"](text["normalise"](text["read"](item))))
    assert lines(out.stdout) == [expected]
    assert "8 items in" in out.stderr


def check_matrix_pipeline(ssh_clusters, cwd):
    out = ssh_clusters.cli(TWO_HOSTS, "pipeline", str(EXAMPLES / "matrix_pipeline.py"), "--limit", "6",
                    cwd=cwd)
    assert out.returncode == 0, out.stderr
    matrix = example("matrix_pipeline.py")
    assert lines(out.stdout) == list(matrix["inputs"]())[:6]  # every stage passes its item on
    assert "6 items in" in out.stderr and "through 4 stages" in out.stderr


def check_kvs(ssh_clusters, cwd):
    """From the shell, as the README shows it, then as a program."""
    kvs = str(EXAMPLES / "kvs.py")
    spawned = ssh_clusters.cli(TWO_HOSTS, "spawn", "--name", "kvs", kvs, "serve", cwd=cwd)
    assert spawned.returncode == 0, spawned.stderr
    assert spawned.stdout.strip().startswith(("h1.", "h2."))
    stored = ssh_clusters.cli(TWO_HOSTS, "call", "kvs", "('store', 'a', 1)", cwd=cwd)
    assert (stored.returncode, stored.stdout.strip()) == (0, "True"), stored.stderr
    looked_up = ssh_clusters.cli(TWO_HOSTS, "call", "kvs", "('lookup', 'a')", cwd=cwd)
    assert (looked_up.returncode, looked_up.stdout.strip()) == (0, "1"), looked_up.stderr
    killed = ssh_clusters.cli(TWO_HOSTS, "kill", "kvs", cwd=cwd)
    assert killed.returncode == 0, killed.stderr
    program = ssh_clusters.program(TWO_HOSTS, kvs, cwd=cwd)
    assert program.returncode == 0, program.stderr
    assert "lookup b -> [2, 3]" in program.stdout and "keys -> ['a', 'b', 'c']" in program.stdout


def check_ping_pong(ssh_clusters, cwd):
    out = ssh_clusters.program(TWO_HOSTS, EXAMPLES / "ping_pong.py", "200", cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("200 rounds between h1.") and "and h2." in out.stdout


def check_crasher(ssh_clusters, cwd):
    """The program watches a supervised process crash and be restarted under its name."""
    out = ssh_clusters.program(TWO_HOSTS, EXAMPLES / "crasher.py", cwd=cwd)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert len(rows) == 8 and all(row[0] == "flaky:" and row[1].startswith(("h1.", "h2."))
                                  for row in rows)


CHECKS = {"primes.py": check_primes, "erf.py": check_erf, "wordstats.py": check_wordstats,
          "text_pipeline.py": check_text_pipeline, "matrix_pipeline.py": check_matrix_pipeline,
          "kvs.py": check_kvs, "ping_pong.py": check_ping_pong, "crasher.py": check_crasher}
HELPERS = {"textutil.py"}  # not an example: a module wordstats.py imports


def test_every_example_has_a_check_here():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(set(CHECKS) | HELPERS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_example_runs_on_bare_hosts(name, env, ssh_clusters):
    CHECKS[name](ssh_clusters, env.cwd)


# -- what process code imports from clusterctl -------------------------------------------------

def watcher():
    """Spawn a process that fails, watch it, and answer with what the imports gave."""
    import clusterctl
    from clusterctl import actor
    from clusterctl.actor import Down, NoProcess, receive, reply

    doomed = actor.spawn(failing)
    ref = actor.monitor(doomed)
    actor.send(doomed, "go")  # (it fails only once monitored)
    down = receive(match=lambda m: isinstance(m, Down))
    try:
        actor.call("nobody-has-this-name", "hello", timeout=30)
        missing = None
    except NoProcess as exc:
        missing = type(exc).__name__
    receive(match=lambda m: m == "report")
    reply({"down": (down.ref == ref, down.reason), "missing": missing,
           "clusterctl": getattr(clusterctl, "__file__", None)})


def failing():
    from clusterctl.actor import receive

    receive()
    raise ValueError("as planned")


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_process_code_imports_clusterctl_actor_on_every_node(cluster):
    """One way for process code (``clusterctl.actor``: the functions, ``Down``, the errors),
    on a bare host and on one that has clusterctl installed (a local node: the
    controller's own interpreter), whose package is not shadowed."""
    pid = cluster.spawn(watcher, node="n1")
    report = cluster.call(pid, "report", timeout=60)
    assert report["down"] == (True, "ValueError: as planned")
    assert report["missing"] == "NoProcess"
    if cluster.spec("n1").target == "local":
        import clusterctl
        assert report["clusterctl"] == clusterctl.__file__  # the installed one, imported as usual
    else:
        assert report["clusterctl"] is None  # the empty package standing in for it
