"""clusterctl's version, which a node must match."""

__version__ = "0.1.0"
