"""The hub's places on disk: the run directory and the hub's directory must be ours and
private, no link is followed there, and nothing the hub keeps on disk is a pickle.

Another local user who made the run directory first (``/tmp/clusterctl-UID`` when there
is no ``XDG_RUNTIME_DIR``) could otherwise swap the hub's directory for one of their own
and have the hub load what they put in it. The tests run as root: "another user" is
uid 65534, which the run directory is given with chown.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterctl import Cluster, errors
from clusterctl.config.cookie import load_or_create_cookie
from clusterctl.hub import place
from clusterctl.hub.client import HubClient
from clusterctl.transport.base import NodeSettings
from clusterctl.transport.bundle import agent_bundle

from actor_programs import hub_pid
from helpers import processes_mentioning, wait_for

OTHER_UID = 65534  # nobody
SRC = str(Path(__file__).resolve().parents[2] / "src")


def hub_client() -> HubClient:
    return HubClient(NodeSettings(cookie=load_or_create_cookie(), bundle=agent_bundle()))


def hub_processes(env) -> list:
    return [p for p in processes_mentioning(str(env.run)) if "clusterctl.hub.daemon" in p[1]]


def stop_hub(env) -> None:
    """Stop the test's hub, if one runs (by the client; by its pid if it will not answer)."""
    try:
        hub_client().stop(10.0)
    except errors.ClusterError:
        pass
    for pid, _ in hub_processes(env):
        os.kill(pid, signal.SIGKILL)


