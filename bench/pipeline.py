"""Pipeline throughput and figures against their bounds and baselines, each measured in
the same run on the same machine.

    python bench/pipeline.py [--quick] [--items 4000] [--pinned-items 2000]
                             [--cpu-items 300] [--cpu-ms 5] [--repeat 2]

1. Sleeping stages: three stages that sleep 1, 4 and 1 ms, on one local node of 8 slots
   (hosts file ``local slots=8``), over ``--items`` items. The stages are fused into one
   farm, so the bound is the slots over the summed service times: 8 / 6 ms = 1333
   items/s. Goal: at least 85% of the bound.
2. The same against what is written by hand without clusterctl: three
   ``multiprocessing.Pool``s with the 8 slots split evenly (3, 3, 2), chained with
   ``imap``. The 4 ms stage has 3 of the 8 slots there, so it holds the chain to about
   750 items/s. Goal: clusterctl at least 1.5x its throughput.
3. A pinned stage: the 4 ms stage pinned to a node of 2 slots (hosts file ``local
   name=a slots=2`` and ``local name=b slots=6``), the 1 ms stages on the other node,
   over ``--pinned-items`` items. The pinned stage bounds the run at 2 / 4 ms = 500
   items/s. Goals: its ρ at least 0.9, the other stages' ρ below it, and throughput at
   least 90% of its bound. The bottleneck the pipeline names is printed beside them.
4. CPU-bound stages: three pure-Python loops of ``--cpu-ms`` ms of CPU an item each (the
   loop is calibrated in this process first), on the default world (one local node, a
   slot per CPU), against the same composition run sequentially in this process; the
   speedup is printed against the ideal, the number of CPUs. The same composition on a
   ``multiprocessing.Pool`` of as many workers is printed beside it, and the CPUs other
   processes kept busy while the sequential loop ran: on a shared machine two busy
   cores rarely give twice one, and a core taken by someone else halves the ideal.

Every timed figure is steady throughput: each world is brought up (``Cluster.world()``)
and a short pipeline of the same stages run through it before any timing, so starting
the nodes, forking their workers and shipping the functions are not counted. Every
figure is the best of ``--repeat`` runs, the baseline's runs interleaved with
clusterctl's. Each world runs in private XDG directories under a temporary directory of
its own (bench/isolation.py); its nodes are brought down at the end, also when the
benchmark fails, and any node process of it still running afterwards is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import resource
import sys
import time
from typing import Iterator

from isolation import private_dirs
from report import Rows, stray_nodes

CORES = os.cpu_count() or 1
LOOPS = 20_000  # iterations of crunch's loop: set by calibrate() to --cpu-ms of CPU


# -- the stages (module level: shipped by value) ------------------------------------------

def nap_1ms(x):
    time.sleep(0.001)
    return x


def nap_4ms(x):
    time.sleep(0.004)
    return x


def crunch(x):
    acc = x
    for i in range(LOOPS):
        acc = (acc * 1103515245 + 12345 + i) & 0x7FFFFFFF
    return acc


def crunch3(x):
    """The three CPU-bound stages composed: the sequential and Pool baselines."""
    return crunch(crunch(crunch(x)))


NAPS = [nap_1ms, nap_4ms, nap_1ms]
NAP_SECONDS = 0.006  # the service times of NAPS, summed


def calibrate(ms: float) -> int:
    """Iterations of crunch's loop that take ``ms`` milliseconds of CPU here."""
    global LOOPS
    LOOPS = 20_000
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        crunch(1)
        best = min(best, time.process_time() - t0)
    return max(1, round(20_000 * ms / 1e3 / best))


# -- measuring ----------------------------------------------------------------------------

def timed(measure) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = measure()
    return time.perf_counter() - t0, result


def machine_cpu() -> float:
    """CPU seconds every process of this machine has used (from /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Best:
    """The smallest wall time of several runs of one figure, and what that run returned."""

    def __init__(self) -> None:
        self.seconds = float("inf")
        self.result = None

    def run(self, measure) -> None:
        seconds, result = timed(measure)
        if seconds < self.seconds:
            self.seconds, self.result = seconds, result


def run_pipeline(cluster, stages, n: int, check: bool = True):
    """One ``Pipeline`` of ``stages`` over ``range(n)``, iterated to the end: the run
    (for its figures). The sleeping stages return their item: the results are checked."""
    from clusterctl.api.pipeline import Pipeline

    run = Pipeline(cluster, stages, range(n))
    out = list(run.values())
    if check and out != list(range(n)):
        raise AssertionError(f"the pipeline gave {len(out)} results, not range({n}) in order")
    return run


def chained_pools(pools, n: int) -> list:
    """The hand-written pipeline: each Pool's ``imap`` fed from the one before."""
    first, middle, last = pools
    out = list(last.imap(nap_1ms, middle.imap(nap_4ms, first.imap(nap_1ms, range(n)))))
    if out != list(range(n)):
        raise AssertionError(f"the chained pools gave {len(out)} results, not range({n})")
    return out


