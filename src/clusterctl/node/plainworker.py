"""A restricted node's worker: calls functions by name, with plain data, never unpickling.

The node's gate (``Policy.refuses``, in ``Sessions.handle``) turns away what the policy
does not allow before it reaches a worker; this worker checks again, so a message that
got past the gate still runs nothing the owner did not list, and nothing it receives
goes near ``pickle``. It also holds the owner's limits: nice level, address space and
import path, set in the forked child before its first task.

See docs/how-it-works.md, "Restricted hosts".
"""

from __future__ import annotations

import os
import sys
import time

from . import plain, wire
from .policy import Policy
from .worker import Worker, _LoadFailure, describe_exception, error_frame, resolve_by_name, worker_main


def refused(message: str, node: str) -> dict:
    """A refusal as a result's error: one line, no traceback."""
    return {"type": "Refused", "message": message, "traceback": "", "node": node, "kind": "refused"}


def not_plain_result(exc: plain.PlainDataError, node: str) -> dict:
    return {"type": "PlainDataError", "message": "the result is not plain data: %s" % exc,
            "traceback": "", "node": node, "kind": "unpicklable",
            "hint": "a restricted host sends results as JSON: return numbers, strings, lists, "
                    "dicts, tuples or bytes"}


class PlainWorker(Worker):
    """``Worker`` with its three ways in replaced: a definition (a pickled function) is
    refused, and a call or a map takes a module function by name and plain data."""

    def __init__(self, sock, node: str, policy: Policy) -> None:
        super().__init__(sock, node)
        self.policy = policy

    def define(self, key: str, payload) -> None:
        self.functions[key] = _LoadFailure(refused(
            "a restricted host takes no pickled code", self.node))

    def _refusal(self, head: dict) -> dict | None:
        why = self.policy.refuses(head)
        return None if why is None else refused(why, self.node)

    def call(self, head: dict, payload) -> bytes:
        task_id = head.get("id")
        problem = self._refusal(head)
        if problem is not None:
            return error_frame(task_id, problem)
        try:
            args, kwargs = decode_arguments(payload)
        except plain.PlainDataError as exc:
            return error_frame(task_id, refused("the arguments are not plain data: %s" % exc, self.node))
        try:
            fn = resolve_by_name(head["mod"], head["fun"])
        except BaseException as exc:  # noqa: BLE001
            return error_frame(task_id, describe_exception(exc, self.node, "import", 0))
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the exception goes back as text only
            return error_frame(task_id, describe_exception(exc, self.node))
        try:
            return wire.encode_ok_result(task_id, plain.dumps(value))
        except plain.PlainDataError as exc:
            return error_frame(task_id, not_plain_result(exc, self.node))

    def map(self, head: dict, payload) -> bytes:
        """A batch of items for one function; the reply is plain data's JSON of
        ``[seconds, all_ok, data]`` as ``Worker.map`` gives it, an outcome being
        ``[true, value]`` or ``[false, error dict]``."""
        task_id = head.get("id")
        problem = self._refusal(head)
        if problem is not None:
            return error_frame(task_id, problem)
        try:
            items = plain.loads(payload)
            if type(items) is not list:
                raise plain.PlainDataError("a map's items must be a list, not %s" % plain.kind_of(items))
        except plain.PlainDataError as exc:
            return error_frame(task_id, refused("the items are not plain data: %s" % exc, self.node))
        try:
            fn = resolve_by_name(head["mod"], head["fun"])
        except BaseException as exc:  # noqa: BLE001
            return error_frame(task_id, describe_exception(exc, self.node, "import", 0))
        started = time.perf_counter()
        outcomes = []
        for item in items:
            try:
                outcomes.append([True, fn(item)])
            except BaseException as exc:  # noqa: BLE001
                outcomes.append([False, describe_exception(exc, self.node)])
        spent = time.perf_counter() - started
        if all(ok for ok, _ in outcomes):
            try:
                return wire.encode_ok_result(task_id, plain.dumps([spent, True, [v for _, v in outcomes]]))
            except plain.PlainDataError:
                pass  # find which result could not travel
        checked = []
        for ok, value in outcomes:
            if ok:
                try:
                    plain.dumps(value)
                except plain.PlainDataError as exc:
                    ok, value = False, not_plain_result(exc, self.node)
            checked.append([ok, value])
        return wire.encode_ok_result(task_id, plain.dumps([spent, False, checked]))


def decode_arguments(payload) -> tuple[list, dict]:
    """A call's ``[args, kwargs]`` from plain data's JSON."""
    value = plain.loads(payload)
    if not (type(value) is list and len(value) == 2 and type(value[0]) is list and type(value[1]) is dict):
        raise plain.PlainDataError("a call's payload must be [arguments, keyword arguments]")
    if not all(type(k) is str for k in value[1]):
        raise plain.PlainDataError("keyword argument names must be strings")
    return value[0], value[1]


def apply_limits(policy: Policy) -> None:
    """The owner's limits on this worker process: its import path, nice level and address
    space. Lowering a limit or raising niceness is always allowed, so this fails only on a
    broken system, and then the worker does not run (the error is in the node's log)."""
    sys.path[:0] = [p for p in policy.paths if p not in sys.path]
    if policy.nice is not None:
        current = os.nice(0)
        if policy.nice > current:
            os.nice(policy.nice - current)
    if policy.memory is not None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = policy.memory if hard == resource.RLIM_INFINITY else min(policy.memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def plain_worker_main(sock, node: str, parent_pid: int, policy: Policy) -> None:
    """Entry point in a restricted node's forked child. Never returns."""

    def make(sock, node):
        apply_limits(policy)
        return PlainWorker(sock, node, policy)

    worker_main(sock, node, parent_pid, make)
