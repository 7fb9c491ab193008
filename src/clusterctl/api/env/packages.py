"""What travels for a module a call needs: a ``Package``, the files of one installed
distribution (as its installed record lists them: data files and bundled shared
libraries come along) or of one of the user's own modules or package trees, with an id
from their contents (``boot.code_digest``, the agent code's own id). A distribution
brings the installed distributions it requires."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from clusterctl.node import boot

SKIPPED_DIRS = frozenset((".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox", ".nox",
                          ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules",
                          ".eggs", "build", "dist"))
SKIPPED_SUFFIXES = (".pyc", ".pyo")
COMPILED_SUFFIXES = (".so", ".pyd", ".dylib")
AGENT_DISTRIBUTIONS = frozenset(("cloudpickle", "clusterctl"))  # every node has them



_zipped: dict[str, bytes] = {}  # id -> the package zipped (this process's)
_zipping = threading.Lock()


@dataclass
class Package:
    """One distribution or tree, ready to ship: ``files`` are (relative path, absolute
    path) pairs in a fixed order; ``code_id`` is the id of their contents."""

    name: str
    version: str
    files: tuple[tuple[str, str], ...]
    code_id: str
    size: int
    compiled: bool = False
    requires: tuple[str, ...] = field(default=())
    tags: tuple[str, ...] = field(default=())  # a built distribution's wheel tags

    def zipped(self) -> bytes:
        """The files, zipped in their order (what a node unzips into its cache), then the
        bytecode of those this process imported (``bytecode``); made once, however many
        hosts it goes to."""
        with _zipping:
            data = _zipped.get(self.code_id)
            if data is None:
                from clusterctl.api.env.bytecode import bytecode_of
                from clusterctl.api.env.zipping import zip_files

                members = list(self.files) + bytecode_of(list(self.files))
                data = _zipped[self.code_id] = zip_files(members)
            return data

    def describe(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


def _digest(files: list[tuple[str, str]]) -> tuple[str, int]:
    size = 0

    def contents():
        nonlocal size
        for rel, path in files:
            data = Path(path).read_bytes()
            size += len(data)
            yield rel, data

    return boot.code_digest(contents()), size


IDS_FILE = "env-ids.json"  # in the cache directory: ids of distributions hashed before
MAX_IDS_KEPT = 2000


def _ids_path() -> str:
    return os.path.join(boot.cache_root(), IDS_FILE)


def _ours(path: str) -> bool:
    """Whether ``path`` is ours and nobody else may write it (else its word is not taken)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _known_ids() -> dict:
    path = _ids_path()
    if not (_ours(os.path.dirname(path)) and _ours(path)):
        return {}
    try:
        with open(path) as fh:
            known = json.load(fh)
        return known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember_id(signature: str, code_id: str, size: int) -> None:
    """Keep a distribution's id for the next command (written whole, then renamed)."""
    known = _known_ids()
    if len(known) >= MAX_IDS_KEPT:
        known = {}
    known[signature] = [code_id, size]
    path = _ids_path()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if not _ours(os.path.dirname(path)):
            return
        staging = "%s.%d.new" % (path, os.getpid())
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(known, fh)
        os.replace(staging, path)
    except OSError:
        pass  # (hashed again next time)


def _package(name: str, version: str, files: list[tuple[str, str]],
             requires: tuple[str, ...] = (), tags: tuple[str, ...] = (),
             signature: str | None = None) -> Package:
    """A package of ``files``. ``signature``: an installed distribution's (see
    ``DistInfo.signature``), under which its id is kept across commands: a command need
    not hash numpy's 57 MB again, and an install of another version is a new signature."""
    files = sorted((rel, path) for rel, path in files if os.path.isfile(path))
    known = _known_ids().get(signature) if signature else None
    if isinstance(known, list) and len(known) == 2:
        code_id, size = known
    else:
        code_id, size = _digest(files)
        if signature:
            _remember_id(signature, code_id, size)
    compiled = any(rel.endswith(COMPILED_SUFFIXES) or ".so." in rel for rel, _ in files)
    return Package(name, version, tuple(files), code_id, size, compiled, requires, tags)


@lru_cache(maxsize=1)
def _distributions_of() -> dict[str, list[str]]:
    import importlib.metadata

    return importlib.metadata.packages_distributions()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


