"""Warm rpc round-trip latency to a local node, against a bare multiprocessing pipe.

    python bench/rpc_latency.py [--n 5000]

Measured in one run, on one machine, so the ratio is what counts:

- the baseline: a ``multiprocessing.Pipe`` echo between two processes (a round trip
  of a small pickled object, the least any process-to-process call can cost);
- ``Cluster.rpc(node, "operator.add", 1, 2)``: a function named by module, so the
  node imports it once and nothing but the arguments travel pickled;
- ``Cluster.rpc(node, lambda x: x + 1, 1)``: a function that travels by value;
- the start-up time of ``clusterctl --help`` (best of 5 fresh processes).

The node runs in private XDG directories under a temporary directory and is brought
down at the end, also when the benchmark fails.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time

from isolation import private_dirs


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``samples`` in microseconds."""
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1e6, p99 * 1e6


def timed(call, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    clock = time.perf_counter
    samples = []
    for _ in range(n):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return samples


def _echo(conn) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        conn.send(msg)


def pipe_baseline(n: int, warmup: int) -> list[float]:
    """Round trips of ``(1, 2)`` through a multiprocessing pipe to an echo process."""
    ctx = mp.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_echo, args=(theirs,), daemon=True)
    proc.start()
    theirs.close()
    try:
        def call():
            ours.send((1, 2))
            ours.recv()

        return timed(call, n, warmup)
    finally:
        ours.send(None)
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def help_startup(runs: int = 5) -> float:
    """Best wall time of ``clusterctl --help`` in a fresh interpreter, in seconds."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clusterctl", "--help"], check=True,
                       stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def rpc_latencies(n: int, warmup: int) -> dict[str, list[float]]:
    from clusterctl import Cluster
    from clusterctl.config.hosts import HostSpec

    specs = [HostSpec(name="bench", target="local", slots=1)]
    results: dict[str, list[float]] = {}
    cluster = Cluster(specs)
    try:
        cluster.world()
        results["rpc operator.add"] = timed(lambda: cluster.rpc("bench", "operator.add", 1, 2),
                                            n, warmup)
        results["rpc lambda (by value)"] = timed(lambda: cluster.rpc("bench", lambda x: x + 1, 1),
                                                 n, warmup)
        conn = cluster.connect("bench")
        results["ping (no worker)"] = timed(lambda: conn.ping(10.0), n, warmup)
    finally:
        cluster.close()
        with Cluster(specs) as closer:
            closer.down()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="round trips per measurement")
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    with private_dirs("ccbench"):
        baseline = pipe_baseline(args.n, args.warmup)
        rpcs = rpc_latencies(args.n, args.warmup)
        startup = help_startup()

    base50, base99 = percentiles(baseline)
    print(f"{'round trip':28} {'p50 µs':>9} {'p99 µs':>9} {'p50 / pipe':>11}")
    print(f"{'multiprocessing.Pipe echo':28} {base50:9.1f} {base99:9.1f} {1.0:10.2f}x")
    for name, samples in rpcs.items():
        p50, p99 = percentiles(samples)
        print(f"{name:28} {p50:9.1f} {p99:9.1f} {p50 / base50:10.2f}x")
    print(f"clusterctl --help start-up: {startup * 1e3:.0f} ms (best of 5)")
    print(f"({args.n} round trips each, after {args.warmup} warm-up calls; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
