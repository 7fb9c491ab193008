"""clusterctl over SSH against OpenSSH, execnet and raw paramiko, on a test bed of real sshd hosts.

    python bench/ssh.py [--hosts 8] [--n 2000]

Sets up its own ``SSHTestBed`` (tests/support/sshbed.py) with ``--hosts`` hosts in a temporary
directory, runs the controller in private XDG directories, and measures, in one run,
each figure beside its baseline:

1. baseline: OpenSSH ``ssh -F bed.ssh_config h1 python3 -c '...'`` (median wall time);
2. a cold ``clusterctl world`` on one host: no node running and the host's code cache
   emptied first, so the agent bundle is shipped and the node started;
3. a warm ``clusterctl world`` on one host and on all hosts (nodes already running);
4. ``clusterctl rpc h1 os getpid`` from the shell (warm node, warm hub), against the
   OpenSSH command and against the same command through an OpenSSH ControlMaster that
   is already open; the same rpc without the hub (``CLUSTERCTL_HUB=off``) beside it;
5. warm ``Cluster.rpc("h1", "operator.add", 1, 2)`` round trips through the API, through
   the hub and directly (``hub=False``), beside three channels to the same bare host:
   the OpenSSH client running a script that echoes length-prefixed frames of the same
   size (goal: at most 2x), an execnet 2 gateway's channel sending back what it gets
   (goal: at most 0.8x; execnet is a baseline only, installed for the benchmark), and
   a raw paramiko exec channel running the same echo.
6. the hub at rest: its CPU with every bed host's node up and watched and nothing asked
   (``--hosts 100`` for the goal: at most 0.5% of a core), and that every watch stayed up.

Figures 2-4 are wall times of fresh ``python -m clusterctl`` processes, as a user at a
shell sees them. Every node is brought down at the end (``Cluster.down()``) and the
bed stopped, also when the benchmark fails.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from isolation import private_dirs, ssh_test_bed

REPO = Path(__file__).resolve().parent.parent
BASELINE_COMMAND = "python3 -c 'import os; print(os.getpid())'"

# The remote end of the raw paramiko baseline: echo 4-byte length-prefixed frames from
# stdin to stdout with unbuffered reads and writes on the file descriptors.
ECHO_SCRIPT = """\
import os, struct
def read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data
while True:
    head = read(4)
    view = memoryview(head + read(struct.unpack("!I", head)[0]))
    while view:
        view = view[os.write(1, view):]
"""


class BenchError(Exception):
    """A measurement could not be taken (the message says why)."""


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``samples``."""
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