@contextlib.contextmanager
def world(prefix: str, hosts: str | None, rows: "Rows", warm=None) -> Iterator:
    """A ``Cluster`` on a world of its own: private directories, the hosts file
    ``hosts`` (None: the default world), brought up and warmed with ``warm(cluster)``;
    closed and its nodes brought down at the end, whatever happens."""
    with private_dirs(prefix) as root:
        from clusterctl import Cluster
        from clusterctl.config.hosts import default_world

        if hosts is None:
            where = default_world()  # as without a hosts file, whatever ./hosts says
        else:
            where = root / "hosts"
            where.write_text(hosts)
        cluster = Cluster(where)
        try:
            infos = cluster.world()
            bad = [i for i in infos if not i.ok]
            if bad:
                raise RuntimeError(f"the world did not come up: {bad}")
            if warm is not None:
                warm(cluster)
            yield cluster
        finally:
            cluster.close()
            with Cluster(where) as closer:
                closer.down()
            left = stray_nodes(root)
            if left:
                rows.note(f"  (!) {prefix}: node processes left after down",
                          ", ".join(map(str, left)))


def stage_line(rows) -> str:
    """T_S and ρ of every stage, in one line: "T_S 1.08/4.10/1.11 ms, ρ 1.00/1.00/1.00"."""
    def show(value, scale=1.0):
        return f"{value * scale:.2f}" if value is not None else "-"

    t_s = "/".join(show(r.t_s, 1e3) for r in rows)
    rho = "/".join(show(r.rho) for r in rows)
    return f"T_S {t_s} ms, ρ {rho}"


# -- the figures --------------------------------------------------------------------------

def sleeping_figures(args, rows: Rows) -> None:
    """1 and 2: the fused sleeping stages on 8 slots, against the bound and the Pools."""
    from clusterctl.api.pipeline import bottleneck, figures

    n = args.items
    ctx = mp.get_context("fork")
    # The Pools are forked before the world's threads start; they idle while clusterctl runs.
    pools = [ctx.Pool(3), ctx.Pool(3), ctx.Pool(2)]
    try:
        chained_pools(pools, 64)
        warm = lambda cluster: run_pipeline(cluster, NAPS, 200)
        with world("ccpl8", "local slots=8\n", rows, warm) as cluster:
            ours, hand = Best(), Best()
            for _ in range(args.repeat):
                hand.run(lambda: chained_pools(pools, n))
                ours.run(lambda: run_pipeline(cluster, NAPS, n))
    finally:
        for pool in pools:
            pool.terminate()
            pool.join()
    bound = 8 / NAP_SECONDS
    rate, hand_rate = n / ours.seconds, n / hand.seconds
    rows.add(f"1. sleep 1/4/1 ms x {n:,}, 8 slots", f"{rate:,.0f} items/s",
             f"{bound:,.0f} items/s (bound 8 / 6 ms)", rate / bound, 0.85)
    rows.add("2. the same vs hand-written Pools", f"{rate:,.0f} items/s",
             f"{hand_rate:,.0f} items/s (Pools 3/3/2, imap)", rate / hand_rate, 1.5)
    stats = figures(ours.result.stats)
    rows.note("  (info) stages 1/2/3", stage_line(stats))
    if all(r.t_s is not None for r in stats):  # time.sleep overshoots: the bound as slept
        slept = sum(r.t_s for r in stats)
        rows.note("  (info) bound from measured T_S", f"8 / {slept * 1e3:.2f} ms = "
                  f"{8 / slept:,.0f} items/s ({rate * slept / 8:.2f}x of it)")
    rows.note("  (info) bottleneck named", bottleneck(stats)[1])


