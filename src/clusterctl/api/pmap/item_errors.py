"""How items fail: one item (``ItemError``, ``PoisonItem``, ``ItemTimeout``), several
(``ItemErrors``), or the whole run (``AllNodesLost``)."""

from __future__ import annotations

from clusterctl import errors


class ItemError(errors.RemoteError):
    """One item failed: its function raised (after its retries), or it crashed workers.

    ``index`` is the item's position in the input, ``node`` where it last ran,
    ``remote_traceback`` the traceback there, ``attempts`` how often it was tried.
    """

    def __init__(self, index: int, node: str, remote_type: str, remote_message: str,
                 remote_traceback: str = "", *, exception: BaseException | None = None,
                 attempts: int = 1) -> None:
        super().__init__(node, remote_type, remote_message, remote_traceback, exception=exception)
        self.index = index
        self.attempts = attempts
        tries = f" (tried {attempts} times)" if attempts > 1 else ""
        self.message = f"item {index} failed on {node}: {remote_type}: {remote_message}{tries}"

    def __reduce__(self):
        return (_rebuild_item_error, (self.__class__, self.index, self.node, self.remote_type,
                                      self.remote_message, self.remote_traceback, self.attempts))


class ItemTimeout(Exception):
    """What an item that ran longer than ``item_timeout`` fails with (as the
    ``exception`` of its ``ItemError``, whose ``remote_type`` is ``"ItemTimeout"``);
    list it in ``retry_on`` to retry such items."""


class PoisonItem(ItemError):
    """An item that crashed the worker (or took its node down) every time it ran."""

    def __init__(self, index: int, node: str, remote_type: str, remote_message: str,
                 remote_traceback: str = "", *, exception: BaseException | None = None,
                 attempts: int = 1) -> None:
        super().__init__(index, node, remote_type, remote_message, remote_traceback,
                         exception=exception, attempts=attempts)
        self.message = (f"item {index} is poison: it crashed a worker or lost its node each of "
                        f"the {attempts} times it ran (last on {node}: {remote_message}); "
                        "it was not retried further")


def _rebuild_item_error(cls, index, node, remote_type, remote_message, remote_traceback, attempts):
    return cls(index, node, remote_type, remote_message, remote_traceback, attempts=attempts)


class ItemErrors(errors.ClusterError):
    """``on_error="collect"``: the map finished, and these items failed (exit code 3)."""

    exit_code = errors.EXIT_SOME_NODES_FAILED

    def __init__(self, failures: list[ItemError], total: int) -> None:
        first = failures[0]
        more = f"; the first: {first.message}" if failures else ""
        super().__init__(f"{len(failures)} of {total} items failed{more}")
        self.failures = failures
        self.total = total


class AllNodesLost(errors.ClusterError):
    """No node is left to run the remaining items."""

    def __init__(self, message: str, *, completed: int, reasons: dict[str, str]) -> None:
        super().__init__(message, hint="check the nodes with `clusterctl world`; the items that "
                                       "completed were returned")
        self.completed = completed
        self.reasons = reasons
