"""The environment that travels, against copying it by hand, on bare SSH test-bed hosts
(their ``python3`` has the standard library only), each figure beside its baseline
measured in the same run.

    python bench/env.py [--hosts 4] [--repeat 3]

1. Cold first run: a pmap of a numpy function on ``--hosts`` hosts whose caches hold
   nothing (nodes already up), shipping numpy as it goes, against copying numpy's
   installed directories to those hosts at once with ``scp -r`` over the same SSH.
   Goal: at most 1.0x the copy.
2. Bytes on the wire: what was shipped (zipped) against numpy's installed size.
3. Second run: the same pmap from a new cluster (a new command: nothing to ship),
   against the same pmap of a standard-library-only function. Goal: at most 1.2x.

The controller runs in private XDG directories; the bed's hosts are emptied of shipped
packages between cold runs; every node is brought down and the bed stopped at the end,
also when the benchmark fails.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from isolation import private_dirs, ssh_test_bed
from report import Rows

ITEMS = 64
HOST_CACHE = '"${XDG_CACHE_HOME:-$HOME/.cache}/clusterctl/env"'


def numpy_task(n):
    import numpy

    return float(numpy.sqrt(numpy.arange(n + 1)).sum())


def stdlib_task(n):
    return sum(math.sqrt(i) for i in range(n + 1))


def numpy_dirs() -> list[Path]:
    """numpy's installed directories: the package, its bundled libraries, its record."""
    import importlib.metadata

    import numpy

    site = Path(numpy.__file__).resolve().parent.parent
    dist = importlib.metadata.distribution("numpy")
    tops = {Path(str(f)).parts[0] for f in dist.files if not str(f).startswith("..")}
    return sorted(site / top for top in tops if (site / top).is_dir())


def installed_size(dirs: list[Path]) -> int:
    return sum(p.stat().st_size for d in dirs for p in d.rglob("*") if p.is_file()
               and "__pycache__" not in p.parts)


def copy_by_hand(bed, aliases: list[str], dirs: list[Path]) -> float:
    """Seconds to ``scp -r`` the directories to every host at once (into an empty
    directory, removed after)."""
    scp = shutil.which("scp")
    for alias in aliases:
        bed.ssh(alias, "rm -rf ~/handcopy && mkdir ~/handcopy")
    started = time.perf_counter()
    copies = [subprocess.Popen([scp, "-q", "-r", "-F", str(bed.ssh_config), *map(str, dirs),
                                f"{alias}:handcopy/"]) for alias in aliases]
    failed = [c.wait(timeout=600) for c in copies]
    took = time.perf_counter() - started
    if any(failed):
        raise RuntimeError("scp failed")
    for alias in aliases:
        bed.ssh(alias, "rm -rf ~/handcopy")
    return took


def empty_caches(bed, aliases: list[str]) -> None:
    for alias in aliases:
        bed.ssh(alias, f"rm -rf {HOST_CACHE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=4, help="bed hosts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best counts)")
    args = parser.parse_args()
    rows = Rows("clusterctl")
    SSHTestBed, reason = ssh_test_bed()
    if reason or shutil.which("scp") is None:
        print(f"skipped: {reason or 'no scp here'}")
        return
    with private_dirs("ccenv") as root, SSHTestBed(args.hosts, root / "bed") as bed:
        from clusterctl import Cluster

        aliases = bed.aliases[:args.hosts]
        hosts = root / "hosts"
        hosts.write_text("".join(f"{a} slots=1\n" for a in aliases))
        ssh = {"config_file": str(bed.ssh_config), "known_hosts": str(bed.known_hosts)}
        dirs = numpy_dirs()
        size = installed_size(dirs)
        expected = [numpy_task(i) for i in range(ITEMS)]

        def run(fn, check=None) -> tuple[float, int]:
            with Cluster(hosts, ssh_options=ssh, connect_timeout=30) as cluster:
                started = time.perf_counter()
                results = list(cluster.pmap(fn, range(ITEMS)))
                took = time.perf_counter() - started
                if check is not None and results != check:
                    raise RuntimeError("wrong results")
                return took, cluster.shipper.sent

        try:
            with Cluster(hosts, ssh_options=ssh, connect_timeout=30) as starter:
                if not all(i.ok for i in starter.world()):
                    raise RuntimeError(f"the bed's nodes did not start: {starter.world()}")
            copies, colds, sent = [], [], 0
            for _ in range(args.repeat):
                copies.append(copy_by_hand(bed, aliases, dirs))
                empty_caches(bed, aliases)
                with Cluster(hosts, ssh_options=ssh) as restarter:  # (new nodes: nothing held)
                    restarter.down()
                    if not all(i.ok for i in restarter.world()):
                        raise RuntimeError("the bed's nodes did not start again")
                took, sent = run(numpy_task, expected)
                colds.append(took)
            cold, copy = min(colds), min(copies)
            rows.add(f"cold first run: numpy pmap on {len(aliases)} hosts", f"{cold:.2f} s",
                     f"{copy:.2f} s (scp -r of numpy's {len(dirs)} directories)", cold / copy, 1.0,
                     below=True)
            rows.add("bytes on the wire", f"{sent / 1e6:.1f} MB shipped, zipped",
                     f"{size / 1e6:.1f} MB installed, for each host", sent / (size * len(aliases)),
                     None)
            warm = min(run(numpy_task, expected)[0] for _ in range(args.repeat))
            plain = min(run(stdlib_task)[0] for _ in range(args.repeat))
            rows.add("second run: the same pmap", f"{warm * 1e3:.0f} ms",
                     f"{plain * 1e3:.0f} ms (a standard-library function)", warm / plain, 1.2,
                     below=True)
        finally:
            try:
                with Cluster(hosts, ssh_options=ssh, connect_timeout=30) as closer:
                    closer.down()
            except Exception as exc:  # noqa: BLE001 - the bed stops anyway
                print(f"bringing the nodes down failed: {exc}", file=sys.stderr)
    rows.print()
    print(f"({os.cpu_count()} CPUs; {ITEMS} items; best of {args.repeat}; "
          f"Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
