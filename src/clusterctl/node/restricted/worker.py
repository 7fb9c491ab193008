"""A restricted node's worker: calls functions by name, with plain data, never unpickling.

The node's gate (``Policy.refuses``, in ``Sessions.handle``) turns away what the policy
does not allow before it reaches a worker; this worker checks again, so a message that
got past the gate still runs nothing the owner did not list, and nothing it receives
goes near ``pickle``. Only the worker can check the function itself, once imported: a
pattern ``allow mod.*`` matches a name, and the name must be of a function ``mod``
defines (``Policy.admits``), not one it imported. It also holds the owner's limits:
nice level, address space and import path, set in the forked child before its first
task.

See docs/how-it-works.md, "Restricted hosts".
"""

from __future__ import annotations

import os
import sys

from .policy import Policy
from ..workers.worker import Worker, _LoadFailure, error_frame, refused, worker_main


class PlainWorker(Worker):
    """``Worker`` with its three ways in narrowed: a definition (a pickled function) is
    refused, and a call or a map must name an allowed function and carry plain data
    (``Worker.plain_call``, ``Worker.plain_map``): the pickled paths are never taken.
    It asks nobody for a module it lacks: it runs only what the host's owner installed."""

    ASKS = False

    def __init__(self, sock, node: str, policy: Policy) -> None:
        super().__init__(sock, node)
        self.policy = policy

    def define(self, key: str, payload, env=None) -> None:
        self.functions[key] = _LoadFailure(refused("a restricted host takes no pickled code", self.node))

    def call(self, head: dict, payload) -> bytes:
        why = self.policy.refuses(head)
        if why is not None:
            return error_frame(head.get("id"), refused(why, self.node))
        return self.plain_call(head, payload)

    def map(self, head: dict, payload) -> bytes:
        why = self.policy.refuses(head)
        if why is not None:
            return error_frame(head.get("id"), refused(why, self.node))
        return self.plain_map(head, payload)

    def _plain_task(self, head: dict, payload, decode, what: str):
        """``Worker``'s, with the function found checked against the policy before it is
        called: a name a pattern matches may still be something its module imported."""
        function, data, failed = super()._plain_task(head, payload, decode, what)
        if failed is None and not self.policy.admits(head["mod"], head["fun"], function):
            why = self.policy.refusal_of(head["mod"], head["fun"], function)
            return None, (None, None), error_frame(head.get("id"), refused(why, self.node))
        return function, data, failed


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
