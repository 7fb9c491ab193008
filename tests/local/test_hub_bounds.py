"""The hub's bounds: a command that trickles its handshake is dropped at one deadline,
command threads are capped (and a thread that cannot start costs one connection, not the
hub), ``hub.log`` is rotated, and a node lost for long is forgotten.

Most tests run a hub in this process (``hub_in_process``), so that its bounds can be made
short by setting the module's constants; the log's run the hub as a command starts it.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from clusterctl import errors
from clusterctl.config.cookie import load_or_create_cookie
from clusterctl.config.hosts import HostSpec
from clusterctl.hub import daemon, place, watch
from clusterctl.hub.client import HubClient
from clusterctl.node import wire
from clusterctl.transport.base import NodeSettings
from clusterctl.transport.bundle import agent_bundle

from helpers import wait_for

LOG_BYTES = 10 * 1024 * 1024


def hub_client() -> HubClient:
    return HubClient(NodeSettings(cookie=load_or_create_cookie(), bundle=agent_bundle()))


@contextmanager
def hub_in_process():
    """A hub serving in a thread of this process, on the test's hub socket; stopped after."""
    hub_dir = place.HubDir.open(place.hub_dir())
    hub = daemon.Hub(hub_dir, load_or_create_cookie(), 60.0)
    listener = daemon.listen(hub_dir)
    serving = threading.Thread(target=hub.serve, args=(listener,), daemon=True, name="test-hub")
    serving.start()
    try:
        yield hub, serving
    finally:
        hub.stopping.set()
        serving.join(5.0)
        listener.close()
        hub_dir.close()


def dial() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(place.socket_path(place.hub_dir()))
    return sock


def greeted(sock: socket.socket, within: float = 2.0) -> bool:
    """True if the hub said hello on ``sock``; False if it closed it without a word."""
    sock.settimeout(within)
    try:
        head, _ = wire.read_message(sock, max_payload=0)
    except (EOFError, ConnectionError):
        return False
    return head["op"] == "hello"


# -- the handshake's deadline --------------------------------------------------------------------

def test_a_command_that_trickles_its_handshake_is_dropped_at_one_deadline(env, monkeypatch):
    """A byte every 0.25 s never waits a whole read timeout, but the handshake and the
    request must be in within one deadline (here 1 s) from the connection."""
    monkeypatch.setattr(daemon, "HANDSHAKE_SECONDS", 1.0)
    never_ending = wire.encode({"op": "auth", "pad": "x" * 1000})
    with hub_in_process():
        sock = dial()
        try:
            started = time.monotonic()
            assert greeted(sock)
            closed_after = None
            for byte in never_ending[:16]:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed_after = time.monotonic() - started
                    break
                ready, _, _ = select.select([sock], [], [], 0.25)
                if ready and not sock.recv(1):
                    closed_after = time.monotonic() - started
                    break
            assert closed_after is not None, "the trickling command was never dropped"
            assert closed_after < 1.0 + 0.5
        finally:
            sock.close()


# -- the command threads' cap ---------------------------------------------------------------------

def test_commands_beyond_the_cap_are_closed_at_once_and_a_freed_place_is_taken(env, monkeypatch, capsys):
    monkeypatch.setattr(daemon, "MAX_COMMANDS", 2, raising=False)
    with hub_in_process():
        first, second = dial(), dial()
        extra = None
        try:
            assert greeted(first) and greeted(second)
            extra = dial()
            assert not greeted(extra), "a command beyond the cap was served"
            first.close()  # its thread ends, and its place is free
            def a_place_is_free():
                sock = dial()
                try:
                    return greeted(sock, 0.5)
                finally:
                    sock.close()
            wait_for(a_place_is_free, 5, interval=0.1, message="a freed place to be taken")
        finally:
            for sock in (first, second, extra):
                if sock is not None:
                    sock.close()
    assert "too many commands" in capsys.readouterr().err


