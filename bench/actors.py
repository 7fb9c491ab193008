"""Spawned processes: message throughput on one node, calls between processes on two
hosts, and a warm ``clusterctl call`` from the shell, each beside its baseline in the
same run.

    python bench/actors.py [--quick] [--messages 100000] [--calls 500] [--cli-runs 10]
                           [--repeat 3]

1. Throughput: a source process sends ``--messages`` tuples to a sink process on the
   same node (the default world: one local node), the sink counting them from the
   first to the last with ``receive(match=...)``; against two ``multiprocessing``
   processes doing the same over a ``multiprocessing.Queue``. Goal: at least 0.5x.
2. Calls across hosts: a process on host h1 calls an echo process on host h2
   ``--calls`` times (after a warm-up), timing each call inside the process; against
   ``Cluster.rpc("h2", "operator.add", 1, 2)`` round trips from this program. Both go
   over SSH through the hub. Goal: the median call at most 2x the median rpc. For
   information: the same calls from a process on h2 (no hop between nodes) and from
   this program (``Cluster.call``).
3. The shell: ``examples/kvs.py serve`` spawned as "kvs" on h2 with ``clusterctl spawn``,
   then warm ``clusterctl call kvs "('lookup', 'a')"`` (after one warm-up), against
   ``ssh -F <bed ssh_config> h2 python3 -c 'print(1)'`` (OpenSSH, a new connection each
   time), the two alternating, ``--cli-runs`` each. Goal: the median at most 0.35x.
   For information: the same call with a hosts file naming h2 only (no ``whereis`` of
   the name over the nodes), and the start-up of ``clusterctl --help``.

Figures 2 and 3 run on an ``SSHTestBed`` of two hosts (tests/support/sshbed.py), their
sshd allowing TCP forwarding as a stock one does (as bench/ssh.py's). Without
one (not root, no sshd), figure 2 runs on two local nodes instead and says so, and
figure 3 is left out. Every figure is the best of ``--repeat`` runs (3: the median of
each run), the baseline's runs interleaved with clusterctl's. Each part runs in private
XDG directories (bench/isolation.py); its nodes and hub are brought down and the bed
stopped at the end, also when the benchmark fails.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from isolation import private_dirs, ssh_test_bed
from report import Rows, stray_nodes

REPO = Path(__file__).resolve().parent.parent
KVS = REPO / "examples" / "kvs.py"
SSH_COMMAND = "python3 -c 'print(1)'"


# -- what the spawned processes run (module level: they travel by value) -----------------

def sink(n):
    """Take ``n`` tuples; answer the call "rate" with messages per second, counted from
    the first message to the last."""
    from clusterctl.actor import receive, reply

    started = None
    for _ in range(n):
        receive(match=lambda m: type(m) is tuple)  # leaves the call "rate" in the mailbox
        if started is None:
            started = time.perf_counter()
    rate = n / (time.perf_counter() - started)
    receive(match=lambda m: m == "rate")
    reply(rate)


def source(to, n):
    from clusterctl.actor import send

    for i in range(n):
        send(to, ("item", i))


def echo():
    """Answer every call with its message."""
    from clusterctl.actor import receive, reply

    while True:
        reply(receive())


def caller(server):
    """For each call ``("run", n, warm)``: ``warm`` calls to ``server``, then ``n`` timed
    ones; answers with the ``n`` times in seconds, taken here, inside the process."""
    from clusterctl.actor import call, receive, reply

    while True:
        _, n, warm = receive()
        for i in range(warm):
            call(server, ("ping", i), timeout=60)
        times = []
        clock = time.perf_counter
        for i in range(n):
            t0 = clock()
            call(server, ("ping", i), timeout=60)
            times.append(clock() - t0)
        reply(times)


def queue_sink(q, n, out):
    started = None
    for _ in range(n):
        q.get()
        if started is None:
            started = time.perf_counter()
    out.put(n / (time.perf_counter() - started))


def queue_source(q, n):
    for i in range(n):
        q.put(("item", i))


# -- helpers --------------------------------------------------------------------------------

class BenchError(Exception):
    """A measurement could not be taken (the message says why)."""


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def compile_sources() -> str | None:
    """Where PYTHONDONTWRITEBYTECODE is set no .pyc is ever written, and every CLI process
    compiles clusterctl anew; compile the checkout once, as pip compiles an install."""
    if not sys.dont_write_bytecode:
        return None
    import compileall

    compileall.compile_dir(str(REPO / "src"), quiet=1)
    return "PYTHONDONTWRITEBYTECODE is set: src/ was compiled once first, as pip compiles an install"


def down_world(hosts, ssh: dict | None, notes: list[str], label: str, root: Path | None = None) -> None:
    """Bring every node of ``hosts`` and the hub down; a failure is noted, not raised. With
    ``root`` (the local nodes' directory), a node process still running after is noted too."""
    from clusterctl import Cluster

    options = {"ssh_options": ssh, "connect_timeout": 30} if ssh else {}
    problem = None
    for _ in range(3):
        try:
            with Cluster(hosts, **options) as closer:
                outcomes = closer.down()
        except Exception as exc:  # noqa: BLE001 - try again, then say so
            problem = f"{type(exc).__name__}: {exc}"
            continue
        bad = {n: v for n, v in outcomes.items() if not isinstance(v, str)}
        problem = f"{bad}" if bad else None
        if not bad:
            break
    if problem is not None:
        notes.append(f"(!) {label}: down failed: {problem}")
    left = stray_nodes(root) if root is not None else []
    if left:
        notes.append(f"(!) {label}: node processes left after down: {left}")


# -- 1. throughput on one node -------------------------------------------------------------

def queue_rate(n: int) -> float:
    ctx = mp.get_context("spawn")  # this process has threads (clusterctl's): no fork
    q, out = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=queue_sink, args=(q, n, out)),
             ctx.Process(target=queue_source, args=(q, n))]
    for p in procs:
        p.start()
    try:
        return out.get(timeout=300)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


