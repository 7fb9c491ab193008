"""Spawned processes from the shell: spawn, ps, send, call, kill. Parse, call the
API, render; the rest is ``clusterctl.api.actors``'."""

from __future__ import annotations

import os

import click

from clusterctl.cli.arguments import Seconds
from clusterctl.cli.common import CallCommand, Options, node_list, run, timeout_option
from clusterctl.cli.main import complete_nodes, parse_arg
from clusterctl.errors import EXIT_SOME_NODES_FAILED, UsageError

RESTARTS = ("temporary", "transient", "permanent")
# how long spawn watches a new process after it started its function: what dies "at once"
# (a missing argument, a bad configuration) does so within milliseconds; a healthy spawn
# pays this once
GRACE = 0.3


def complete_processes(ctx: click.Context, param: click.Parameter, incomplete: str):
    """Registered names and ids of the running nodes' processes, for shell completion
    (nodes that are not running are not started)."""
    try:
        from clusterctl.api.cluster import Cluster

        with Cluster(ctx.find_root().params.get("hosts"), connect_timeout=5, timeout=5) as cluster:
            rows = cluster.processes()
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []
    found = [r["name"] for r in rows if r.get("name")] + [r["id"] for r in rows]
    return [item for item in dict.fromkeys(found) if item.startswith(incomplete)]


def target_function(target: str, fun: str):
    """TARGET FUN as what ``Cluster.spawn`` takes: a script's function (it travels by
    value) or ``"module:function"``, imported on the node."""
    if target.endswith(".py") or os.sep in target:
        if not os.path.isfile(target):
            raise UsageError(f"no script {target}", hint="give a path to a .py file, or a module "
                                                         "importable on the node")
        from clusterctl.cli.script import load_script

        namespace = load_script(target)
        fn = namespace.get(fun)
        if not callable(fn):
            defined = sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("_")
                             and getattr(v, "__module__", None) == namespace.get("__name__"))
            raise UsageError(f"{target} defines no function {fun!r}",
                             hint=f"it defines: {', '.join(defined) or 'no functions'}")
        return fn
    return f"{target}:{fun}"


@click.command("spawn", cls=CallCommand, short_help="Start a long-lived process on a node; print its id.")
@click.option("--node", metavar="NODE", shell_complete=complete_nodes,
              help="Where to run it (default: the least-loaded node).")
@click.option("--name", metavar="NAME", help="Register it under NAME, unique in the world.")
@click.option("--restart", type=click.Choice(RESTARTS), default="temporary", show_default=True,
              help="Restart it never (temporary), after a crash (transient) or always (permanent).")
@click.option("--intensity", type=click.IntRange(min=0), default=3, show_default=True,
              metavar="N", help="At most N restarts ...")
@click.option("--period", type=Seconds(), default=5.0,
              show_default=True, metavar="SECONDS", help="... within SECONDS; then it stays down.")
@click.option("--mailbox", type=click.IntRange(min=1), metavar="BYTES",
              help="Bytes of messages it may have waiting (default 64 MiB).")
@click.option("--wait", "grace", type=Seconds(zero=True), default=GRACE, show_default=True,
              metavar="SECONDS", help="Watch it this long after it starts: if it crashes "
              "meanwhile, say why and exit 1 (0: do not wait).")
@click.argument("target")
@click.argument("fun")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def spawn_command(ctx: click.Context, node, name, restart, intensity, period, mailbox, grace,
                  target: str, fun: str, args: tuple[str, ...]) -> None:
    """Start FUN(ARGS...) as a long-lived process on a node; print its id.

    TARGET is a script (its functions travel by value, as pmap's do) or a module
    importable on the node. ARGS are read as for rpc. The process outlives this command
    and keeps its node running; `clusterctl kill` or `down` stops it. One that crashes
    as it starts is an error, with its reason; `clusterctl ps` lists it among the
    processes that ended.
    Example: clusterctl spawn --name kvs examples/kvs.py serve
    """

    def body(opts: Options) -> int:
        from clusterctl.api.actors.startup import RUNNING, early_end, start_error
        from clusterctl.render import plain as render

        fn = target_function(target, fun)
        values = [parse_arg(a) for a in args]
        with opts.cluster() as cluster:
            pid = cluster.spawn(fn, *values, node=node, name=name, restart=restart,
                                intensity=intensity, period=period, mailbox=mailbox)
            end = early_end(cluster, pid, grace)
        state, reason = "running", None
        if end is not None and end["state"] in RUNNING:  # (its restart runs)
            click.echo(f"{pid} ended as it started and was restarted: it runs as {end['id']}",
                       err=True)
            pid = end["id"]
        elif end is not None and end["state"] == "ended":  # (it returned: no failure)
            state, reason = "ended", end.get("reason")
            click.echo(f"{end['id']} has ended already: {reason}", err=True)
        elif end is not None:
            raise start_error(end)
        if opts.json:
            click.echo(render.dump_json({"id": pid, "node": pid.rpartition(".")[0], "name": name,
                                         "state": state, "reason": reason}))
        else:
            click.echo(pid)
        return 0

    run(ctx, body)


