"""Traces: what a run did on every node, on one timeline, in a file Perfetto opens, and
the analysis of such a file.

The rooms: ``recording`` (the controller's events, the nodes' rings, the clock
offsets), ``chrome`` (the file's layout) and ``analysis`` (the figures read back from a
file). ``traced`` records a stretch of work with a cluster; ``Cluster(trace=FILE)`` and
``cluster.trace(FILE)`` use it. See docs/how-it-works.md, section "Traces".
"""

from __future__ import annotations

import json
import os
import platform
from contextlib import contextmanager
from typing import Iterator

from clusterctl import errors
from clusterctl.api.trace import chrome
from clusterctl.api.trace.recording import Recording
from clusterctl.node.ops import DEFAULT_CAPACITY

__all__ = ["Recording", "record", "traced", "write"]


@contextmanager
def traced(cluster, path, capacity: int | None = None) -> Iterator[Recording]:
    """Record what ``cluster`` does inside the ``with`` into ``path`` (each node keeping
    ``capacity`` events at most); the file is written also when the work ends by an
    exception (Ctrl-C, a lost node)."""
    recording = Recording(path, capacity or DEFAULT_CAPACITY)
    previous, cluster.recording = cluster.recording, recording
    try:
        yield recording
    finally:
        cluster.recording = previous
        write(cluster, recording)


def record(cluster, path, seconds: float, capacity: int | None = None) -> Recording:
    """Record for ``seconds`` what the spawned processes of the world's running nodes do
    (their spawns, ends, restarts and messages) into ``path`` (no node is started); the
    file is written also when interrupted (Ctrl-C)."""
    import time

    recording = Recording(path, capacity or DEFAULT_CAPACITY, processes=True)
    try:
        for name in cluster.nodes:
            conn = cluster._processes.running(name)  # (running: no node is started)
            if conn is not None:
                recording.watch(name, conn)
        time.sleep(seconds)
    finally:
        write(cluster, recording)
    return recording


def write(cluster, recording: Recording) -> None:
    """Collect the nodes' events and write the trace file (atomically)."""
    from clusterctl import __version__

    def describe(name: str) -> tuple[str, int]:
        spec = cluster.spec(name)
        return ("localhost" if spec.is_local else spec.target), int(spec.slots or 0)

    raw = recording.collect(describe)
    raw.versions = {"clusterctl": __version__, "python": platform.python_version()}
    data = chrome.layout(raw)
    path = os.fspath(recording.path)
    partial = f"{path}.partial"
    try:
        with open(partial, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(partial, path)
    except OSError as exc:
        raise errors.UsageError(f"cannot write the trace to {path}: {exc.strerror}",
                                hint="give --trace a path in a directory you can write") from None
