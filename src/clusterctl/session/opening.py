"""Opening a node: the stream its transport gives, the handshake, and the checks before
the connection is used. A node that runs other code (an older or newer clusterctl) is
stopped and, if it is to be started, replaced once; a node that will run our calls must
run our Python. A command's links and the hub's watches open nodes the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from clusterctl import errors
from clusterctl.config.hosts import HostSpec
from clusterctl.node import wire
from clusterctl.session.connection import NodeConnection
from clusterctl.transport.base import NodeSettings, Transport
from clusterctl.version import check_agent_protocol, require_same_python


@dataclass(frozen=True)
class Heartbeat:
    """How often a connection sends when it has nothing to say, and how long a silent
    peer is given (docs/how-it-works.md, "Heartbeats and loss")."""

    interval: float = 1.0
    timeout: float = 10.0


def open_node(spec: HostSpec, transport: Transport, settings: NodeSettings, *, start: bool,
              deadline: float, heartbeat: Heartbeat, stop_timeout: float,
              on_close: Callable[[], None] | None = None,
              watch: bool = False) -> NodeConnection | None:
    """A started connection to the node of ``spec``, or None if none runs and ``start``
    is false. A node running other code is given ``stop_timeout`` to stop. ``on_close``
    is called once the connection has ended, for whatever reason; ``watch``: the hub's
    connection that only pings (see ``handshake.authenticate``)."""
    for attempt in (1, 2):
        stream = transport.open(start=start, deadline=deadline)
        if stream is None:
            return None
        conn = handshake(spec, stream, settings, deadline, heartbeat, on_close, watch)
        if conn.restricted:  # the host owner's installed agent: never replaced, nothing pickled
            conn.start()
            return conn
        if hello_runs_our_code(conn.hello, settings):
            if start:  # calls will travel pickled (a connection only to stop needs no check)
                try:
                    require_same_python(spec.name, str(conn.hello.get("python", "")),
                                        where="the node", source=spec.source)
                except errors.ClusterError:
                    conn.close_unstarted()
                    raise
            conn.start()
            return conn
        if attempt == 2:
            conn.close_unstarted()
            raise errors.HandshakeError(spec.name, "the node still runs other code after a restart")
        conn.start()
        stop_connected(conn, transport, stop_timeout)
        if not start:
            return None
    return None


def handshake(spec: HostSpec, stream, settings: NodeSettings, deadline: float,
              heartbeat: Heartbeat, on_close: Callable[[], None] | None = None,
              watch: bool = False) -> NodeConnection:
    """A NodeConnection on ``stream`` that has read the hello and authenticated (not
    started); any failure closes it and is this host's error only."""
    conn = NodeConnection(spec.name, stream, cookie=settings.cookie,
                          heartbeat_interval=heartbeat.interval,
                          heartbeat_timeout=heartbeat.timeout,
                          max_payload=settings.max_payload, on_close=on_close, watch=watch)
    try:
        remaining = max(0.5, deadline - time.monotonic())
        conn.read_hello(remaining)
        if conn.restricted:
            check_agent_protocol(spec.name, conn.hello, spec.target)
        conn.authenticate(remaining)
    except errors.ClusterError:
        conn.close_unstarted()
        raise
    except Exception as exc:  # a bug, or a peer we did not foresee: this host only
        conn.close_unstarted()
        raise errors.ProtocolError(spec.name, f"the handshake failed: {type(exc).__name__}: "
                                              f"{exc}") from exc
    except BaseException:
        conn.close_unstarted()
        raise
    return conn


def stop_connected(conn: NodeConnection, transport: Transport, timeout: float) -> None:
    """Tell a node to stop and wait until its process is gone."""
    pid = conn.hello.get("pid")
    pending = conn.request({"op": "stop"})
    pending.wait(timeout)
    conn.close()
    transport.wait_stopped(pid, timeout)


def hello_runs_our_code(hello: dict, settings: NodeSettings) -> bool:
    """Whether a node's hello says it runs this controller's code and protocol."""
    return hello.get("code") == settings.bundle.code_id and hello.get("proto") == wire.PROTOCOL_VERSION