@click.command("logs", short_help="Print what a spawned process printed; -f follows it.")
@click.option("--follow", "-f", is_flag=True,
              help="Go on printing each new line until the process ends (Ctrl-C stops following).")
@click.option("--lines", "-n", type=click.IntRange(min=0), metavar="N",
              help="Only the last N lines kept (default: all its node kept).")
@click.argument("to", shell_complete=complete_processes)
@click.pass_context
def logs_command(ctx: click.Context, follow: bool, lines: int | None, to: str) -> None:
    """Print what the spawned process TO (an id or a registered name) printed: its
    stdout to stdout, its stderr to stderr.

    Its node keeps the last 1,000 lines of a running process and the last 200 of one
    that ended lately (`ps` lists those). With -f, each new line is printed as it comes,
    until the process ends.
    Example: clusterctl logs -f kvs
    """

    def body(opts: Options) -> int:
        import sys

        with opts.cluster() as cluster:
            logs = cluster.logs(to, lines=lines, follow=follow)
            for line in logs:
                out = sys.stdout if line.stream == "out" else sys.stderr
                out.write(line.text + "\n")
                out.flush()
        if logs.dropped:
            click.echo(f"({logs.dropped:,} lines it printed were dropped: over 200 a second)",
                       err=True)
        if logs.ended is not None:
            click.echo(f"{logs.pid} ended: {logs.ended}", err=True)
        elif follow and not logs.running:
            click.echo(f"{logs.pid} is not running", err=True)
        return 0

    run(ctx, body)


@click.command("ps", short_help="List the spawned processes, and those that ended lately.")
@click.option("--nodes", "-n", metavar="NAMES", help="Comma-separated node names (default: all).")
@click.pass_context
def ps_command(ctx: click.Context, nodes: str | None) -> None:
    """List the spawned processes of the running nodes: id, name, node, function, state,
    uptime, mailbox, restarts, memory (and why one stays down); then, apart, the last
    100 that ended on each node: when, and why (with --json: state "ended" or "crashed")."""

    def body(opts: Options) -> int:
        from clusterctl.render import actors as render
        from clusterctl.render import tables

        with opts.cluster() as cluster:
            rows = cluster.processes(node_list(nodes))
        if opts.json:
            click.echo(tables.dump_json(render.ps_json(rows, rows.errors, rows.ended)))
        else:
            render.print_ps(tables.stdout_console(), rows, rows.ended)
            for line in render.node_failures(rows.errors):
                click.echo("error: " + line, err=True)
        return EXIT_SOME_NODES_FAILED if rows.errors else 0

    run(ctx, body)


@click.command("send", cls=CallCommand, short_help="Put a message in a process's mailbox.")
@click.argument("to", shell_complete=complete_processes)
@click.argument("msg")
@click.pass_context
def send_command(ctx: click.Context, to: str, msg: str) -> None:
    """Put MSG in the mailbox of TO (a process id like n1.3, or a name).

    MSG is read as a Python literal ("('store', 'a', 1)") if it is one, else as a string.
    """

    def body(opts: Options) -> int:
        with opts.cluster() as cluster:
            cluster.send(to, parse_arg(msg))
        return 0

    run(ctx, body)


@click.command("call", cls=CallCommand)
@click.argument("to", shell_complete=complete_processes)
@click.argument("msg")
@timeout_option
@click.pass_context
def call_command(ctx: click.Context, to: str, msg: str, timeout: float | None) -> None:
    """Send MSG to TO and print its reply.

    MSG is read as for send. Example: clusterctl call kvs "('lookup', 'a')"
    """

    def body(opts: Options) -> int:
        from clusterctl.render import plain as render

        if timeout is not None:
            opts.timeout = timeout
        with opts.cluster() as cluster:
            value = cluster.call(to, parse_arg(msg))
        if opts.json:
            click.echo(render.dump_json({"to": to, "result": render.jsonable(value)}))
        else:
            click.echo(render.value_text(value))
        return 0

    run(ctx, body)


@click.command("kill", short_help="End spawned processes for good (no restart).")
@click.argument("to", nargs=-1, required=True, shell_complete=complete_processes)
@click.pass_context
def kill_command(ctx: click.Context, to: tuple[str, ...]) -> None:
    """End the processes TO... (ids or names) for good: they are not restarted."""

    def body(opts: Options) -> int:
        with opts.cluster() as cluster:
            for one in to:
                click.echo(f"killed {cluster.kill(one)}")
        return 0

    run(ctx, body)
