"""One function over many nodes at once, in threads, with Ctrl-C never held up."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

MAX_PARALLEL = 32  # nodes connected or called at once


def in_parallel(names: list[str], fn: Callable[[str], Any],
                on_interrupt: Callable[[], None] | None = None) -> list[Any]:
    """``fn`` of every name, run concurrently (at most ``MAX_PARALLEL`` at a time), in
    the order of ``names``; the first exception raised by ``fn`` is raised here.

    The threads are daemons and the caller waits in short, interruptible steps, so
    Ctrl-C is never held up by a call still in flight: ``on_interrupt`` (cancel what
    was sent) runs, and ``KeyboardInterrupt`` goes on up; closing the cluster then
    ends the threads' waits.
    """
    if len(names) <= 1:
        return [fn(n) for n in names]
    results: list[Any] = [None] * len(names)
    todo: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()
    for job in enumerate(names):
        todo.put(job)

    def work() -> None:
        while not todo.empty():
            try:
                i, name = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((i, True, fn(name)))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                done.put((i, False, exc))

    for k in range(min(MAX_PARALLEL, len(names))):
        threading.Thread(target=work, name=f"clusterctl-call-{k}", daemon=True).start()
    try:
        for _ in names:
            answer = None
            while answer is None:  # short waits: Ctrl-C gets through between them
                try:
                    answer = done.get(timeout=0.2)
                except queue.Empty:
                    pass
            i, ok, value = answer
            if not ok:
                raise value
            results[i] = value
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        raise
    return results
