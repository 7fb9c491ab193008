"""What tracing costs: throughput with tracing on against off, in the same run, on the
same world, and the size of the trace file per thousand items.

    python bench/trace.py [--quick] [--repeat 3]

1. CPU-bound pmap: items of ``--cpu-ms`` ms of pure-Python work on the default world
   (a slot per CPU). Goal: tracing on keeps at least 95% of the throughput.
2. Tiny tasks: ``x + 1`` over many items (chunks of thousands). Goal: at least 75%.
3. Tracing off against off: the noise of the machine, so the figures above can be read
   (tracing off runs the same code as before tracing existed but for one test per task).

Runs alternate on and off, and each figure is the best of ``--repeat``; the world is
warmed first. The trace is written to a temporary file and its size divided by the
items (a node records one event per chunk, the controller one per chunk sent).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from isolation import private_dirs
from report import Rows

LOOPS = 40_000


def crunch(x):
    total = 0
    for i in range(LOOPS):
        total += i * i % 7
    return total + x


def inc(x):
    return x + 1


def best(repeat: int, measure) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        measure()
        times.append(time.perf_counter() - started)
    return min(times)


def calibrate(ms: float) -> None:
    global LOOPS
    started = time.process_time()
    crunch(0)
    spent = time.process_time() - started
    LOOPS = max(1000, int(LOOPS * (ms / 1000.0) / max(spent, 1e-6)))


def figures(args, rows: Rows) -> None:
    from clusterctl import Cluster
    from clusterctl.config.hosts import default_world

    with Cluster(default_world()) as cluster:
        cluster.world()
        list(cluster.pmap(inc, range(1000)))
        workdir = tempfile.mkdtemp(prefix="ccbench-trace-")
        try:
            for what, fn, n, goal in (("CPU-bound", crunch, args.cpu_items, 0.95),
                                      ("tiny", inc, args.tiny_items, 0.75)):
                path = os.path.join(workdir, f"{what}.json")

                def off() -> None:
                    assert sum(1 for _ in cluster.pmap(fn, range(n))) == n

                def on() -> None:
                    with cluster.trace(path):
                        off()

                t_off = t_on = float("inf")
                for _ in range(args.repeat):  # alternating, so drift hits both alike
                    t_off = min(t_off, best(1, off))
                    t_on = min(t_on, best(1, on))
                size = os.path.getsize(path)
                rows.add(f"{what}: pmap x {n:,}, tracing on vs off", f"{n / t_on:,.0f} items/s",
                         f"{n / t_off:,.0f} items/s (off)", t_off / t_on, goal)
                rows.note(f"  (info) trace file, {what}", f"{size / n * 1000:,.0f} bytes per 1,000 items "
                          f"({size / 1e6:.2f} MB)")
                if what == "tiny":
                    t_again = best(args.repeat, off)
                    rows.add("tiny: tracing off vs off (noise)", f"{n / t_again:,.0f} items/s",
                             f"{n / t_off:,.0f} items/s", t_off / t_again, None)
        finally:
            for name in os.listdir(workdir):
                os.unlink(os.path.join(workdir, name))
            os.rmdir(workdir)
            cluster.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats")
    parser.add_argument("--cpu-items", type=int, default=200)
    parser.add_argument("--cpu-ms", type=float, default=10.0)
    parser.add_argument("--tiny-items", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.cpu_items, args.tiny_items, args.repeat = 40, 100_000, 1
    calibrate(args.cpu_ms)
    rows = Rows()
    with private_dirs("ccbench-trace-"):
        figures(args, rows)
    rows.print()
    print(f"({os.cpu_count()} CPUs; best of {args.repeat}; Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