class DistInfo:
    """An installed distribution read straight from its ``.dist-info`` directory: what
    ``importlib.metadata`` reads, without its import (30 ms a command) or its search of
    every distribution."""

    def __init__(self, path: Path) -> None:
        self.path, self.site = path, path.parent
        self.headers: dict[str, list[str]] = {}
        for line in (self.text("METADATA") or "").splitlines():
            if not line.strip():
                break  # (the description follows)
            key, sep, value = line.partition(":")
            if sep and not key.startswith((" ", "\t")):
                self.headers.setdefault(key.strip().lower(), []).append(value.strip())

    def text(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def header(self, key: str) -> str:
        return (self.headers.get(key) or [""])[0]

    def editable(self) -> bool:
        try:
            info = json.loads(self.text("direct_url.json") or "{}")
        except ValueError:
            return False
        return bool(isinstance(info, dict) and info.get("dir_info", {}).get("editable"))

    def requirement_names(self) -> tuple[str, ...]:
        """The distributions it requires whatever extras are asked for."""
        names = []
        for line in self.headers.get("requires-dist", ()):
            requirement, _, marker = line.partition(";")
            if "extra" in marker:
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            if match:
                names.append(match.group(1))
        return tuple(names)

    def tags(self) -> tuple[str, ...]:
        """The tags of the wheel it was installed from (its ``WHEEL`` file)."""
        return tuple(line.split(":", 1)[1].strip() for line in (self.text("WHEEL") or "").splitlines()
                     if line.startswith("Tag:"))

    def holds(self, top: str) -> bool:
        return any(line.split("/", 1)[0].split(".", 1)[0].split(",", 1)[0] == top
                   for line in (self.text("RECORD") or "").splitlines())

    def signature(self) -> str:
        """What changes when it is installed again (its record's size and time)."""
        st = os.stat(self.path / "RECORD")
        return "%s\0%s\0%d\0%d" % (self.path, self.header("version"), st.st_size, st.st_mtime_ns)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@lru_cache(maxsize=None)
def _dist_infos(folder: str) -> dict[str, str]:
    """The ``.dist-info`` directories in ``folder``, by normalized distribution name."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return {}
    return {_normalized(e[:-10].rsplit("-", 1)[0]): e for e in entries if e.endswith(".dist-info")}


def find_dist_info(name: str) -> DistInfo | None:
    """The installed distribution ``name``, the first on the path, as Python finds it."""
    wanted = _normalized(name)
    for folder in sys.path:
        entry = _dist_infos(folder or ".").get(wanted)
        if entry is not None:
            return DistInfo(Path(folder or ".") / entry)
    return None


def distributions_for(top: str) -> list[str]:
    """The installed distributions holding the top-level module ``top``: found beside it
    when one is named as it is (numpy's ``numpy-2.4.6.dist-info``), else, for a module
    among installed ones, from the table of every installed distribution (built once per
    cluster: it reads them all). None for a module of the user's own."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return []
    origin = Path(spec.origin)
    site = origin.parent.parent if origin.name == "__init__.py" else origin.parent
    entry = _dist_infos(str(site)).get(_normalized(top))
    if entry is not None:
        info = DistInfo(site / entry)
        if info.holds(top):
            return [info.header("name") or top]
    if not _dist_infos(str(site)):
        return []  # (no distribution is installed there: the user's own)
    return _distributions_of().get(top, [])


def forget_installed() -> None:
    """Read anew which distributions are installed, and their records (a new cluster:
    something may have been installed or upgraded since, by a program that goes on). A
    distribution's id, once hashed, is kept under its record's signature."""
    _distributions_of.cache_clear()
    _dist_infos.cache_clear()


_read: dict[str, tuple[str, Package | None]] = {}  # name -> (record's signature, package)


def distribution_package(dist_name: str) -> Package | None:
    """The installed distribution ``dist_name`` whole (its record's files inside its
    installation directory); None if it is not installed or is an editable install
    (its code is the user's tree: see ``tree_package``). Read once while its record's
    signature stays the same: an upgrade, also in a program that goes on, is read anew."""
    info = find_dist_info(dist_name)
    try:
        signature = info.signature() if info is not None else ""
    except OSError:
        signature = ""
    known = _read.get(dist_name)
    if known is not None and known[0] == signature and signature:
        return known[1]
    package = _read_distribution(info, dist_name) if signature else None
    _read[dist_name] = (signature, package)
    return package


def _read_distribution(info: DistInfo, dist_name: str) -> Package | None:
    record = info.text("RECORD")
    if not record or info.editable():
        return None
    import csv

    files = []
    for row in csv.reader(record.splitlines()):
        rel = row[0] if row else ""
        if not rel or rel.startswith("../") or rel.startswith("/") or rel.endswith(SKIPPED_SUFFIXES) \
                or "__pycache__" in rel.split("/"):
            continue
        files.append((rel, str(info.site / rel)))
    return _package(info.header("name") or dist_name, info.header("version"), files,
                    info.requirement_names(), info.tags(), signature=info.signature())


def _tree_files(origin: Path, top: str) -> list[tuple[str, str]]:
    if origin.name == "__init__.py" or origin.is_dir():
        root = origin if origin.is_dir() else origin.parent
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
            for name in sorted(names):
                if name.endswith(SKIPPED_SUFFIXES):
                    continue
                path = os.path.join(folder, name)
                files.append((os.path.relpath(path, root.parent).replace(os.sep, "/"), path))
        return files
    return [(origin.name, str(origin))]


def tree_package(top: str) -> Package | None:
    """The user's own module or package ``top`` as found on this controller's path (a
    file next to the script, a project installed with ``pip install -e``): its files,
    without version-control, virtualenv and cache directories. None if it cannot be
    found, or it is part of Python itself."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        origin = Path(spec.origin)
    elif spec.submodule_search_locations:
        origin = Path(list(spec.submodule_search_locations)[0])
    else:
        return None
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    if stdlib in origin.resolve().parents:
        return None
    files = _tree_files(origin, top)
    return _package(top, "", files, tuple(sorted(imports_of(files))))


def imports_of(files: list[tuple[str, str]]) -> set[str]:
    """The modules the Python files among ``files`` import (absolute imports only: a
    relative one stays inside the tree)."""
    import ast

    found: set[str] = set()
    for rel, path in files:
        if not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse(Path(path).read_bytes(), path)
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def packages_for(tops: set[str]) -> list[Package]:
    """The packages the top-level modules ``tops`` need: a distribution with those it
    requires, a tree with what its modules import; each once, in a fixed order. A module
    not found here is left out (the node answers its ImportError)."""
    from clusterctl.api.env.needs import NOT_SHIPPED, top_levels

    found: dict[str, Package] = {}
    done_tops: set[str] = set()
    done_dists: set[str] = set()
    tops_todo = sorted(tops)
    dists_todo: list[str] = []
    while tops_todo or dists_todo:
        if dists_todo:
            dist_name = dists_todo.pop()
            key = dist_name.lower().replace("_", "-")
            if key in done_dists or key in AGENT_DISTRIBUTIONS:
                continue
            done_dists.add(key)
            package = distribution_package(dist_name)
            if package is not None:
                found[package.code_id] = package
                dists_todo.extend(package.requires)
            continue
        top = tops_todo.pop()
        if top in done_tops or top in NOT_SHIPPED:
            continue
        done_tops.add(top)
        dists = distributions_for(top)
        installed = [d for d in dists if distribution_package(d) is not None]
        if any(d.lower() in AGENT_DISTRIBUTIONS for d in dists):
            continue
        if installed:
            dists_todo.extend(installed)
            continue
        package = tree_package(top)  # the user's own (an editable install's too)
        if package is not None:
            found[package.code_id] = package
            tops_todo.extend(sorted(top_levels(set(package.requires)) - done_tops))
    return sorted(found.values(), key=lambda p: (p.name.lower(), p.code_id))


def skip_by_value(tops: set[str]) -> set[str]:
    """``tops`` without the modules that travel by value inside the pickle itself."""
    cloudpickle = sys.modules.get("cloudpickle")  # (not imported: nothing travels by value)
    if not tops or cloudpickle is None:
        return set(tops)
    try:
        by_value = set(cloudpickle.list_registry_pickle_by_value())
    except AttributeError:
        by_value = set()
    return set(tops) - by_value  # (a top-level package registered whole travels in the pickle)