def pinned_figures(args, rows: Rows) -> None:
    """3: the 4 ms stage pinned to a 2-slot node."""
    from clusterctl.api.pipeline import bottleneck, figures

    n = args.pinned_items
    stages = [nap_1ms, (nap_4ms, {"nodes": ["a"]}), nap_1ms]
    warm = lambda cluster: run_pipeline(cluster, stages, 100)
    with world("ccpl2", "local name=a slots=2\nlocal name=b slots=6\n", rows, warm) as cluster:
        ours = Best()
        for _ in range(args.repeat):
            ours.run(lambda: run_pipeline(cluster, stages, n))
    stats = figures(ours.result.stats)
    pinned = stats[1]
    others = [r for r in stats if r is not pinned]
    if pinned.rho is None or any(r.rho is None for r in others):
        rows.note("3. pinned stage", f"ρ not measured: {stage_line(stats)}")
    else:
        rows.add("3. pinned 4 ms stage (2 slots): ρ", f"ρ {pinned.rho:.2f}",
                 "ρ 1 (saturated)", pinned.rho, 0.9)
        top = max(r.rho for r in others)
        rows.add("   the other stages (6 slots): ρ",
                 "ρ " + ", ".join(f"{r.rho:.2f}" for r in others),
                 f"ρ {pinned.rho:.2f} (pinned stage)", top / pinned.rho, 1.0, below=True)
    bound = 2 / 0.004
    rate = n / ours.seconds
    rows.add(f"   throughput x {n:,}", f"{rate:,.0f} items/s",
             f"{bound:,.0f} items/s (bound 2 / 4 ms)", rate / bound, 0.9)
    rows.note("  (info) stages 1/2/3", stage_line(stats))
    rows.note("  (info) bottleneck named", bottleneck(stats)[1] + " (expected: stage 2)")


def cpu_figures(args, rows: Rows) -> None:
    """4: three CPU-bound stages on the default world, against running them here."""
    global LOOPS
    LOOPS = calibrate(args.cpu_ms)
    n = args.cpu_items
    items = list(range(n))
    stages = [crunch, crunch, crunch]
    [crunch3(x) for x in items[:4]]  # warm this process too
    ctx = mp.get_context("fork")
    pool = ctx.Pool(CORES)
    try:
        pool.map(crunch3, items[:CORES], chunksize=1)
        warm = lambda cluster: run_pipeline(cluster, stages, 4 * CORES, check=False)
        with world("ccplc", None, rows, warm) as cluster:
            seq, ours, pooled = Best(), Best(), Best()
            beside = []  # CPUs other processes kept busy while the sequential loop ran
            for _ in range(args.repeat):
                machine, own, t0 = machine_cpu(), own_cpu(), time.perf_counter()
                seq.run(lambda: [crunch3(x) for x in items])
                others = machine_cpu() - machine - (own_cpu() - own)
                beside.append(max(0.0, others) / (time.perf_counter() - t0))
                ours.run(lambda: list(cluster.pipeline(stages, items)))
                pooled.run(lambda: pool.map(crunch3, items, chunksize=1))
    finally:
        pool.terminate()
        pool.join()
    if ours.result != seq.result:
        raise AssertionError("the CPU-bound pipeline's results differ from the composition's")
    per_item = seq.seconds / n / 3 * 1e3
    speedup = seq.seconds / ours.seconds
    rows.add(f"4. CPU-bound 3 x {per_item:.1f} ms x {n}, {CORES} slots",
             f"{ours.seconds:.2f} s, speedup {speedup:.2f}",
             f"{seq.seconds:.2f} s sequential, ideal {CORES}", speedup / CORES, None)
    pool_speedup = seq.seconds / pooled.seconds
    rows.note("  (info) the same on Pool.map", f"{pooled.seconds:.2f} s, speedup "
              f"{pool_speedup:.2f} ({pool_speedup / CORES:.2f}x of ideal)")
    rows.note("  (info) other load on the machine", "busy CPUs beside the sequential loop: "
              + ", ".join(f"{b:.2f}" for b in beside) + f" (of {CORES})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer items and one run per figure (about a fifth of the time)")
    parser.add_argument("--items", type=int, help="items for 1 and 2 (default 4000; quick 1000)")
    parser.add_argument("--pinned-items", type=int,
                        help="items for the pinned stage (default 2000; quick 500)")
    parser.add_argument("--cpu-items", type=int,
                        help="items for the CPU-bound stages (default 300; quick 80)")
    parser.add_argument("--cpu-ms", type=float, default=5.0,
                        help="CPU milliseconds per item of each CPU-bound stage")
    parser.add_argument("--repeat", type=int, help="runs per figure, the best counts "
                        "(default 2; quick 1)")
    args = parser.parse_args()
    quick = args.quick
    for name, full, short in (("items", 4000, 1000), ("pinned_items", 2000, 500),
                              ("cpu_items", 300, 80), ("repeat", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)

    rows = Rows()
    try:
        sleeping_figures(args, rows)
        pinned_figures(args, rows)
        cpu_figures(args, rows)
    finally:
        rows.print()
    print(f"({CORES} CPUs; best of {args.repeat} runs each; Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
