"""A map's options, checked once, before anything is read or sent."""

from __future__ import annotations

import math
from dataclasses import dataclass

from clusterctl import errors
from clusterctl.api.pmap.tuning import DEFAULT_POISON_AFTER

ON_ERROR = ("raise", "skip", "collect")


@dataclass
class Options:
    """What ``pmap`` was asked for (its docstring says what each means).

    ``on_error`` is also ``"values"`` when ``outcomes()`` hands errors out as values.
    """

    ordered: bool = True
    chunksize: int | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] | None = None
    on_error: str = "raise"
    poison_after: int = DEFAULT_POISON_AFTER
    speculate: bool = True
    item_timeout: float | None = None
    max_inflight: int | None = None  # chunks in flight over all nodes (a pipeline stage's replicas)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise errors.UsageError(f"on_error must be one of {', '.join(ON_ERROR)}, "
                                    f"not {self.on_error!r}")
        check_count("chunksize", self.chunksize, least=1, optional=True)
        check_count("retries", self.retries, least=0)
        check_count("poison_after", self.poison_after, least=1)
        check_count("max_inflight", self.max_inflight, least=1, optional=True)
        timeout = self.item_timeout
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                    or not 0 < timeout < math.inf:
                raise errors.UsageError(f"item_timeout must be a number of seconds above 0, "
                                        f"not {timeout!r}")
            self.item_timeout = float(timeout)


def check_count(name: str, value, *, least: int, optional: bool = False) -> None:
    """Raise a UsageError unless ``value`` is an int of at least ``least`` (or None, if
    ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = "a positive integer" if least == 1 and optional else \
            f"{least} or more"
        raise errors.UsageError(f"{name} must be {what}, not {value!r}")
