"""Making sure a node's host holds what a call needs before the call goes: asked once
per node (``envcheck``: which of these ids are missing?), each missing package sent
once (``envput``: its files, zipped; the node checks them against the id and installs
them in its host's cache as the agent's code is). A call's head then names the ids
(``env``), and the worker puts them first on its path."""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

from clusterctl import errors
from clusterctl.api.env.needs import modules_imported, modules_referred, top_levels
from clusterctl.api.env.platforms import cannot_load
from clusterctl.api.calls import answer_of
from clusterctl.api.pickling import dumps, is_plain
from clusterctl.session.connection import NodeConnection

if TYPE_CHECKING:  # (a call that needs nothing never imports importlib.metadata: 30 ms)
    from clusterctl.api.env.packages import Package

ENV_VARIABLE = "CLUSTERCTL_ENV"  # "off": ship nothing, use what the hosts have
LIMIT_VARIABLE = "CLUSTERCTL_ENV_LIMIT"  # megabytes a call's packages may hold, installed
DEFAULT_LIMIT_MB = 1024
SHIP_TIMEOUT = 600.0  # seconds a package may take to reach a host and be installed


def enabled() -> bool:
    return os.environ.get(ENV_VARIABLE, "").strip().lower() not in ("off", "0", "no", "false")


