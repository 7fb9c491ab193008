"""clusterctl: run Python across the machines you can ssh into.

``from clusterctl import Cluster``. The heavy parts (paramiko, rich) are imported only
where they are needed, so ``clusterctl --help`` and short commands start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Cluster", "MulticallResult", "NodeInfo", "__version__"]


def __getattr__(name: str):
    if name in ("Cluster", "MulticallResult", "NodeInfo"):
        from . import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module 'clusterctl' has no attribute {name!r}")