class Bench:
    """The measurements, on a started bed."""

    def __init__(self, bed, root: Path, args: argparse.Namespace) -> None:
        self.bed = bed
        self.root = root
        self.args = args
        self.cwd = root / "w"
        self.cwd.mkdir()
        self.ssh_options = {"config_file": str(bed.ssh_config), "known_hosts": str(bed.known_hosts)}
        self.hosts1 = self.cwd / "hosts1"
        self.hosts1.write_text("h1\n")
        self.hosts_all = self.cwd / "hosts_all"
        self.hosts_all.write_text("".join(f"{alias}\n" for alias in bed.aliases))
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.clusters: list = []
        self.ssh_clients: list = []
        self.echo_processes: list = []  # OpenSSH clients of the echo baseline
        self.gateways: list = []  # execnet's

    # -- processes -------------------------------------------------------------------

    def cli(self, hosts: Path, *command: str, timeout: float = 120,
            env: dict | None = None) -> tuple[float, str]:
        """Wall time and stdout of one ``python -m clusterctl`` process; BenchError if it fails."""
        argv = [sys.executable, "-m", "clusterctl", "--hosts", str(hosts),
                "--ssh-config", str(self.bed.ssh_config), "--known-hosts", str(self.bed.known_hosts),
                *command]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=self.cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})})
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"`clusterctl {' '.join(command)}` exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-600:]}")
        if proc.stderr.strip():
            self.problems.append(f"`clusterctl {' '.join(command)}` wrote to stderr: "
                                 f"{proc.stderr.strip()[-300:]}")
        return elapsed, proc.stdout

    def openssh(self, alias: str, command: str, options=()) -> tuple[float, str]:
        argv = self.bed.ssh_argv(alias, command, options)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"ssh {alias} {command!r} exited {proc.returncode}: {proc.stderr.strip()}")
        return elapsed, proc.stdout

    def cluster(self, hosts: Path, **options):
        from clusterctl import Cluster

        c = Cluster(hosts, ssh_options=self.ssh_options, connect_timeout=30, **options)
        self.clusters.append(c)
        return c

    def down(self, hosts: Path) -> dict:
        from clusterctl import Cluster

        with Cluster(hosts, ssh_options=self.ssh_options, connect_timeout=30) as closer:
            return closer.down()

    def code_dir(self, alias: str) -> Path:
        return self.bed.host(alias).env_dir / "cache" / "clusterctl" / "code"

    # -- figures ---------------------------------------------------------------------

    def openssh_baseline(self, runs: int) -> list[float]:
        self.openssh("h1", BASELINE_COMMAND)  # warm-up: page cache, sshd's first fork
        samples = []
        for _ in range(runs):
            elapsed, out = self.openssh("h1", BASELINE_COMMAND)
            if not out.strip().isdigit():
                raise BenchError(f"unexpected output from ssh: {out!r}")
            samples.append(elapsed)
        return samples

    def openssh_master(self, runs: int) -> list[float]:
        """The baseline command through a ControlMaster connection opened beforehand."""
        options = ["-o", f"ControlPath={self.root}/cm-%C", "-o", "ControlMaster=auto",
                   "-o", "ControlPersist=60"]
        self.master_options = options
        self.openssh("h1", BASELINE_COMMAND, options)  # opens the master
        samples = []
        for _ in range(runs):
            elapsed, out = self.openssh("h1", BASELINE_COMMAND, options)
            if not out.strip().isdigit():
                raise BenchError(f"unexpected output from ssh: {out!r}")
            samples.append(elapsed)
        return samples

    def openssh_parallel(self, runs: int) -> list[float]:
        """The baseline command on every host at once: how this machine scales sessions."""
        samples = []
        for _ in range(runs):
            procs = []
            t0 = time.perf_counter()
            try:
                for alias in self.bed.aliases:
                    procs.append(subprocess.Popen(self.bed.ssh_argv(alias, BASELINE_COMMAND),
                                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True))
                outputs = [p.communicate(timeout=60) for p in procs]
                elapsed = time.perf_counter() - t0
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.communicate()
            for alias, p, (out, err) in zip(self.bed.aliases, procs, outputs):
                if p.returncode != 0 or not out.strip().isdigit():
                    raise BenchError(f"parallel ssh {alias} exited {p.returncode}: {err.strip() or out!r}")
            samples.append(elapsed)
        return samples

    def cold_world(self, runs: int) -> list[float]:
        samples = []
        for _ in range(runs):
            outcome = self.down(self.hosts1)["h1"]
            if not isinstance(outcome, str):
                raise BenchError(f"down before a cold world failed: {outcome}")
            shutil.rmtree(self.code_dir("h1"), ignore_errors=True)
            elapsed, out = self.cli(self.hosts1, "world")
            if "pong" not in out:
                raise BenchError(f"cold world did not show h1 as pong:\n{out}")
            shipped = [p.name for p in self.code_dir("h1").iterdir()] if self.code_dir("h1").is_dir() else []
            if not shipped:
                raise BenchError("after a cold world, h1's code cache is still empty")
            samples.append(elapsed)
        return samples

    def warm_world(self, hosts: Path, runs: int, expect: int) -> list[float]:
        samples = []
        for _ in range(runs):
            elapsed, out = self.cli(hosts, "world")
            if out.count("pong") != expect:
                raise BenchError(f"warm world: {out.count('pong')} of {expect} nodes answered:\n{out}")
            samples.append(elapsed)
        return samples

    def cli_rpc(self, runs: int, env: dict | None = None) -> list[float]:
        samples = []
        self.cli(self.hosts1, "rpc", "h1", "os", "getpid", env=env)  # warm: the hub, the node
        for _ in range(runs):
            elapsed, out = self.cli(self.hosts1, "rpc", "h1", "os", "getpid", env=env)
            if not out.strip().isdigit():
                raise BenchError(f"unexpected output from clusterctl rpc: {out!r}")
            samples.append(elapsed)
        return samples

    def request_size(self) -> int:
        """Bytes of the frame Cluster.rpc sends for operator.add(1, 2)."""
        from clusterctl.api.calls import function_message
        from clusterctl.api.pickling import dumps
        from clusterctl.node import wire

        head, by_value = function_message("operator.add")
        head["id"] = 1000
        prefix, payload = wire.encode_parts(head, dumps((by_value, (1, 2), {}), "arguments"))
        return len(prefix) + len(payload)

    def raw_echo_channel(self, alias: str):
        import paramiko

        client = paramiko.SSHClient()
        self.ssh_clients.append(client)
        client.load_host_keys(str(self.bed.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(**self.bed.paramiko_connect_kwargs(alias))
        channel = client.get_transport().open_session(timeout=10)
        channel.settimeout(10)
        channel.exec_command("python3 -u -c " + shlex.quote(ECHO_SCRIPT))
        return channel

    def openssh_echo_channel(self, alias: str) -> subprocess.Popen:
        """The OpenSSH client running the echo script on ``alias``: a plain SSH channel,
        OpenSSH's C doing the crypto and packets."""
        proc = subprocess.Popen(self.bed.ssh_argv(alias, "python3 -u -c " + shlex.quote(ECHO_SCRIPT)),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.echo_processes.append(proc)
        return proc

    def execnet_channel(self, alias: str):
        """An execnet gateway over OpenSSH to ``alias``'s bare python3, with a channel that
        sends back what it receives; None (said in the notes) without execnet."""
        try:
            import execnet
        except ImportError:
            self.notes.append("execnet is not installed: pip install execnet (a benchmark "
                              "baseline only; clusterctl does not use it)")
            return None
        gateway = execnet.makegateway(f"ssh={alias}//ssh_config={self.bed.ssh_config}//python=python3")
        self.gateways.append(gateway)
        return gateway.remote_exec("while True:\n    channel.send(channel.receive())\n")

    def latencies(self, n: int, warmup: int) -> dict[str, list[float]]:
        """Raw echoes (paramiko, OpenSSH), an execnet channel, API rpc and API ping round
        trips, in alternating blocks."""
        size = self.request_size()
        frame = struct.pack("!I", size - 4) + b"x" * (size - 4)
        channel = self.raw_echo_channel("h1")
        ssh_echo = self.openssh_echo_channel("h1")
        xchannel = self.execnet_channel("h1")

        def echo() -> None:
            channel.sendall(frame)
            got = 0
            while got < size:
                chunk = channel.recv(65536)
                if not chunk:
                    raise BenchError("the raw echo channel closed")
                got += len(chunk)

        def openssh_echo() -> None:
            ssh_echo.stdin.write(frame)
            got = 0
            while got < size:
                chunk = os.read(ssh_echo.stdout.fileno(), 65536)
                if not chunk:
                    raise BenchError("the OpenSSH echo channel closed")
                got += len(chunk)

        cluster = self.cluster(self.hosts1)
        direct = self.cluster(self.hosts1, hub=False)
        for c in (cluster, direct):
            infos = c.world()
            if not infos[0].ok:
                raise BenchError(f"API world: h1 is {infos[0].status}: {infos[0].reason}")
            if c.rpc("h1", "operator.add", 1, 2) != 3:
                raise BenchError("operator.add(1, 2) did not return 3")
        conn = cluster.connect("h1")

        calls = {
            "echo": echo,
            "openssh_echo": openssh_echo,
            "rpc": lambda: cluster.rpc("h1", "operator.add", 1, 2),
            "direct": lambda: direct.rpc("h1", "operator.add", 1, 2),
            "ping": lambda: conn.ping(10.0),
        }
        if xchannel is not None:
            def execnet_round_trip() -> None:
                xchannel.send((1, 2))
                xchannel.receive(10)

            calls["execnet"] = execnet_round_trip
        for call in calls.values():
            for _ in range(warmup):
                call()
        samples: dict[str, list[float]] = {name: [] for name in calls}
        clock = time.perf_counter
        blocks = 4  # alternate, so a change in the machine's load hits every figure alike
        per_block = max(1, n // blocks)
        for _ in range(blocks):
            for name, call in calls.items():
                out = samples[name]
                for _ in range(per_block):
                    t0 = clock()
                    call()
                    out.append(clock() - t0)
        self.notes.append(f"round trips: {per_block * blocks} each after {warmup} warm-up, "
                          f"request frame {size} bytes (raw echo sends the same size)")
        return samples

    def idle_hub(self, seconds: float) -> tuple[float, dict]:
        """The hub's CPU (a share of one core) over ``seconds`` with every bed host's node
        up and watched and nothing asked of them, and its watches' states after."""
        from collections import Counter

        from clusterctl.hub import place
        from clusterctl.hub.client import HubClient

        cluster = self.cluster(self.hosts_all)
        infos = cluster.world()
        if not all(i.ok for i in infos):
            raise BenchError(f"world: {[(i.name, i.reason) for i in infos if not i.ok][:3]}")
        pid = place.read_pid(place.hub_dir())
        time.sleep(5.0)  # (the watches settle)

        def used() -> float:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before, t0 = used(), time.monotonic()
        time.sleep(seconds)
        share = (used() - before) / (time.monotonic() - t0)
        status = HubClient(cluster.settings).call("status", {}, 10.0, start=False) or {}
        states = dict(Counter(w["state"] for w in status.get("nodes", [])))
        self.notes.append(f"idle hub: {seconds:g} s measured after 5 s at rest; watches: {states}")
        return share, states

    # -- teardown --------------------------------------------------------------------

    def close(self) -> list[str]:
        """Close everything, bring every node down; what went wrong, if anything."""
        trouble = []
        if getattr(self, "master_options", None):  # the ControlMaster ssh left running
            subprocess.run(self.bed.ssh_argv("h1", None, [*self.master_options, "-O", "exit"]),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        for c in self.clusters:
            try:
                c.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest
                trouble.append(f"closing a cluster: {exc}")
        for client in self.ssh_clients:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001
                trouble.append(f"closing the paramiko client: {exc}")
        for gateway in self.gateways:
            try:
                gateway.exit()
            except Exception as exc:  # noqa: BLE001
                trouble.append(f"closing the execnet gateway: {exc}")
        for proc in self.echo_processes:
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            outcomes = self.down(self.hosts_all)
        except Exception as exc:  # noqa: BLE001
            trouble.append(f"down failed: {type(exc).__name__}: {exc}")
        else:
            summary = ", ".join(f"{n} {v if isinstance(v, str) else 'ERROR ' + str(v)}"
                                for n, v in outcomes.items())
            self.notes.append(f"down: {summary}")
            trouble += [f"down {n}: {v}" for n, v in outcomes.items() if not isinstance(v, str)]
        left = self.leftovers(timeout=5.0)
        if left:
            trouble.append(f"clusterctl processes still on hosts after down: {left}")
        return trouble

    def leftovers(self, timeout: float) -> dict[str, list[int]]:
        """clusterctl processes (node, workers, relays) still on the bed's hosts."""
        deadline = time.monotonic() + timeout
        while True:
            found = {}
            for alias in self.bed.aliases:
                pids = []
                for pid in self.bed.host_pids(alias):
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    except OSError:
                        continue
                    if state != "Z" and (b"clusterctl" in cmd or b"sys.stdin.buffer.readline" in cmd):
                        pids.append(pid)
                if pids:
                    found[alias] = pids
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def spread(samples: list[float]) -> str:
    return f"{min(samples) * 1e3:.0f}-{max(samples) * 1e3:.0f} ms"


def print_table(rows: list[tuple]) -> None:
    """rows: (figure, clusterctl, baseline, baseline label, ratio or None, goal or None)."""
    header = ("figure", "clusterctl", "baseline", "ratio", "goal", "met?")
    lines = []
    for figure, ours, base, label, ratio, goal in rows:
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        if goal is None or ratio is None:
            met = "-" if ratio is not None or goal is None else "n/a"
        else:
            met = "yes" if ratio <= goal else "NO"
        lines.append((figure, ours, f"{base} ({label})" if label else base, ratio_text,
                      "-" if goal is None else f"<= {goal:g}x", met))
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    aligns = ["<", ">", "<", ">", ">", "<"]

    def fmt(row) -> str:
        return "  ".join(f"{str(v):{a}{w}}" for v, a, w in zip(row, aligns, widths)).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(fmt(line))


def run(args: argparse.Namespace, root: Path) -> int:
    SSHTestBed, reason = ssh_test_bed()
    if reason:
        print(f"cannot run: SSH test bed unavailable: {reason}", file=sys.stderr)
        return 1

    import clusterctl
    from clusterctl.transport.bundle import agent_bundle

    results: dict[str, list[float]] = {}
    lat: dict[str, list[float]] = {}
    idle = None
    first_world_all: float | None = None
    teardown: list[str] = []
    t_start = time.monotonic()
    aliases = [f"h{i}" for i in range(1, args.hosts + 1)]
    with SSHTestBed(args.hosts, root / "bed", forwarding=aliases) as bed:  # as a stock sshd
        bench = Bench(bed, root, args)
        print(f"bed: {bed.n_hosts} hosts, mode {bed.mode}, started in {bed.start_seconds:.2f} s; "
              f"clusterctl {clusterctl.__version__}, code id {agent_bundle().code_id}, "
              f"Python {sys.version.split()[0]}", flush=True)
        steps = [
            ("ssh", lambda: bench.openssh_baseline(args.ssh_runs)),
            ("ssh_all", lambda: bench.openssh_parallel(args.cli_runs)),
            ("cold", lambda: bench.cold_world(args.cold_runs)),
            ("warm1", lambda: bench.warm_world(bench.hosts1, args.cli_runs, 1)),
            ("first_all", lambda: bench.warm_world(bench.hosts_all, 1, bed.n_hosts)),
            ("warm_all", lambda: bench.warm_world(bench.hosts_all, args.cli_runs, bed.n_hosts)),
            ("cli_rpc", lambda: bench.cli_rpc(args.cli_runs)),
            ("cli_direct", lambda: bench.cli_rpc(args.cli_runs, {"CLUSTERCTL_HUB": "off"})),
            ("ssh_master", lambda: bench.openssh_master(args.ssh_runs)),
        ]
        try:
            for name, step in steps:
                try:
                    results[name] = step()
                except (BenchError, subprocess.TimeoutExpired) as exc:
                    bench.problems.append(f"{name}: {exc}")
            try:
                lat = bench.latencies(args.n, args.warmup)
            except Exception as exc:  # noqa: BLE001 - report it, then still bring everything down
                bench.problems.append(f"latency: {type(exc).__name__}: {exc}")
            try:
                idle = bench.idle_hub(args.idle_seconds)
            except Exception as exc:  # noqa: BLE001
                bench.problems.append(f"idle hub: {type(exc).__name__}: {exc}")
        finally:
            teardown = bench.close()
    bed_seconds = time.monotonic() - t_start

    rows: list[tuple] = []
    ssh = median(results["ssh"]) if "ssh" in results else None
    ssh_label = "ssh python3 -c"

    def wall(figure: str, key: str, base: float | None, label: str, goal: float | None) -> None:
        if key not in results:
            rows.append((figure, "error", ms(base) if base else "-", label, None, goal))
            return
        ours = median(results[key])
        rows.append((figure, ms(ours), ms(base) if base else "-", label,
                     ours / base if base else None, goal))

    if ssh is not None:
        rows.append(("1. OpenSSH ssh h1 python3 -c (median)", ms(ssh), "-", "", None, None))
    wall(f"   (info) OpenSSH, {args.hosts} hosts in parallel", "ssh_all", ssh, ssh_label, None)
    wall("2. cold world, 1 host (ships code)", "cold", ssh, ssh_label, None)
    wall("3. warm world, 1 host", "warm1", ssh, ssh_label, None)
    warm1 = median(results["warm1"]) if "warm1" in results else None
    wall(f"3. warm world, {args.hosts} hosts", "warm_all", warm1, "warm world 1 host", 2.0)
    wall("4. clusterctl rpc h1 os getpid (CLI)", "cli_rpc", ssh, ssh_label, 0.25)
    master = median(results["ssh_master"]) if "ssh_master" in results else None
    wall("4. clusterctl rpc h1 os getpid (CLI)", "cli_rpc", master, "ssh via ControlMaster", 0.8)
    wall("   (info) the same without the hub", "cli_direct", ssh, ssh_label, None)
    if lat:
        e50, e99 = percentiles(lat["echo"])
        r50, r99 = percentiles(lat["rpc"])
        p50, p99 = percentiles(lat["ping"])
        d50, _ = percentiles(lat["direct"])
        o50, _ = percentiles(lat["openssh_echo"])
        rows.append(("5. API rpc operator.add p50 (hub)", us(r50), us(o50), "OpenSSH channel echo", r50 / o50, 2.0))
        if "execnet" in lat:
            x50, _ = percentiles(lat["execnet"])
            rows.append(("5. API rpc operator.add p50 (hub)", us(r50), us(x50), "execnet channel", r50 / x50, 0.8))
        rows.append(("   (info) API rpc p50 (hub)", us(r50), us(e50), "raw paramiko echo", r50 / e50, None))
        rows.append(("   (info) API rpc p50, no hub", us(d50), us(e50), "raw paramiko echo", d50 / e50, None))
        rows.append(("5. API rpc operator.add p99", us(r99), us(e99), "raw paramiko echo", r99 / e99, None))
        rows.append(("   (info) API ping, no worker, p50", us(p50), us(e50), "raw paramiko echo", p50 / e50, None))
    else:
        rows.append(("5. API rpc operator.add p50 (hub)", "error", "-", "", None, 2.0))
    if idle is not None:
        used, states = idle
        rows.append((f"6. idle hub, {bed.n_hosts} hosts watched (% of a core)", f"{used * 100:.2f}%",
                     "-", "goal at 100 hosts: 0.5%", None, None))
        if states.get("up") != bed.n_hosts:
            bench.problems.append(f"the hub's watches at rest were not all up: {states}")
    if "first_all" in results and warm1:
        first_world_all = results["first_all"][0]
        rows.append((f"   (info) first world, {args.hosts} hosts ({args.hosts - 1} cold)",
                     ms(first_world_all), ms(warm1), "warm world 1 host", first_world_all / warm1, None))

    print()
    print_table(rows)
    print()
    for key, label in (("ssh", "OpenSSH ssh"), ("ssh_all", f"OpenSSH x{args.hosts}"),
                       ("cold", "cold world"), ("warm1", "warm world 1"),
                       ("warm_all", f"warm world {args.hosts}"), ("cli_rpc", "CLI rpc"),
                       ("cli_direct", "CLI rpc, no hub"), ("ssh_master", "ssh ControlMaster")):
        if key in results:
            print(f"  {label:16} n={len(results[key])}  median {ms(median(results[key]))}  "
                  f"range {spread(results[key])}")
    for note in bench.notes:
        print(f"  {note}")
    print(f"  bed lifetime {bed_seconds:.1f} s (stop {bed.stop_seconds:.2f} s)")
    trouble = bench.problems + teardown
    if trouble:
        print("\nproblems:")
        for text in trouble:
            print(f"  - {text}")
    return 1 if trouble else 0


def compile_sources() -> str | None:
    """A package pip installed is compiled at install, and an editable checkout on its
    first import; but where PYTHONDONTWRITEBYTECODE is set (some machines set it for
    everyone), no .pyc is ever written and every CLI process compiles clusterctl anew
    (about 75 ms). Compile the checkout once, as pip would: a note says so."""
    if not sys.dont_write_bytecode:
        return None
    import compileall

    compileall.compile_dir(str(REPO / "src"), quiet=1)
    return "PYTHONDONTWRITEBYTECODE is set: src/ was compiled once first, as pip compiles an install"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8, help="hosts in the bed (h1..hN)")
    parser.add_argument("--n", type=int, default=2000, help="round trips per latency figure")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up round trips per figure")
    parser.add_argument("--ssh-runs", type=int, default=7, help="OpenSSH baseline runs")
    parser.add_argument("--cli-runs", type=int, default=5, help="runs per warm CLI figure")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="how long the idle hub's CPU is measured (goal 6: --hosts 100)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold world runs (down and "
                        "empty code cache before each)")
    args = parser.parse_args()
    if args.hosts < 1:
        parser.error("--hosts must be at least 1")

    print(f"load at start: {load_text()}", flush=True)
    compiled = compile_sources()
    if compiled:
        print(f"note: {compiled}", flush=True)
    code = 1
    try:
        with private_dirs("ccsb") as root:  # before clusterctl is imported (in run)
            code = run(args, root)
    finally:
        print(f"load at end:   {load_text()}")
    sys.exit(code)


if __name__ == "__main__":
    main()
