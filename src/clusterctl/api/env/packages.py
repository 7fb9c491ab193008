"""What travels for a module a call needs: a ``Package``, the files of one installed
distribution (as its installed record lists them: data files and bundled shared
libraries come along) or of one of the user's own modules or package trees, with an id
from their contents (``boot.code_digest``, the agent code's own id). A distribution
brings the installed distributions it requires."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import os
import re
import sys
import sysconfig
import zipfile
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
        """The files, zipped in their order (what a node unzips into its cache)."""
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for rel, path in self.files:
                archive.write(path, rel)
        return out.getvalue()

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


def _signature(files: list[tuple[str, str]]) -> str:
    """What changes when any of ``files`` changes: names, sizes, modification times."""
    import hashlib

    digest = hashlib.sha256()
    for rel, path in files:
        st = os.stat(path)
        digest.update(b"%s\0%d\0%d\0" % (rel.encode(), st.st_size, st.st_mtime_ns))
    return digest.hexdigest()


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
             remember: bool = False) -> Package:
    """A package of ``files``. ``remember``: an installed distribution, whose id is kept
    across commands under the signature of its files (a command need not hash numpy's
    57 MB again), and found again if any file's size or time changed."""
    files = sorted(files)
    signature = _signature(files) if remember else None
    known = _known_ids().get(signature) if remember else None
    if isinstance(known, list) and len(known) == 2:
        code_id, size = known
    else:
        code_id, size = _digest(files)
        if remember:
            _remember_id(signature, code_id, size)
    compiled = any(rel.endswith(COMPILED_SUFFIXES) or ".so." in rel for rel, _ in files)
    return Package(name, version, tuple(files), code_id, size, compiled, requires, tags)


def wheel_tags(dist: importlib.metadata.Distribution) -> tuple[str, ...]:
    """The tags of the wheel ``dist`` was installed from (its ``WHEEL`` file)."""
    text = dist.read_text("WHEEL") or ""
    return tuple(line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Tag:"))


@lru_cache(maxsize=1)
def _distributions_of() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def distributions_for(top: str) -> list[str]:
    """The installed distributions holding the top-level module ``top``: found beside it
    when one is named as it is (numpy's ``numpy-2.4.6.dist-info``), else from the table
    of every installed distribution (built once per cluster: it reads them all)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
        origin = Path(spec.origin)
        site = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        wanted = _normalized(top)
        try:
            entries = os.listdir(site)
        except OSError:
            entries = []
        for entry in entries:
            if entry.endswith(".dist-info") and _normalized(entry[:-10].rsplit("-", 1)[0]) == wanted:
                dist = importlib.metadata.Distribution.at(site / entry)
                record = dist.read_text("RECORD") or ""
                if any(line.split("/", 1)[0].split(".", 1)[0].split(",", 1)[0] == top
                       for line in record.splitlines()):
                    return [dist.metadata["Name"] or top]
    return _distributions_of().get(top, [])


def forget_installed() -> None:
    """Read anew which distributions are installed (a new cluster: something may have
    been installed since). A distribution's files, once hashed, are kept."""
    _distributions_of.cache_clear()


def _editable(dist: importlib.metadata.Distribution) -> bool:
    try:
        info = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    return bool(info.get("dir_info", {}).get("editable"))


def _requirement_names(dist: importlib.metadata.Distribution) -> tuple[str, ...]:
    """The distributions ``dist`` requires whatever extras are asked for."""
    names = []
    for line in dist.requires or ():
        requirement, _, marker = line.partition(";")
        if "extra" in marker:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(match.group(1))
    return tuple(names)


@lru_cache(maxsize=None)
def distribution_package(dist_name: str) -> Package | None:
    """The installed distribution ``dist_name`` whole (its record's files inside its
    installation directory); None if it is not installed or is an editable install
    (its code is the user's tree: see ``tree_package``)."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    record = dist.read_text("RECORD")
    if _editable(dist) or not record:
        return None
    import csv

    site = Path(str(dist.locate_file("")))
    files = []
    for row in csv.reader(record.splitlines()):
        rel = row[0] if row else ""
        if not rel or rel.startswith("../") or rel.startswith("/") or rel.endswith(SKIPPED_SUFFIXES) \
                or "__pycache__" in rel.split("/"):
            continue
        path = str(site / rel)
        if os.path.isfile(path):
            files.append((rel, path))
    name = dist.metadata["Name"] or dist_name
    return _package(name, dist.version or "", files, _requirement_names(dist), wheel_tags(dist),
                    remember=True)


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
    from clusterctl.api.env.needs import top_levels

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
        if top in done_tops:
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
