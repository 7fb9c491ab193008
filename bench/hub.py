"""pmap over many one-slot SSH hosts through the hub: throughput, balance and the
controller's own cost, against the ideal for the slots.

    python bench/hub.py [--hosts 100] [--items 20000] [--sleep 0.01] [--repeat 2]

Starts an ``SSHTestBed`` (tests/support/sshbed.py) of ``--hosts`` hosts, a hosts file
with one slot per host, brings the world up once (``Cluster.world()``: nodes started,
the hub warm), then runs, as a fresh ``Cluster`` each time (as a new command would),
``pmap`` of ``--items`` items that each sleep ``--sleep`` seconds, and prints:

- throughput against the ideal (slots / sleep): goal at least 70%;
- the spread of items per host: goal no host above 2x the mean;
- the controller's CPU per item (user + system time of this process, all its threads,
  over the run): goal at most 50 µs at 10 ms items;
- for information: the hub's CPU per item, and how long the nodes took to join.

The controller runs in private XDG directories under a temporary directory; every node
and the hub are brought down and the bed stopped at the end, also when the run fails.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

from isolation import private_dirs, ssh_test_bed



def nap(x):
    time.sleep(SLEEP)
    return x


SLEEP = 0.01


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """User + system seconds of another process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hub_pid() -> int | None:
    from clusterctl.hub import place

    try:
        return int(Path(place.pid_path(place.hub_dir())).read_text())
    except (OSError, ValueError):
        return None


def one_run(hosts: Path, ssh: dict, items: int) -> dict:
    from clusterctl import Cluster
    from clusterctl.api.pmap import PMap

    with Cluster(hosts, ssh_options=ssh, connect_timeout=60) as cluster:
        hub = hub_pid()
        hub0 = process_cpu(hub) if hub else 0.0
        cpu0 = cpu_seconds()
        run = PMap(cluster, nap, range(items))  # as Cluster.pmap makes it; its stats kept
        t0 = time.perf_counter()
        got = list(run.values())
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        hub_cpu = (process_cpu(hub) - hub0) if hub else float("nan")
    if got != list(range(items)):
        raise SystemExit(f"wrong results: {len(got)} of {items}, first wrong at "
                         f"{next(i for i, (a, b) in enumerate(zip(got, range(items))) if a != b)}")
    stats = run.stats
    per_node = {name: s.items for name, s in stats.nodes.items()}
    joins = [s.joined - stats.started for s in stats.nodes.values() if s.joined is not None]
    return {"elapsed": elapsed, "cpu": cpu, "hub_cpu": hub_cpu, "per_node": per_node,
            "joins": joins, "slots": sum(s.slots for s in stats.nodes.values()),
            "duplicates": stats.duplicates, "speculated": stats.speculated}


def report(result: dict, items: int) -> list[str]:
    per_node = result["per_node"]
    counts = sorted(per_node.values())
    mean = statistics.mean(counts)
    ideal = result["slots"] / SLEEP
    rate = items / result["elapsed"]
    busiest = max(per_node, key=per_node.get)
    joins = sorted(result["joins"])
    lines = [
        f"throughput      {rate:8,.0f} items/s of ideal {ideal:,.0f} ({result['slots']} slots): "
        f"{rate / ideal:.0%}  (goal >= 70%)  {'ok' if rate / ideal >= 0.7 else 'BELOW GOAL'}",
        f"items per host  min {counts[0]}, median {statistics.median(counts):.0f}, "
        f"max {counts[-1]} ({busiest}), mean {mean:.0f}: max/mean {counts[-1] / mean:.2f}  "
        f"(goal <= 2)  {'ok' if counts[-1] <= 2 * mean else 'ABOVE GOAL'}",
        f"controller CPU  {result['cpu'] * 1e6 / items:8.1f} µs per item  (goal <= 50)  "
        f"{'ok' if result['cpu'] * 1e6 / items <= 50 else 'ABOVE GOAL'}",
        f"(info) hub CPU  {result['hub_cpu'] * 1e6 / items:8.1f} µs per item",
        f"(info) joined   {len(joins)} nodes, first at {joins[0] * 1e3:.0f} ms, median "
        f"{statistics.median(joins) * 1e3:.0f} ms, last at {joins[-1] * 1e3:.0f} ms; wall "
        f"{result['elapsed']:.2f} s; speculated {result['speculated']}, duplicates dropped "
        f"{result['duplicates']}",
    ]
    return lines


def main() -> None:
    global SLEEP
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100, help="one-slot hosts in the bed")
    parser.add_argument("--items", type=int, default=20_000, help="items in the map")
    parser.add_argument("--sleep", type=float, default=0.01, help="seconds each item sleeps")
    parser.add_argument("--repeat", type=int, default=2, help="runs (each reported)")
    args = parser.parse_args()
    SLEEP = args.sleep

    SSHTestBed, reason = ssh_test_bed()
    if reason:
        raise SystemExit(f"cannot run: SSH test bed unavailable: {reason}")
    with private_dirs("cchb") as root:
        from clusterctl import Cluster

        aliases = [f"h{i}" for i in range(1, args.hosts + 1)]
        with SSHTestBed(args.hosts, root / "bed", forwarding=aliases) as bed:
            hosts = root / "hosts"
            hosts.write_text("".join(f"{a} slots=1\n" for a in aliases))
            ssh = {"config_file": str(bed.ssh_config), "known_hosts": str(bed.known_hosts)}
            print(f"bed: {args.hosts} hosts, mode {bed.mode}, started in {bed.start_seconds:.1f} s; "
                  f"{args.items:,} items of {SLEEP * 1e3:g} ms", flush=True)
            try:
                with Cluster(hosts, ssh_options=ssh, connect_timeout=60) as cluster:
                    t0 = time.perf_counter()
                    infos = cluster.world()
                    down = [i.name for i in infos if not i.ok]
                    print(f"world: {len(infos) - len(down)} of {len(infos)} up in "
                          f"{time.perf_counter() - t0:.1f} s" + (f"; not up: {down}" if down else ""),
                          flush=True)
                for n in range(args.repeat):
                    print(f"\nrun {n + 1}:")
                    for line in report(one_run(hosts, ssh, args.items), args.items):
                        print("  " + line, flush=True)
            finally:
                with Cluster(hosts, ssh_options=ssh, connect_timeout=60) as closer:
                    closer.down()


if __name__ == "__main__":
    main()
