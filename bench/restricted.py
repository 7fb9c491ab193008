"""A restricted host against an ordinary one, side by side on one SSH test bed.

    python bench/restricted.py [--n 2000] [--items 20000]

Two hosts of a fresh ``SSHTestBed`` (loopback sshd, so it runs beside the test suite's
bed): ``h1`` ordinary, ``h2`` restricted (its ``authorized_keys`` forces the installed
agent, with a policy allowing ``operator.*``). Each figure is measured on both in the
same run, and the ratio printed (restricted / ordinary):

1. boot: ``world`` of a node that is not running (down before each run): the agent
   and its installed node, against the boot script and the shipped node (code cached);
2. ``Cluster.rpc(node, "operator.add", 1, 2)`` round trips: plain data's JSON against
   pickle, through the hub;
3. a 1 MB ``bytes`` value there and back (``operator.pos`` of it is an error, so
   ``operator.getitem([blob], 0)``): base64 in JSON against pickle, MB/s;
4. ``pmap("operator.neg", range(items))`` by name on the restricted node against the
   same function pickled (``operator.neg``'s object) on the ordinary one, items/s.

Nodes are brought down and the bed stopped at the end, also when the benchmark fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from isolation import private_dirs, ssh_test_bed

POLICY = "allow operator.*\nslots 2\n"


def timed(fn, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def run(args: argparse.Namespace, root: Path) -> int:
    SSHTestBed, reason = ssh_test_bed()
    if reason:
        print(f"cannot run: SSH test bed unavailable: {reason}", file=sys.stderr)
        return 1
    import operator

    from clusterctl import Cluster

    policy_dir = root / "policy"
    policy_dir.mkdir(mode=0o755)
    policy = policy_dir / "policy"
    policy.write_text(POLICY)
    policy.chmod(0o644)
    rows = []
    with SSHTestBed(2, root / "bed", mode="loopback") as bed:
        keys = bed.host("h2").authorized_keys
        key = " ".join(keys.read_text().split()[:2])
        keys.write_text(f'command="{sys.executable} -m clusterctl.node.restricted --policy {policy}",'
                        f"restrict {key}\n")
        hosts = root / "hosts"
        hosts.write_text("h1 name=ordinary slots=2\nh2 name=restricted slots=2\n")
        ssh = {"config_file": str(bed.ssh_config), "known_hosts": str(bed.known_hosts)}
        cluster = Cluster(hosts, ssh_options=ssh, connect_timeout=30)
        try:
            infos = {i.name: i for i in cluster.world()}
            assert all(i.ok for i in infos.values()), infos
            assert infos["restricted"].restricted == 1 and infos["ordinary"].restricted is None

            def boot(name: str) -> None:
                with Cluster(hosts, ssh_options=ssh, connect_timeout=30) as fresh:
                    fresh.down([name])
                    started = time.perf_counter()
                    info, = fresh.world([name])
                    boots[name].append(time.perf_counter() - started)
                    assert info.ok, info

            boots = {"ordinary": [], "restricted": []}
            for _ in range(args.boots):
                for name in boots:
                    boot(name)
            rows.append(("boot: world of a stopped node", p50(boots["restricted"]), p50(boots["ordinary"]), "ms"))

            for name in ("ordinary", "restricted"):
                for _ in range(args.warmup):
                    cluster.rpc(name, "operator.add", 1, 2)
            rpc = {name: [] for name in ("ordinary", "restricted")}
            for _ in range(args.n):  # interleaved, so load changes hit both alike
                for name in rpc:
                    started = time.perf_counter()
                    cluster.rpc(name, "operator.add", 1, 2)
                    rpc[name].append(time.perf_counter() - started)
            rows.append(("rpc operator.add p50", p50(rpc["restricted"]), p50(rpc["ordinary"]), "us"))

            blob = bytes(range(256)) * 4096  # 1 MiB
            rates = {}
            for name in ("ordinary", "restricted"):
                assert cluster.rpc(name, "operator.getitem", [blob], 0) == blob
                spent = p50(timed(lambda: cluster.rpc(name, "operator.getitem", [blob], 0), args.blobs))
                rates[name] = 2 * len(blob) / spent / 1e6
            rows.append(("1 MiB bytes there and back, MB/s", rates["restricted"], rates["ordinary"], "MB/s"))

            speeds = {}
            for name, fn in (("restricted", "operator.neg"), ("ordinary", operator.neg)):
                started = time.perf_counter()
                out = list(cluster.pmap(fn, range(args.items), nodes=[name]))
                speeds[name] = args.items / (time.perf_counter() - started)
                assert out == [-i for i in range(args.items)]
            rows.append(("pmap operator.neg, items/s", speeds["restricted"], speeds["ordinary"], "items/s"))
        finally:
            try:
                cluster.down()
            finally:
                cluster.close()

    print(f"{'figure':38} {'restricted':>12} {'ordinary':>12} {'ratio':>7}")
    for label, restricted, ordinary, unit in rows:
        scale = {"ms": 1e3, "us": 1e6}.get(unit, 1)
        print(f"{label:38} {restricted * scale:>10.1f}{unit[:2]:>2} {ordinary * scale:>10.1f}{unit[:2]:>2} "
              f"{restricted / ordinary:>6.2f}x")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="rpc round trips per node")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up round trips per node")
    parser.add_argument("--boots", type=int, default=5, help="boots per node")
    parser.add_argument("--blobs", type=int, default=20, help="1 MiB round trips per node")
    parser.add_argument("--items", type=int, default=20000, help="pmap items per node")
    args = parser.parse_args()
    with private_dirs("ccrb") as root:  # before clusterctl is imported (in run)
        code = run(args, root)
    sys.exit(code)


if __name__ == "__main__":
    main()