def limit_bytes() -> int:
    """The most a call's packages may hold (``CLUSTERCTL_ENV_LIMIT`` megabytes)."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    try:
        return int(float(text) * (1 << 20)) if text else DEFAULT_LIMIT_MB << 20
    except ValueError:
        raise errors.UsageError(f"{LIMIT_VARIABLE}={text!r} is not a number of megabytes") from None


def megabytes(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"


def over_limit(packages: list, limit: int) -> errors.UsageError | None:
    """The error for packages over ``limit`` bytes, naming the largest; None if within."""
    total = sum(p.size for p in packages)
    if total <= limit:
        return None
    largest = sorted(packages, key=lambda p: -p.size)[:5]
    parts = ", ".join(f"{p.describe()} ({megabytes(p.size)})" for p in largest)
    return errors.UsageError(
        f"the packages this call needs hold {megabytes(total)}, over the limit of "
        f"{megabytes(limit)}: {parts}",
        hint=f"set {LIMIT_VARIABLE} to more megabytes, or install them on the hosts and "
             f"ship nothing (--env off, {ENV_VARIABLE}=off)")


class Shipper:
    """One cluster's shipping: what each node holds (as far as it is known here), and
    the packages a call needs. Calls from several threads share it."""

    def __init__(self, on: bool | None = None) -> None:
        self.on = enabled() if on is None else on
        self.known: dict[str, set[str]] = {}  # node -> ids its host holds, as far as known
        self.sent = 0  # bytes shipped, for the curious (and the tests)
        self.report: Callable | None = None  # (node, package, bytes zipped): one was shipped
        self._lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}
        self._found: dict[frozenset, list[Package]] = {}  # top-level modules -> packages
        if "clusterctl.api.env.packages" in sys.modules:  # (what is installed is read anew)
            sys.modules["clusterctl.api.env.packages"].forget_installed()

    def packages(self, fn, module: str | None = None, arguments: Any = ()) -> list[Package]:
        """The packages a call needs on a node: of ``fn`` (a function, or several: a
        pipeline's stages; a name: ``module`` is then its module) and of ``arguments``;
        none when shipping is off. Found once per set of modules for this cluster: a new
        cluster (a new command) sees edits."""
        if not self.on:
            return []
        found: set[str] = set()
        for function in (fn if isinstance(fn, (list, tuple)) else (fn,)):
            if callable(function):
                found |= modules_imported(function)
        if module:
            found.add(module)
        if not is_plain(arguments):  # (plain data needs nothing: most calls' arguments)
            found |= modules_referred(dumps(arguments, "the arguments"))
        return self.packages_of(top_levels(found))

    def packages_of(self, tops: set[str]) -> list[Package]:
        """The packages the top-level modules ``tops`` need (see ``packages``)."""
        if not tops:
            return []
        from clusterctl.api.env.packages import packages_for, skip_by_value

        tops = frozenset(skip_by_value(set(tops)))
        if not tops:
            return []
        with self._lock:
            known = self._found.get(tops)
        if known is None:
            known = packages_for(set(tops))
            with self._lock:
                self._found[tops] = known
        error = over_limit(known, limit_bytes())
        if error is not None:
            raise error
        return known

    def ensure(self, conn: NodeConnection, packages: list[Package]) -> list[str]:
        """Ship to ``conn``'s node what it lacks of ``packages``; their ids, for the
        call's head. Local nodes run this controller's own interpreter and installed
        distributions: only the user's own trees go there."""
        if not packages or conn.restricted:
            return []
        if same_python(conn):
            packages = [p for p in packages if not p.version]
            if not packages:
                return []
        for package in packages:
            reason = cannot_load(package, conn.node, conn.hello or {})
            if reason is not None:
                raise errors.Refused(conn.node, reason, hint="compiled code loads only where its "
                                     "wheel was built for: the same machine, Python and a C "
                                     "library at least as new")
        ids = [p.code_id for p in packages]
        with self._lock:
            lock = self._node_locks.setdefault(conn.node, threading.Lock())
        with lock:
            held = self.held_ids(conn.node)
            wanted = [p for p in packages if p.code_id not in held]
            if wanted:
                head, _ = self._ask(conn, {"op": "envcheck", "ids": [p.code_id for p in wanted]})
                missing = set(head.get("missing") or ())
                for package in wanted:
                    if package.code_id in missing:
                        self._put(conn, package)
                    held.add(package.code_id)
        return ids

    def want(self, conn: NodeConnection, head: dict) -> None:
        """Answer ``conn``'s node when a running task imports what its host lacks
        (``envwant``, see the node's workers/wants.py), in a thread of its own, since the
        thread that reads must go on reading."""
        threading.Thread(target=self.answer_want, args=(conn, head), daemon=True,
                         name=f"clusterctl-envwant-{conn.node}").start()

    def answer_want(self, conn: NodeConnection, head: dict) -> None:
        """Ship what this Python has of the module a node's task asked for (as a call's
        packages are shipped) and answer with their ids; nothing when shipping is off, the
        node is a restricted host's, or the module is none of ours to ship; the error's
        one line when it cannot go there (a compiled package built for other hosts, one
        over the limit)."""
        module = head.get("module")
        answer: dict = {"op": "envgiven", "want": head.get("want"), "ids": []}
        try:
            if self.on and not conn.restricted and type(module) is str and module.isidentifier():
                packages = self.packages_of({module})
                answer["ids"] = self.ensure(conn, packages) if packages else []
        except errors.ClusterError as exc:
            answer["error"] = exc.one_line()
        except Exception as exc:  # noqa: BLE001 - the task waits: it gets the reason
            answer["error"] = f"could not ship {module}: {type(exc).__name__}: {exc}"
        try:
            conn.send(answer)
        except errors.ClusterError:
            pass  # (the connection is gone: the node forgets the ask with it)

    def held(self, conn: NodeConnection) -> list[dict]:
        """What ``conn``'s host holds: id, name, version, size, when last used (or None)."""
        import json

        _, payload = self._ask(conn, {"op": "envlist"})
        return json.loads(bytes(payload) or b"[]")

    def drop(self, conn: NodeConnection, ids: list[str]) -> list[str]:
        """Remove the packages ``ids`` from ``conn``'s host; those it removed."""
        with self._lock:
            self.held_ids(conn.node).difference_update(ids)
        head, _ = self._ask(conn, {"op": "envdrop", "ids": list(ids)})
        return list(head.get("dropped") or [])

    def held_ids(self, node: str) -> set[str]:
        return self.known.setdefault(node, set())

    def _put(self, conn: NodeConnection, package: Package) -> None:
        data = package.zipped()
        if self.report is not None:
            self.report(conn.node, package, len(data))
        self._ask(conn, {"op": "envput", "env": package.code_id, "name": package.describe()}, data)
        with self._lock:
            self.sent += len(data)

    def _ask(self, conn: NodeConnection, head: dict, payload: bytes = b"") -> tuple[dict, bytes]:
        pending = conn.request(head, payload)
        try:
            answer = answer_of(conn, pending, SHIP_TIMEOUT, "shipping the environment did not finish")
        except errors.RemoteError as exc:
            if exc.remote_type != "EnvironmentError":
                raise
            # the host's own words (no room, a cache that is not ours): one line, the host's
            raise errors.NodeError(conn.node, exc.remote_message) from None
        return answer, pending.payload


def same_python(conn: NodeConnection) -> bool:
    """Whether ``conn``'s node runs this controller's own interpreter on this host (a
    local node): it has the installed distributions this controller has."""
    hello = conn.hello or {}
    return hello.get("executable") == sys.executable and hello.get("host") == socket.gethostname()