def throughput(args, rows: Rows, notes: list[str]) -> None:
    n = args.messages
    with private_dirs("ccac1") as root:
        from clusterctl import Cluster
        from clusterctl.config.hosts import default_world

        world = default_world()
        cluster = Cluster(world)
        try:
            bad = [i for i in cluster.world() if not i.ok]
            if bad:
                raise BenchError(f"the local world did not come up: {bad}")

            def ours(count: int) -> float:
                to = cluster.spawn(sink, count)
                cluster.spawn(source, to, count)
                return cluster.call(to, "rate", timeout=300)

            ours(min(n, 2000))  # warm: the node's first processes, the functions' code
            queue_rate(min(n, 2000))
            rates, base = [], []
            for _ in range(args.repeat):
                base.append(queue_rate(n))
                rates.append(ours(n))
        finally:
            cluster.close()
            down_world(world, None, notes, "throughput world", root)
    best, best_base = max(rates), max(base)
    rows.add(f"1. messages between 2 processes, 1 node (x {n:,})", f"{best:,.0f} msg/s",
             f"{best_base:,.0f} msg/s (mp.Queue)", best / best_base, 0.5)
    notes.append("1. runs, msg/s: spawned " + ", ".join(f"{r:,.0f}" for r in rates)
                 + "; mp.Queue " + ", ".join(f"{r:,.0f}" for r in base))


# -- 2. calls across nodes -----------------------------------------------------------------

def call_figures(args, rows: Rows, notes: list[str], cluster, a: str, b: str, where: str) -> None:
    """A process on ``a`` calling one on ``b``, against ``Cluster.rpc(b, ...)``."""
    n, warm = args.calls, args.warmup
    for info in cluster.world():
        if not info.ok:
            raise BenchError(f"node {info.name} did not come up: {info.status} {info.reason}")
    server = cluster.spawn(echo, node=b)
    remote = cluster.spawn(caller, server, node=a)  # the figure: a -> b
    local = cluster.spawn(caller, server, node=b)  # for information: b -> b

    def rpc_block() -> list[float]:
        clock, times = time.perf_counter, []
        for _ in range(warm):
            cluster.rpc(b, "operator.add", 1, 2)
        for _ in range(n):
            t0 = clock()
            if cluster.rpc(b, "operator.add", 1, 2) != 3:
                raise BenchError("operator.add(1, 2) did not return 3")
            times.append(clock() - t0)
        return times

    def program_block() -> list[float]:
        clock, times = time.perf_counter, []
        for i in range(warm):
            cluster.call(server, ("ping", i), timeout=60)
        for i in range(n):
            t0 = clock()
            cluster.call(server, ("ping", i), timeout=60)
            times.append(clock() - t0)
        return times

    blocks = {
        "call": lambda: cluster.call(remote, ("run", n, warm), timeout=600),
        "rpc": rpc_block,
        "same": lambda: cluster.call(local, ("run", n, warm), timeout=600),
        "program": program_block,
    }
    runs: dict[str, list[list[float]]] = {k: [] for k in blocks}
    for _ in range(args.repeat):  # alternating, so the machine's load hits all alike
        for key, block in blocks.items():
            runs[key].append(block())
    for key in ("call", "rpc", "same", "program"):
        notes.append(f"2. {key:8} medians per run: " + ", ".join(us(median(t)) for t in runs[key])
                     + "; means: " + ", ".join(us(statistics.mean(t)) for t in runs[key]))

    def best(key: str) -> list[float]:
        return min(runs[key], key=median)

    call, rpc = best("call"), best("rpc")
    rows.add(f"2. call {a} -> {b}, in a process ({where})", f"{us(median(call))} median",
             f"{us(median(rpc))} (rpc {b} operator.add)", median(call) / median(rpc), 2.0,
             below=True)
    rows.add("   the same, means", f"{us(statistics.mean(call))} mean",
             f"{us(statistics.mean(rpc))} mean", statistics.mean(call) / statistics.mean(rpc),
             None)
    same, program = best("same"), best("program")
    rows.note(f"  (info) call {b} -> {b}, same node", f"{us(median(same))} median, "
              f"{median(same) / median(rpc):.2f}x rpc")
    rows.note(f"  (info) Cluster.call -> {b} (program)", f"{us(median(program))} median, "
              f"{median(program) / median(rpc):.2f}x rpc")
    rows.note("  (info) calls", f"{n} timed after {warm} warm-up, per run; best of {args.repeat}")


