"""This controller's bytecode of the modules it has imported from a package, made fit to
travel with the package: a host whose Python is of this version then imports them
without compiling (numpy's first import on a fresh copy: 0.83 s, 0.33 s with its
bytecode). Another Python ignores these files (their names carry this Python's cache
tag) and compiles as before; the package's id is its files', without them.

Python checks a cache file against its source's time and size, and a shipped source's
time is when the host wrote it; so each cache file travels as a *checked hash-based* one
(PEP 552): its header carries a hash of the source, which the host's Python checks
before it uses the bytecode. A cache file that is stale here (its source changed since,
also within the same second and to the same size, which Python's own check misses)
stays home."""

from __future__ import annotations

import os
import sys
from importlib.util import MAGIC_NUMBER, cache_from_source, source_hash

CHECKED_HASH = (0b11).to_bytes(4, "little")  # PEP 552 flags: hash-based, check the source
HEADER = 16  # magic, flags, then the source's time and size, or its hash


def imported_files() -> set[str]:
    """The source files of the modules this process has imported."""
    found = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.endswith(".py"):
            found.add(os.path.realpath(path))
    return found


def bytecode_of(files: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """For the (relative path, path) pairs ``files``: the cache files of those this process
    imported, as (relative path beside the source's ``__pycache__``, contents) pairs."""
    imported = imported_files()
    found = []
    for rel, path in files:
        if not rel.endswith(".py") or os.path.realpath(path) not in imported:
            continue
        try:
            cached = cache_from_source(path)
        except (NotImplementedError, ValueError):  # (no cache tag: no bytecode anywhere)
            return []
        data = travelling(path, cached)
        if data is not None:
            folder = rel.rpartition("/")[0]
            found.append(((folder + "/" if folder else "") + "__pycache__/"
                          + os.path.basename(cached), data))
    return found


def travelling(source_path: str, cached_path: str) -> bytes | None:
    """The cache file of ``source_path`` as a checked hash-based one; None if there is
    none, or it is not this Python's, or it is stale."""
    try:
        with open(cached_path, "rb") as fh:
            data = fh.read()
        with open(source_path, "rb") as fh:
            source = fh.read()
        st = os.stat(source_path)
        written = os.stat(cached_path).st_mtime_ns
    except OSError:
        return None
    if written < st.st_mtime_ns:  # the source changed after: in the same second Python
        return None  # would still take it (its check is by whole seconds and size)
    if len(data) <= HEADER or data[:4] != MAGIC_NUMBER:
        return None
    flags = int.from_bytes(data[4:8], "little")
    digest = source_hash(source)
    if flags == 0:  # timestamp-based: Python's default
        fresh = (data[8:12] == (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                 and data[12:16] == (len(source) & 0xFFFFFFFF).to_bytes(4, "little"))
    else:
        fresh = flags & 1 == 1 and data[8:16] == digest
    if not fresh:
        return None
    return MAGIC_NUMBER + CHECKED_HASH + digest + data[HEADER:]