def test_a_command_thread_that_cannot_start_costs_its_connection_not_the_hub(env, monkeypatch, capsys):
    """``Thread.start`` failing (RuntimeError: can't start new thread) closes that one
    connection, says so, and the hub goes on serving."""
    failures = [RuntimeError("can't start new thread")]

    class FailingOnce(threading.Thread):
        def start(self):
            if self.name == "clusterctl-hub-command" and failures:
                raise failures.pop()
            super().start()

    monkeypatch.setattr(threading, "Thread", FailingOnce)
    with hub_in_process() as (_, serving):
        unlucky = dial()
        try:
            assert not greeted(unlucky)
        finally:
            unlucky.close()
        lucky = dial()
        try:
            assert greeted(lucky), "the hub stopped serving"
        finally:
            lucky.close()
        assert serving.is_alive()
    assert "can't start new thread" in capsys.readouterr().err


# -- forgetting nodes lost for long ---------------------------------------------------------------

def test_a_node_lost_for_longer_than_the_bound_is_forgotten(env, monkeypatch):
    """A watched node that is gone (here it never ran) is tried again every
    ``REWATCH_SECONDS``; lost for ``FORGET_SECONDS``, it is forgotten: no longer in the
    hub's table of watches, nor in the nodes it keeps for a new hub."""
    monkeypatch.setattr(daemon, "REWATCH_SECONDS", 0.1)
    monkeypatch.setattr(watch, "FORGET_SECONDS", 0.5, raising=False)
    client = hub_client()
    spec = HostSpec(name="gone", target="local")
    with hub_in_process() as (hub, _):
        found = client.world([spec], {}, heartbeat=(1.0, 10.0), timeout=5.0, start=False)
        assert found == [("absent", None)]
        assert [n["node"] for n in client.call("status", {}, 10.0)["nodes"]] == ["gone"]
        assert "gone" in hub.known.watched
        wait_for(lambda: client.call("status", {}, 10.0)["nodes"] == [], 5, interval=0.1,
                 message="the lost node to be forgotten")
        assert hub.known.watched == {}
        kept = (env.run_dir / "hub" / "watched.json").read_text()
        assert '"gone"' not in kept


def test_a_node_lost_for_less_than_the_bound_is_kept(env, monkeypatch):
    monkeypatch.setattr(daemon, "REWATCH_SECONDS", 0.1)
    client = hub_client()
    with hub_in_process() as (hub, _):
        client.world([HostSpec(name="gone", target="local")], {}, heartbeat=(1.0, 10.0),
                     timeout=5.0, start=False)
        time.sleep(0.5)
        assert [n["node"] for n in client.call("status", {}, 10.0)["nodes"]] == ["gone"]
        assert "gone" in hub.known.watched
    assert watch.FORGET_SECONDS == 3600.0


# -- the log's rotation -----------------------------------------------------------------------

def hub_dir_with_log(env, size: int):
    env.run_dir.mkdir(mode=0o700)
    hub = env.run_dir / "hub"
    hub.mkdir(mode=0o700)
    with open(hub / "hub.log", "wb") as fh:
        fh.truncate(size)  # (sparse: no 10 MB written)
    return hub


def stop_hub() -> None:
    try:
        hub_client().stop(10.0)
    except errors.ClusterError:
        pass


@pytest.mark.parametrize("size", [LOG_BYTES + 1, LOG_BYTES - 10],
                         ids=["over the bound at start", "over the bound while running"])
def test_a_log_over_the_bound_is_moved_to_log_1(env, size):
    """Over 10 MB, ``hub.log`` becomes ``hub.log.1`` (one previous file is kept) and the
    hub goes on in a new ``hub.log``: whether it was over when the hub started, or its
    first line took it over."""
    hub = hub_dir_with_log(env, size)
    try:
        hub_client().call("status", {}, 10.0)
        wait_for(lambda: (hub / "hub.log.1").exists(), 5, message="the log to be rotated")
        assert (hub / "hub.log.1").stat().st_size >= size
        assert (hub / "hub.log").stat().st_size < 100_000
    finally:
        stop_hub()
    assert "hub stopped" in (hub / "hub.log").read_text()
