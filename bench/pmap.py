"""pmap throughput against its baselines, each measured in the same run on the same machine.

    python bench/pmap.py [--tiny 200000] [--single 20000] [--cpu-items 80] [--ssh-mb 200]

1. Tiny tasks: the identity over ``--tiny`` ints on one local node with as many slots
   as ``multiprocessing.Pool`` has workers, against ``Pool.map`` with its default
   chunksize. Goal: at least 0.5x its throughput.
2. Chunking off: one item per message (``chunksize=1``, several in flight per slot),
   against ``Pool.map(chunksize=1)``. Goal: at least 1x.
3. CPU-bound tasks (counting primes, ~20 ms an item): the speedup over a sequential
   loop, against the ideal speedup for the cores used. Goal: at least 90% of ideal. The
   same work on a ``multiprocessing.Pool`` is printed beside it: on a shared machine
   two busy cores rarely give twice one.
4. Payload over SSH: items of 4 MB to one host of an SSH test bed (tests/support/sshbed.py),
   against OpenSSH ``ssh HOST cat >/dev/null`` moving the same bytes. Goal: at least
   0.6x. Skipped, with the reason, when the test bed cannot run here (or with ``--no-ssh``).

Every figure is the best of ``--repeat`` runs. The controller runs in private XDG
directories under a temporary directory; every node is brought down and the bed
stopped at the end, also when the benchmark fails.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

from isolation import private_dirs, ssh_test_bed
from report import Rows

CORES = os.cpu_count() or 1


def identity(x):
    return x


def count_primes(start: int, span: int = 12_000) -> int:
    found = 0
    for n in range(max(start, 2), start + span):
        if n % 2 == 0:
            found += n == 2
            continue
        for d in range(3, math.isqrt(n) + 1, 2):
            if n % d == 0:
                break
        else:
            found += 1
    return found


def best(repeat: int, measure) -> float:
    """The best (smallest) of ``repeat`` wall times of ``measure()``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        measure()
        times.append(time.perf_counter() - t0)
    return min(times)


def local_figures(args, rows: Rows) -> None:
    from clusterctl import Cluster
    from clusterctl.config.hosts import HostSpec

    workers = args.workers
    specs = [HostSpec(name="bench", target="local", slots=workers)]
    ctx = mp.get_context("fork")
    cluster = Cluster(specs)
    try:
        cluster.world()
        list(cluster.pmap(identity, range(20_000)))  # warm: workers forked, function cached
        tiny = range(args.tiny)
        with ctx.Pool(workers) as pool:
            pool.map(identity, range(1000))
            base = best(args.repeat, lambda: pool.map(identity, tiny))
            base1 = best(args.repeat, lambda: pool.map(identity, range(args.single), chunksize=1))
        ours = best(args.repeat, lambda: list(cluster.pmap(identity, tiny)))
        ours1 = best(args.repeat, lambda: list(cluster.pmap(identity, range(args.single),
                                                            chunksize=1)))
        rate = args.tiny / ours, args.tiny / base
        rows.add(f"tiny: identity x {args.tiny:,} ({workers} workers)",
                 f"{rate[0]:,.0f} items/s", f"{rate[1]:,.0f} items/s (Pool.map)", rate[0] / rate[1], 0.5)
        rate = args.single / ours1, args.single / base1
        rows.add(f"chunking off: identity x {args.single:,}", f"{rate[0]:,.0f} items/s",
                 f"{rate[1]:,.0f} items/s (Pool.map chunksize=1)", rate[0] / rate[1], 1.0)

        starts = [i * 12_000 for i in range(args.cpu_items)]
        sequential = best(args.repeat, lambda: [count_primes(s) for s in starts])
        parallel = best(args.repeat, lambda: list(cluster.pmap(count_primes, starts)))
        with ctx.Pool(workers) as pool:  # what this machine allows: the same work on a Pool
            pool.map(count_primes, starts[:workers])
            pooled = best(args.repeat, lambda: pool.map(count_primes, starts, chunksize=1))
        cores = min(workers, CORES)
        speedup = sequential / parallel
        rows.add(f"CPU-bound: {args.cpu_items} x {sequential / args.cpu_items * 1e3:.0f} ms of primes",
                 f"{parallel:.2f} s, speedup {speedup:.2f}",
                 f"{sequential:.2f} s sequential, ideal {cores}", speedup / cores, 0.9)
        rows.note("  (info) the same on Pool.map", f"{pooled:.2f} s, speedup {sequential / pooled:.2f}"
                  f" ({sequential / pooled / cores:.2f}x of ideal)")
    finally:
        cluster.close()
        with Cluster(specs) as closer:
            closer.down()


def ssh_figures(args, rows: Rows, root: Path) -> None:
    SSHTestBed, reason = ssh_test_bed()
    if reason:
        rows.note("payload over SSH", f"skipped: {reason}")
        return
    from clusterctl import Cluster, errors

    item = 4 << 20
    count = max(1, args.ssh_mb * (1 << 20) // item)
    total = count * item
    blobs = [bytes([i % 256]) * item for i in range(count)]
    with SSHTestBed(1, root / "bed") as bed:
        alias = bed.aliases[0]
        hosts = root / "hosts"
        hosts.write_text(f"{alias} slots=2\n")
        ssh = {"config_file": str(bed.ssh_config), "known_hosts": str(bed.known_hosts)}
        data = b"".join(blobs)

        def openssh():
            proc = subprocess.run(bed.ssh_argv(alias, "cat >/dev/null"), input=data,
                                  capture_output=True, timeout=300)
            if proc.returncode:
                raise RuntimeError(f"ssh failed: {proc.stderr.decode(errors='replace')}")

        base = best(args.repeat, openssh)
        cluster = Cluster(hosts, ssh_options=ssh, connect_timeout=30)
        try:
            if not all(i.ok for i in cluster.world()):
                rows.note("payload over SSH", f"skipped: {cluster.world()}")
                return
            list(cluster.pmap(len, blobs[:2]))
            ours = best(args.repeat, lambda: list(cluster.pmap(len, blobs)))
        except errors.ClusterError as exc:
            rows.note("payload over SSH", f"skipped: the SSH transport failed: {exc.one_line()}")
            return
        finally:
            cluster.close()
            try:
                with Cluster(hosts, ssh_options=ssh, connect_timeout=30) as closer:
                    closer.down()
            except errors.ClusterError:
                pass
        mb = total / 1e6
        rows.add(f"payload over SSH: {count} x 4 MB", f"{mb / ours:,.0f} MB/s",
                 f"{mb / base:,.0f} MB/s (ssh cat >/dev/null)", base / ours, 0.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", type=int, default=200_000, help="items for the tiny-task figure")
    parser.add_argument("--single", type=int, default=20_000, help="items for chunking off")
    parser.add_argument("--cpu-items", type=int, default=80, help="items for the CPU-bound figure")
    parser.add_argument("--workers", type=int, default=CORES, help="Pool workers = node slots")
    parser.add_argument("--ssh-mb", type=int, default=200, help="megabytes sent over SSH")
    parser.add_argument("--no-ssh", action="store_true", help="skip the SSH figure")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best counts)")
    args = parser.parse_args()

    rows = Rows("clusterctl pmap")
    with private_dirs("ccpb") as root:
        local_figures(args, rows)
        if args.no_ssh:
            rows.note("payload over SSH", "skipped (--no-ssh)")
        else:
            ssh_figures(args, rows, root)
    rows.print()
    print(f"({CORES} CPUs; best of {args.repeat} runs each; Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
