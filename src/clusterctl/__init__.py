"""clusterctl: run Python across the machines you can ssh into.

``from clusterctl import Cluster``. The heavy parts (paramiko, rich) are imported only
where they are needed, so ``clusterctl --help`` and short commands start fast.
"""

from __future__ import annotations

from clusterctl.version import __version__

__all__ = ["Cluster", "MulticallResult", "NodeInfo", "read_results", "__version__"]


def __getattr__(name: str):
    if name == "Cluster":
        from clusterctl.api.cluster import Cluster

        return Cluster
    if name in ("MulticallResult", "NodeInfo"):
        from clusterctl.api import results

        return getattr(results, name)
    if name == "read_results":
        from clusterctl.api.results_file import read_results

        return read_results
    raise AttributeError(f"module 'clusterctl' has no attribute {name!r}")
