"""What the hub knows of nodes, of every command's world: the ones it watches (kept in
``watched.json``, so that a hub that replaces a killed one watches them again) and the
ones it opened a stream to. ``down --all`` asks for them all, to stop the nodes of
worlds it has no hosts file of."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Callable

from clusterctl.config.hosts import HostSpec
from clusterctl.hub import place
from clusterctl.hub.connections import POOL_KEYS

WATCHED_VERSION = 1  # of the format of ``watched.json``


class KnownNodes:
    """The hub's nodes: ``watched``, node -> the world request that watches it (kept in
    the hub's directory as ``watched.json``), and those only reached by a stream, node ->
    (spec, SSH options), until a command stops them through the hub."""

    def __init__(self, directory: place.HubDir, pool_key: Callable[[dict], tuple],
                 log: Callable[[str], None]) -> None:
        self.directory = directory
        self.pool_key = pool_key  # the pool of a set of SSH options (``Connections.pool_key``)
        self.log = log
        self.watched: dict[str, dict] = {}
        self._reached: dict[str, tuple[HostSpec, dict]] = {}
        self._lock = threading.Lock()
        self._saving = threading.Lock()  # one writer of watched.json at a time

    def remembered(self) -> dict[str, dict]:
        """The nodes a hub before this one watched (``watched.json``); none if the file
        is missing or malformed (said in the log). An older hub's pickle is removed
        unread: loading a pickle runs what it says."""
        if self.directory.remove(place.OLD_WATCHED):
            self.log(f"removed {self.directory.file(place.OLD_WATCHED)} unread (an older hub's; "
                     "its nodes are watched again by the next world)")
        try:
            return read_watched(self.directory)
        except (OSError, RuntimeError, ValueError) as exc:
            self.log(f"{self.directory.file(place.WATCHED)} ignored: {exc}")
            return {}

    def remember(self, args: dict) -> None:
        """Keep which nodes a world request watches, and how, for a hub that replaces this one."""
        with self._lock:
            for spec in args["specs"]:
                self.watched[spec.name] = dict(args, specs=[spec], start=False)
        self.save()

    def reached(self, spec: HostSpec, ssh: dict) -> None:
        """A command opened a stream to the node of ``spec``."""
        with self._lock:
            self._reached[spec.name] = (spec, dict(ssh))

    def stopped(self, spec: HostSpec) -> None:
        """A command stopped the node of ``spec`` through the hub: it is no longer one
        that runs (a watched one says so itself, with its ``bye``)."""
        with self._lock:
            kept = self._reached.get(spec.name)
            if kept is not None and _same_place(kept[0], spec):
                del self._reached[spec.name]

    def forget(self, forgotten: list[tuple[tuple, HostSpec]]) -> None:
        """No longer keep the watches ``Watches.forget_lost`` gave up on: (pool key, spec)."""
        with self._lock:
            for pool_key, spec in forgotten:
                args = self.watched.get(spec.name)
                if args is not None and self.pool_key(args["ssh"]) == pool_key and \
                        _same_place(args["specs"][0], spec):
                    del self.watched[spec.name]
        self.save()

    def describe(self, states: dict[str, str]) -> list[dict]:
        """Every node known, watched ones first: {spec, ssh, state}, the state from
        ``states`` (node -> "up", "lost", "connecting", "stopped"), else "lost" for a
        watched node and "reached" for one only reached by a stream."""
        with self._lock:
            watched = [(args["specs"][0], dict(args["ssh"])) for args in self.watched.values()]
            reached = [kept for name, kept in self._reached.items() if name not in self.watched]
        return [{"spec": spec, "ssh": ssh, "state": states.get(spec.name, "lost")} for spec, ssh in watched] + \
               [{"spec": spec, "ssh": ssh, "state": states.get(spec.name, "reached")} for spec, ssh in reached]

    def save(self) -> None:
        with self._saving:
            try:
                with self._lock:
                    data = watched_to_json(self.watched)
                self.directory.write(place.WATCHED, data)
            except (OSError, RuntimeError, TypeError, ValueError) as exc:
                self.log(f"cannot keep the watched nodes in {self.directory.file(place.WATCHED)}: {exc}")


def read_watched(directory: place.HubDir) -> dict[str, dict]:
    """The nodes in the hub directory's ``watched.json`` (``watched_from_json``); none if
    there is no such file (a hub that stopped cleanly removed it)."""
    data = directory.read(place.WATCHED)
    return {} if data is None else watched_from_json(data)


def _same_place(kept: HostSpec, spec: HostSpec) -> bool:
    """Whether two specs name one node (as ``Watches`` tells them apart: by name, host,
    user and port)."""
    return (kept.name, kept.host, kept.user, kept.port) == (spec.name, spec.host, spec.user, spec.port)


def rewatch_requests(remembered: dict[str, dict]) -> list[dict]:
    """The world requests that watch the remembered nodes again, none started: one for
    each set of settings, with every node that shares it (watched side by side, as one
    command's world is), in the order the nodes were first watched."""
    merged: dict[str, dict] = {}
    for args in remembered.values():
        settings = {key: value for key, value in args.items() if key != "specs"}
        key = json.dumps(settings, sort_keys=True)
        if key in merged:
            merged[key]["specs"] += args["specs"]
        else:
            merged[key] = dict(settings, specs=list(args["specs"]), start=False)
    return list(merged.values())


# -- watched.json: what a new hub needs to watch a node again, and nothing that runs -------

def watched_to_json(watched: dict[str, dict]) -> bytes:
    """``watched.json``: per node, its hosts-file line, how its host is resolved (the
    SSH files), the command's timeout, heartbeat and limits. JSON, since loading a
    pickle runs code, and the file is only as safe as the directory it is in."""
    nodes = [{"spec": dataclasses.asdict(args["specs"][0]),
              "ssh": {key: args["ssh"][key] for key in POOL_KEYS if args["ssh"].get(key) is not None},
              "timeout": args["timeout"], "heartbeat": list(args["heartbeat"]),
              "limits": {"idle": args["limits"]["idle"], "max_payload": args["limits"]["max_payload"]}}
             for args in watched.values()]
    return json.dumps({"version": WATCHED_VERSION, "nodes": nodes}, indent=1).encode()


def watched_from_json(data: bytes) -> dict[str, dict]:
    """The nodes of ``watched.json``, node -> the world request that watches it (none
    started); ValueError, saying what is wrong, for anything ``watched_to_json`` does
    not write."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != WATCHED_VERSION or \
            not isinstance(doc.get("nodes"), list):
        raise ValueError(f"not a list of watched nodes (version {WATCHED_VERSION})")
    remembered = {}
    for entry in doc["nodes"]:
        args = _rewatch_args(entry)
        remembered[args["specs"][0].name] = args
    return remembered


_JSON_TYPES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "None": (None,)}


def _field_types(annotation: str) -> tuple:
    """The JSON values a HostSpec field of ``annotation`` ("int | None") may hold (none,
    for a type JSON has not: a file with such a field is then refused, not misread)."""
    return tuple(kind for name in annotation.split("|") for kind in _JSON_TYPES.get(name.strip(), ()))


_SPEC_TYPES = {f.name: _field_types(f.type) for f in dataclasses.fields(HostSpec)}
_SPEC_REQUIRED = {f.name for f in dataclasses.fields(HostSpec)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
_SSH_TYPES = {"config_file": (str,), "known_hosts": (str,), "accept_new_host_keys": (bool,)}


def _rewatch_args(entry) -> dict:
    """One node of ``watched.json`` as the world request that watches it again."""
    _expect(entry, {"spec", "ssh", "timeout", "heartbeat", "limits"}, "a watched node")
    spec = entry["spec"]
    _expect(spec, set(_SPEC_TYPES), "a node's spec", required=_SPEC_REQUIRED)
    for key, value in spec.items():
        _typed(value, _SPEC_TYPES[key], f"the spec's {key}")
    if not spec["name"] or "/" in spec["name"] or "\0" in spec["name"] or spec["name"] in (".", ".."):
        raise ValueError(f"the node name {spec['name']!r} is not one")
    ssh = entry["ssh"]
    _expect(ssh, set(_SSH_TYPES), "a node's SSH options", required=set())
    for key, value in ssh.items():
        _typed(value, _SSH_TYPES[key], f"the SSH option {key}")
    heartbeat, limits = entry["heartbeat"], entry["limits"]
    if not isinstance(heartbeat, list) or len(heartbeat) != 2:
        raise ValueError("a node's heartbeat is not [interval, timeout]")
    _expect(limits, {"idle", "max_payload"}, "a node's limits")
    for value, what in ((entry["timeout"], "timeout"), (heartbeat[0], "heartbeat interval"),
                        (heartbeat[1], "heartbeat timeout"), (limits["idle"], "idle limit")):
        _positive(value, (float, int), what)
    _positive(limits["max_payload"], (int,), "payload limit")
    return {"specs": [HostSpec(**spec)], "ssh": dict(ssh), "start": False,
            "timeout": entry["timeout"], "heartbeat": tuple(heartbeat),
            "limits": {"idle": limits["idle"], "max_payload": limits["max_payload"]}}


def _expect(value, keys: set, what: str, required: set | None = None) -> None:
    """``value`` is a JSON object with no key but ``keys``, and every one of
    ``required`` (all of ``keys`` if None)."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    if not set(value) <= keys or not (keys if required is None else required) <= set(value):
        raise ValueError(f"{what} has the keys {sorted(value)}, not {sorted(keys)}")


def _typed(value, kinds: tuple, what: str) -> None:
    """``value`` is of one of ``kinds`` (None stands for null; a bool is not an int)."""
    if value is None:
        ok = None in kinds
    elif isinstance(value, bool):
        ok = bool in kinds
    else:
        ok = isinstance(value, tuple(k for k in kinds if k is not None and k is not bool))
    if not ok:
        raise ValueError(f"{what} is {value!r}")


def _positive(value, kinds: tuple, what: str) -> None:
    _typed(value, kinds, what)
    if not value > 0:
        raise ValueError(f"{what} is {value!r}")
