"""The environment that travels, on the node's side: the packages a controller ships
(a distribution, or the user's own modules), each kept in the host's cache under its
id (``cache/env/<id>``), checked and installed as the agent's own code is
(``boot.code_ok``, ``boot.install_code``: never used half-written, one copy however
many install it at once), and put first on a worker's path for the tasks that name it.

Ships to hosts: the standard library only. See docs/how-it-works.md, "The environment
that travels".
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import sys

from .. import boot, ops, wire
from ..log import log
from ..part import Part

SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def env_dir(code_id: str) -> str:
    """Where the package ``code_id`` is kept on this host."""
    return os.path.join(boot.cache_root(), "env", code_id)


def about_path(code_id: str) -> str:
    """Beside a package: what it is (name, version, size), and by its time, when a
    worker last used it."""
    return env_dir(code_id) + ".json"


_ID = re.compile("[0-9a-f]{16}").fullmatch


class Environments(Part):
    """Answers ``envcheck`` (which of these packages does this host lack?) and
    ``envput`` (install this one). A package checked once is taken as good until the
    node stops."""

    def __init__(self, loop, name: str) -> None:
        self.loop = loop
        self.name = name
        self.good: set[str] = set()
        self.handlers = {"envcheck": self.check, "envput": self.put, "envlist": self.listing,
                         "envdrop": self.drop}

    def has(self, code_id: str) -> bool:
        if code_id not in self.good and boot.code_ok(env_dir(code_id), code_id):
            self.good.add(code_id)
        return code_id in self.good

    def check(self, conn, head: dict, raw: bytes) -> None:
        try:
            missing = [code_id for code_id in head["ids"] if not self.has(code_id)]
        except RuntimeError as exc:  # the cache is not ours, or open to others
            self.fail(conn, head, str(exc))
            return
        self.loop.send(conn, wire.encode({"op": "envmissing", "id": head["id"], "missing": missing}))

    def put(self, conn, head: dict, raw: bytes) -> None:
        code_id, payload = head["env"], wire.frame_payload(raw)
        what = str(head.get("name") or code_id)[:200]
        try:
            if not self.has(code_id):
                files = list(boot.unzip(bytes(payload)))
                boot.install_code(env_dir(code_id), code_id, files)
                log("installed %s (%d bytes zipped) as %s" % (what, len(payload), code_id))
                describe(code_id, what, sum(len(data) for _, data in files))
            self.good.add(code_id)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                reason = ("no room on this host for %s: its cache %s needs about %d MB more"
                          % (what, boot.cache_root(), 1 + 3 * len(payload) // (1 << 20)))
            else:
                reason = "cannot install %s: %s" % (what, exc.strerror or exc)
            self.fail(conn, head, reason)
            return
        except (ValueError, RuntimeError) as exc:
            self.fail(conn, head, "cannot install %s: %s" % (what, exc))
            return
        self.loop.send(conn, wire.encode({"op": "envstored", "id": head["id"]}))

    def listing(self, conn, head: dict, raw: bytes) -> None:
        """``envlist``: what this host holds, each package with its name, size and when a
        worker last used it."""
        self.loop.send(conn, wire.encode({"op": "envlisted", "id": head["id"]},
                                         json.dumps(held()).encode()))

    def drop(self, conn, head: dict, raw: bytes) -> None:
        """``envdrop``: remove these packages from this host (a worker that has one on
        its path keeps what it imported; the next call that needs it ships it again)."""
        dropped = []
        for code_id in head["ids"]:
            self.good.discard(code_id)
            aside = env_dir(code_id) + ".dropping.%d" % os.getpid()
            try:
                os.rename(env_dir(code_id), aside)
            except OSError:
                continue
            boot.remove_tree(aside)
            try:
                os.unlink(about_path(code_id))
            except OSError:
                pass
            dropped.append(code_id)
        if dropped:
            log("%s: removed %d shipped package(s)" % (conn.label, len(dropped)))
        self.loop.send(conn, wire.encode({"op": "envdropped", "id": head["id"], "dropped": dropped}))

    def fail(self, conn, head: dict, reason: str) -> None:
        log("%s: %s" % (conn.label, reason))
        self.loop.send(conn, wire.encode(ops.error_head("env", head["id"], "EnvironmentError",
                                                        reason, self.name)))


def describe(code_id: str, what: str, size: int) -> None:
    name, _, version = what.partition(" ")
    try:
        fd = os.open(about_path(code_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"name": name, "version": version, "size": size}, fh)
    except OSError:
        pass


def held() -> list:
    """The packages this host's cache holds: id, name, version, size, last used."""
    root = os.path.join(boot.cache_root(), "env")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    found = []
    for code_id in names:
        if not _ID(code_id) or not os.path.isdir(os.path.join(root, code_id)):
            continue
        about = {"name": "?", "version": "", "size": 0}
        used = None
        try:
            with open(about_path(code_id)) as fh:
                about.update(json.load(fh))
            used = os.stat(about_path(code_id)).st_mtime
        except (OSError, ValueError):
            pass
        found.append({"id": code_id, "name": str(about["name"]), "version": str(about["version"]),
                      "size": about["size"] if type(about["size"]) is int else 0, "used": used})
    return found


_in_use: dict[str, list[str]] = {}  # package id -> its top-level names, in this process


def use(ids) -> bool:
    """Put the packages ``ids`` first on this process's path. A module of the same name
    imported from elsewhere (an older version of the user's package, the host's own
    copy) is forgotten first, so the package named is the one imported. Whether the path
    changed (then what was looked up by name must be looked up again)."""
    if not ids:
        return False
    added = False
    for code_id in ids:
        if code_id in _in_use:
            continue
        path = env_dir(code_id)
        names = top_names(path)
        for other_id, other_names in list(_in_use.items()):
            if set(other_names) & set(names):
                del _in_use[other_id]
                try:
                    sys.path.remove(env_dir(other_id))
                except ValueError:
                    pass
        for name in names:
            forget(name, path)
        sys.path.insert(0, path)
        _in_use[code_id] = names
        added = True
        try:  # (when it was last used: what ``clusterctl env`` shows, and keeps)
            os.utime(about_path(code_id))
        except OSError:
            pass
    if added:
        importlib.invalidate_caches()
    return added


def top_names(path: str) -> list[str]:
    """The top-level modules and packages a package directory holds."""
    names = []
    try:
        entries = os.listdir(path)
    except OSError:
        return names
    for entry in entries:
        if entry.endswith(".dist-info") or entry.startswith((".", "__")) or entry == boot.MANIFEST:
            continue
        base = entry.split(".", 1)[0]
        if os.path.isdir(os.path.join(path, entry)) or entry.endswith(SUFFIXES):
            names.append(base)
    return names


def forget(name: str, path: str) -> None:
    """Drop the module ``name`` and its submodules if they were imported from outside
    ``path``."""
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) or ""
    if module is None or origin.startswith(path + os.sep):
        return
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
