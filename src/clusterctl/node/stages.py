"""A pipeline's consecutive stages, run as one function on a worker.

Each item goes through the stages in turn in one worker, with nothing pickled between
them, and the seconds each stage took come back with its result: so every stage's
service time is still measured on its own. The controller ships this class by value
(the node's package has another name on a host), together with the stage functions.
"""

from __future__ import annotations

import time


class Stages:
    """``functions`` applied in turn; an item's result is ``(value, seconds per stage)``.

    If a stage raises, ``failed_in`` names it (``labels``) for the worker's report, and
    ``wrapper_frames`` tells the worker to leave this frame out of the traceback."""

    wrapper_frames = 1

    def __init__(self, functions, labels) -> None:
        self.functions = tuple(functions)
        self.labels = tuple(labels)
        self.failed_in = None

    def __call__(self, item):
        clock = time.perf_counter
        times = []
        value = item
        for i, fn in enumerate(self.functions):
            started = clock()
            try:
                value = fn(value)
            except BaseException:
                self.failed_in = self.labels[i]
                raise
            times.append(clock() - started)
        return value, tuple(times)