def local_calls(args, rows: Rows, notes: list[str]) -> None:
    """Figure 2 without a bed: two local nodes."""
    hosts_text = "local name=a slots=2\nlocal name=b slots=2\n"
    with private_dirs("ccac2") as root:
        from clusterctl import Cluster

        hosts = root / "hosts"
        hosts.write_text(hosts_text)
        cluster = Cluster(hosts)
        try:
            call_figures(args, rows, notes, cluster, "a", "b", "2 LOCAL nodes, no bed")
        finally:
            cluster.close()
            down_world(hosts, None, notes, "local call world", root)


# -- 3. the shell --------------------------------------------------------------------------

class Shell:
    """Fresh ``python -m clusterctl`` processes and OpenSSH commands against the bed."""

    def __init__(self, bed, cwd: Path) -> None:
        self.bed, self.cwd = bed, cwd

    def cli(self, hosts: Path, *command: str, timeout: float = 120) -> tuple[float, str]:
        argv = [sys.executable, "-m", "clusterctl", "--hosts", str(hosts),
                "--ssh-config", str(self.bed.ssh_config), "--known-hosts", str(self.bed.known_hosts),
                *command]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=self.cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"`clusterctl {' '.join(command)}` exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-600:]}")
        return elapsed, proc.stdout.strip()

    def ssh(self, alias: str) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(self.bed.ssh_argv(alias, SSH_COMMAND), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0 or proc.stdout.strip() != "1":
            raise BenchError(f"ssh {alias} exited {proc.returncode}: {proc.stderr.strip()}")
        return elapsed

    def help(self) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clusterctl", "--help"], check=True, cwd=self.cwd,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def shell_figures(args, rows: Rows, notes: list[str], shell: Shell, hosts: Path, only: Path,
                  b: str) -> None:
    _, out = shell.cli(hosts, "spawn", "--name", "kvs", "--node", b, str(KVS), "serve")
    notes.append(f"3. clusterctl spawn --name kvs --node {b} examples/kvs.py serve -> {out}")
    _, out = shell.cli(hosts, "call", "kvs", "('store', 'a', 1)")
    if out != "True":
        raise BenchError(f"call kvs store: {out!r}")
    lookup = ("call", "kvs", "('lookup', 'a')")
    for where in (hosts, only):  # warm-up: each hosts file's first command
        _, out = shell.cli(where, *lookup)
        if out != "1":
            raise BenchError(f"call kvs lookup: {out!r}")
    shell.ssh(b)
    shell.help()
    ours, base, single, helps = [], [], [], []
    for _ in range(args.cli_runs):  # alternating, so the machine's load hits all alike
        base.append(shell.ssh(b))
        elapsed, out = shell.cli(hosts, *lookup)
        if out != "1":
            raise BenchError(f"call kvs lookup: {out!r}")
        ours.append(elapsed)
        single.append(shell.cli(only, *lookup)[0])
        helps.append(shell.help())
    rows.add("3. clusterctl call kvs \"('lookup', 'a')\" (warm)", f"{ms(median(ours))} median",
             f"{ms(median(base))} (ssh {b} python3 -c)", median(ours) / median(base), 0.35,
             below=True)
    rows.note(f"  (info) the same, hosts file of {b} only", f"{ms(median(single))} median, "
              f"{median(single) / median(base):.2f}x ssh")
    rows.note("  (info) clusterctl --help start-up", f"{ms(median(helps))} median")
    rows.note("  (info) runs", f"{args.cli_runs} each, alternating, after one warm-up")
    for label, samples in (("clusterctl call", ours), ("ssh python3 -c", base),
                           (f"call, {b} only", single), ("--help", helps)):
        notes.append(f"3. {label:16} " + ", ".join(ms(s) for s in samples))


