"""Where a process goes when no node is named: the least-loaded node, as Erlang's
``pool`` chooses, by what each node's pong says."""

from __future__ import annotations


def load_score(pong: dict) -> float:
    """How loaded a node is: its spawned processes and running tasks per slot, plus its
    one-minute load average per CPU. Lower is freer."""
    slots = max(1, int(pong.get("slots") or 1))
    cpus = max(1, int(pong.get("cpus") or 1))
    load = pong.get("load") or [0.0]
    return ((pong.get("processes") or 0) + (pong.get("running") or 0)) / slots + float(load[0]) / cpus


def least_loaded(pongs: dict[str, dict]) -> str:
    """The node whose pong shows the lowest load (the first in order on a tie)."""
    if not pongs:
        raise ValueError("no node to place a process on")
    return min(pongs, key=lambda node: (load_score(pongs[node]), list(pongs).index(node)))
