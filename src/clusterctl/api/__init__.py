"""The Python API: Cluster and its results, fan-out and pmap. See docs/how-it-works.md."""