# -- the bed -------------------------------------------------------------------------------

def bed_figures(args, rows: Rows, notes: list[str]) -> bool:
    """Figures 2 and 3 on a bed of two hosts; False if no bed can run here."""
    SSHTestBed, reason = ssh_test_bed()
    if reason:
        notes.append(f"(!) no SSH test bed: {reason}")
        return False
    from sshbed import clusterctl_processes

    with private_dirs("ccac") as root:
        from clusterctl import Cluster

        print("starting the bed (waits while another netns bed runs) ...", flush=True)
        # TCP forwarding allowed, as a stock sshd: the hub then reaches a node it knows
        # through a forward of its socket, not by a boot on a new exec channel.
        with SSHTestBed(2, root / "bed", forwarding=["h1", "h2"], lock_timeout=1800) as bed:
            print(f"bed: 2 hosts, mode {bed.mode}, started in {bed.start_seconds:.1f} s",
                  flush=True)
            notes.append(f"bed: 2 hosts, mode {bed.mode}")
            ssh = {"config_file": str(bed.ssh_config), "known_hosts": str(bed.known_hosts)}
            cwd = root / "w"
            cwd.mkdir()
            hosts = cwd / "hosts"
            hosts.write_text("h1\nh2\n")
            only = cwd / "hosts_h2"
            only.write_text("h2\n")
            cluster = Cluster(hosts, ssh_options=ssh, connect_timeout=30)
            try:
                try:
                    call_figures(args, rows, notes, cluster, "h1", "h2", f"SSH bed, {bed.mode}")
                except Exception as exc:  # noqa: BLE001 - the shell's figure may still run
                    rows.note("2. call across hosts", f"FAILED: {type(exc).__name__}: {exc}")
                try:
                    shell_figures(args, rows, notes, Shell(bed, cwd), hosts, only, "h2")
                except Exception as exc:  # noqa: BLE001
                    rows.note("3. clusterctl call (shell)", f"FAILED: {type(exc).__name__}: {exc}")
            finally:
                cluster.close()
                down_world(hosts, ssh, notes, "bed world")
                deadline = time.monotonic() + 5
                while True:
                    left = {a: p for a in bed.aliases if (p := clusterctl_processes(bed, a))}
                    if not left or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                if left:
                    notes.append(f"(!) clusterctl processes on the hosts after down: {left}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, calls and runs")
    parser.add_argument("--messages", type=int, help="messages for 1 (default 100000; quick 30000)")
    parser.add_argument("--calls", type=int, help="timed calls per run for 2 (default 500; quick 200)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up calls per run for 2")
    parser.add_argument("--cli-runs", type=int, help="runs of each command for 3 (default 10; quick 5)")
    parser.add_argument("--repeat", type=int, help="runs of 1 and 2, the best counts (default 3; quick 1)")
    parser.add_argument("--no-bed", action="store_true", help="figure 2 on two local nodes, no 3")
    args = parser.parse_args()
    for name, full, short in (("messages", 100_000, 30_000), ("calls", 500, 200),
                              ("cli_runs", 10, 5), ("repeat", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)

    one, five, _ = os.getloadavg()
    print(f"load at start: {one:.2f} {five:.2f} (1/5 min, {os.cpu_count()} CPUs)", flush=True)
    compiled = compile_sources()
    started = time.time()
    rows, notes = Rows(), []
    if compiled:
        notes.append(compiled)
    try:
        try:
            throughput(args, rows, notes)
        except Exception as exc:  # noqa: BLE001 - report it, go on to the others
            rows.note("1. messages between 2 processes", f"FAILED: {type(exc).__name__}: {exc}")
        if args.no_bed or not bed_figures(args, rows, notes):
            local_calls(args, rows, notes)
            rows.note("3. clusterctl call (shell)", "not measured: no SSH test bed")
    finally:
        changed = [str(p.relative_to(REPO)) for p in (REPO / "src").rglob("*.py")
                   if p.stat().st_mtime > started]
        if changed:
            notes.append(f"(!) src/ changed during the run, figures may mix code versions: "
                         f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}")
        print()
        rows.print()
        print()
        for note in notes:
            print(f"  {note}")
        one, five, _ = os.getloadavg()
        print(f"({os.cpu_count()} CPUs; load at end {one:.2f} {five:.2f}; "
              f"Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
