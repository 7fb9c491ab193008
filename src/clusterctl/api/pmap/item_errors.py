"""How items fail: one item (``ItemError``, ``PoisonItem``, ``ItemTimeout``), several
(``ItemErrors``), or the whole run (``AllNodesLost``)."""

from __future__ import annotations

from clusterctl import errors


class ItemError(errors.RemoteError):
    """One item failed: its function raised (after its retries), or it crashed workers.

    ``index`` is the item's position in the input, ``node`` where it last ran,
    ``remote_traceback`` the traceback there, ``attempts`` how often it was tried, and
    ``where`` the part of the work it failed in (a pipeline's stage), if known.
    """

    def __init__(self, index: int, node: str, remote_type: str, remote_message: str,
                 remote_traceback: str = "", *, exception: BaseException | None = None,
                 attempts: int = 1, where: str | None = None) -> None:
        super().__init__(node, remote_type, remote_message, remote_traceback, exception=exception)
        self.index = index
        self.attempts = attempts
        self.locate(where)

    def locate(self, where: str | None) -> None:
        """Say which part of the work (``"stage 2 (parse)"``) the item failed in."""
        self.where = where
        self.message = self._describe(f" in {where}" if where else "")

    def _describe(self, in_where: str) -> str:
        tries = f" (tried {self.attempts} times)" if self.attempts > 1 else ""
        return (f"item {self.index} failed{in_where} on {self.node}: {self.remote_type}: "
                f"{self.remote_message}{tries}")

    def __reduce__(self):
        return (_rebuild_item_error, (self.__class__, self.index, self.node, self.remote_type,
                                      self.remote_message, self.remote_traceback, self.attempts,
                                      self.where))


class ItemTimeout(Exception):
    """What an item that ran longer than ``item_timeout`` fails with (as the
    ``exception`` of its ``ItemError``, whose ``remote_type`` is ``"ItemTimeout"``);
    list it in ``retry_on`` to retry such items."""


class PoisonItem(ItemError):
    """An item that crashed the worker (or took its node down) every time it ran."""

    def _describe(self, in_where: str) -> str:
        return (f"item {self.index} is poison{in_where}: it crashed a worker or lost its node "
                f"each of the {self.attempts} times it ran (last on {self.node}: "
                f"{self.remote_message}); it was not retried further")


def _rebuild_item_error(cls, index, node, remote_type, remote_message, remote_traceback, attempts,
                        where=None):
    return cls(index, node, remote_type, remote_message, remote_traceback, attempts=attempts,
               where=where)


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