def run_daemon(directory: Path) -> subprocess.CompletedProcess:
    """``python -m clusterctl.hub.daemon --dir DIRECTORY`` as the command starts it."""
    return subprocess.run([sys.executable, "-m", "clusterctl.hub.daemon", "--dir", str(directory)],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": SRC})


class Marker:
    """A pickle that, when loaded, creates the file ``path``: what an attacker would
    put in a file the hub unpickles."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def private_hub_dir(env) -> Path:
    """The run directory and the hub's directory in it, made as the hub makes them."""
    env.run_dir.mkdir(mode=0o700)
    hub = env.run_dir / "hub"
    hub.mkdir(mode=0o700)
    return hub


def plant_pickle(hub: Path, marker: Path) -> None:
    for name in ("watched.pickle", "watched.json"):
        (hub / name).write_bytes(pickle.dumps(Marker(marker)))


def never_appears(path: Path, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return False
        time.sleep(0.05)
    return True


# -- a run directory that is not ours, or not private --------------------------------------------

def make_bad_run_dir(env, how: str) -> Path:
    """The run directory as another user would have made it first: theirs (with a hub
    directory of ours in it, swapped in, holding a pickle), or ours but open to others."""
    hub = private_hub_dir(env)
    plant_pickle(hub, env.root / "marker")
    if how == "theirs":
        os.chown(env.run_dir, OTHER_UID, OTHER_UID)
    else:
        env.run_dir.chmod(0o755)
    return env.run_dir


BAD_RUN_DIRS = {"theirs": f"belongs to uid {OTHER_UID}", "open": "is open to group or others"}
FIXES = {"theirs": "remove it, or use another directory", "open": "chmod go-rwx"}


@pytest.mark.parametrize("how", list(BAD_RUN_DIRS))
def test_a_command_refuses_a_run_directory_not_ours_or_open_and_reads_nothing_in_it(env, how):
    run = make_bad_run_dir(env, how)
    try:
        with pytest.raises(errors.HubError) as caught:
            hub_client().call("status", {}, 10.0)
        message = caught.value.one_line()
        assert "\n" not in message
        assert f"the run directory {run} {BAD_RUN_DIRS[how]}" in message
        assert FIXES[how] in message and "XDG_RUNTIME_DIR" in message
        assert never_appears(env.root / "marker", 1.0), "the hub loaded a pickle from the directory"
        assert sorted(os.listdir(run / "hub")) == ["watched.json", "watched.pickle"]  # nothing made
        assert hub_processes(env) == []
    finally:
        stop_hub(env)


@pytest.mark.parametrize("how", list(BAD_RUN_DIRS))
def test_the_hub_itself_refuses_a_run_directory_not_ours_or_open_in_one_line(env, how):
    run = make_bad_run_dir(env, how)
    try:
        done = run_daemon(run / "hub")
        assert done.returncode != 0 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"the run directory {run} {BAD_RUN_DIRS[how]}" in done.stderr
        assert FIXES[how] in done.stderr
        assert never_appears(env.root / "marker", 1.0)
        assert sorted(os.listdir(run / "hub")) == ["watched.json", "watched.pickle"]
    finally:
        stop_hub(env)


@pytest.mark.parametrize("linked", ["hub", "run"])
def test_a_link_in_place_of_the_hubs_directory_or_the_run_directory_is_refused(env, linked):
    """A symbolic link where the hub's directory (or the run directory) should be is
    refused, by the command and by the hub, however private the directory it points to."""
    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if linked == "hub":
        env.run_dir.mkdir(mode=0o700)
        link = env.run_dir / "hub"
        link.symlink_to(elsewhere)
    else:
        link = env.run_dir
        link.symlink_to(elsewhere)
    try:
        with pytest.raises(errors.HubError) as caught:
            hub_client().call("status", {}, 10.0)
        assert str(link) in caught.value.one_line() and "\n" not in caught.value.one_line()
        done = run_daemon(env.run_dir / "hub")
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert str(link) in done.stderr
        assert os.listdir(elsewhere) == []
        assert hub_processes(env) == []
    finally:
        stop_hub(env)


# -- what the hub keeps: JSON, written in place of links -----------------------------------------

def test_the_watched_nodes_are_kept_as_json_and_watched_again_by_a_new_hub(env, local_node_specs):
    """The hub keeps its watched nodes in ``watched.json``; a hub started after it was
    killed watches them again (they run on: the same pids)."""
    client = hub_client()
    hub = env.run_dir / "hub"
    try:
        found = client.world(local_node_specs, {}, heartbeat=(1.0, 10.0), timeout=10.0)
        assert [kind for kind, _ in found] == ["pong", "pong"], found
        kept = json.loads((hub / "watched.json").read_text())
        assert sorted(n["spec"]["name"] for n in kept["nodes"]) == ["n1", "n2"]
        assert not [name for name in os.listdir(hub) if "pickle" in name]
        first = hub_pid(env)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not place.process_alive(first), 5, message="the hub gone")

        def watched_again():
            nodes = client.call("status", {}, 10.0)["nodes"]
            return sorted((n["node"], n["state"]) for n in nodes) == [("n1", "up"), ("n2", "up")]

        wait_for(watched_again, 10, interval=0.2, message="the new hub to watch n1 and n2")
        assert hub_pid(env) != first
    finally:
        with Cluster(local_node_specs) as closer:
            closer.down()
        stop_hub(env)


def test_a_crafted_pickle_in_the_hubs_directory_runs_nothing(env):
    """A pickle where the hub kept its watched nodes (``watched.pickle`` of an older
    hub, or in place of ``watched.json``) is never loaded, and no pickle stays."""
    hub = private_hub_dir(env)
    marker = env.root / "marker"
    plant_pickle(hub, marker)
    try:
        assert hub_client().call("status", {}, 10.0)["nodes"] == []
        assert never_appears(marker), "the hub loaded the pickle"
        assert not (hub / "watched.pickle").exists()
    finally:
        stop_hub(env)


@pytest.mark.parametrize("text", [
    "not json",
    '[1, 2]',
    '{"version": 1, "nodes": [{"spec": {"name": 3, "target": "local"}}]}',
    ('{"version": 1, "nodes": [{"spec": {"name": "n1", "target": "local"}, "ssh": {}, '
     '"timeout": "soon", "heartbeat": [1, 10], "limits": {"idle": 5, "max_payload": 9}}]}'),
])
def test_a_malformed_watched_file_is_ignored_with_a_log_line(env, text):
    hub = private_hub_dir(env)
    (hub / "watched.json").write_text(text)
    try:
        assert hub_client().call("status", {}, 10.0)["nodes"] == []
        wait_for(lambda: "watched.json" in (hub / "hub.log").read_text(), 5,
                 message="the hub to log that it ignored the file")
        line = next(ln for ln in (hub / "hub.log").read_text().splitlines() if "watched.json" in ln)
        assert "ignored" in line
    finally:
        stop_hub(env)


@pytest.mark.parametrize("name", ["hub.pid", "hub.log"])
def test_the_hubs_files_are_never_written_through_a_link(env, name):
    """A link where the hub writes its pid (or its log) is not followed: the pid file is
    replaced by a file of its own; a log that is a link is refused, naming it."""
    hub = private_hub_dir(env)
    victim = env.root / "victim"
    victim.write_text("precious\n")
    (hub / name).symlink_to(victim)
    try:
        try:
            pid = hub_client().call("status", {}, 10.0)["pid"]
        except errors.HubError as exc:
            assert name == "hub.log" and str(hub / name) in exc.one_line()
        else:
            assert name == "hub.pid"
            assert not (hub / name).is_symlink() and (hub / name).read_text() == f"{pid}\n"
        assert victim.read_text() == "precious\n"
    finally:
        stop_hub(env)


def test_the_watched_file_keeps_what_a_new_hub_needs_and_only_that():
    """Per node: its hosts-file line, the SSH files its host was resolved with, the
    command's timeout, heartbeat and limits; read back as the world requests that watch
    the nodes again (one per set of settings). No other SSH option is kept."""
    from clusterctl.config.hosts import HostSpec
    from clusterctl.hub.known import rewatch_requests, watched_from_json, watched_to_json

    ssh = {"config_file": "/home/u/.ssh/config", "accept_new_host_keys": True, "other": object()}
    request = {"ssh": ssh, "start": True, "timeout": 7.5, "heartbeat": (1.0, 10.0),
               "limits": {"idle": 900.0, "max_payload": 1 << 20}}
    specs = [HostSpec(name="a", target="alice@h1:2222", user="alice", host="h1", port=2222, slots=4),
             HostSpec(name="b", target="h2", host="h2", python="/opt/py/bin/python3", idle=60.0)]
    watched = {s.name: dict(request, specs=[s], start=False) for s in specs}
    back = watched_from_json(watched_to_json(watched))
    assert list(back) == ["a", "b"]
    assert [args["specs"] for args in back.values()] == [[specs[0]], [specs[1]]]
    assert back["a"]["ssh"] == {"config_file": "/home/u/.ssh/config", "accept_new_host_keys": True}
    assert back["a"]["heartbeat"] == (1.0, 10.0) and back["a"]["start"] is False
    [again] = rewatch_requests(back)
    assert again["specs"] == specs and again["start"] is False
    assert again["limits"] == request["limits"] and again["timeout"] == 7.5
