"""The command line: parse, call the API, render. Nothing here that the API lacks.

Errors are rendered once, here, as one line on stderr naming the cause and the fix,
and mapped to the documented exit codes: 0 ok, 1 error, 2 usage, 3 some nodes
failed, 130 interrupted. A traceback of clusterctl's own code appears only with
``--debug``; a remote exception shows the node and the remote traceback.

Heavy imports (the cluster API, rich, paramiko) happen inside the commands, so
``clusterctl --help`` starts fast.
"""

from __future__ import annotations

import ast
from typing import Any

import click

from clusterctl.version import __version__
from clusterctl.cli.arguments import Seconds, function_named, globals_first
from clusterctl.cli.common import CallCommand, Options, node_list, run, timeout_option
from clusterctl.errors import EXIT_SOME_NODES_FAILED, ClusterError

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    error (the message says what failed and how to fix it)
  2    usage error (bad option, argument or node name)
  3    some nodes or items failed (world, multicall, down, ps; pmap and pipeline
       with --on-error collect)
  130  interrupted (Ctrl-C)"""


def parse_arg(text: str) -> Any:
    """A command-line argument as a Python literal (``2``, ``'a'``, ``[1, 2]``), else the
    string; one that looks like a literal and is none (``"('store', 'a', 1"``, a bracket
    short) is said on stderr, since it goes as text the function may not expect."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        if text.lstrip()[:1] in ("(", "[", "{", "'", '"'):
            why = exc.msg if isinstance(exc, SyntaxError) and exc.msg else type(exc).__name__
            click.echo(f"note: {text} is not a Python literal ({why}): it is sent as a string",
                       err=True)
        return text


def complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str):
    """Node names from the hosts file, for shell completion."""
    try:
        from clusterctl.config.hosts import resolve_world

        hosts = ctx.find_root().params.get("hosts")
        specs, _ = resolve_world(hosts)
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []
    return [s.name for s in specs if s.name.startswith(incomplete)]


class Commands(click.Group):
    """The commands; those in modules of their own are imported only when asked for (a
    warm ``rpc`` starts sooner without pmap's)."""

    LAZY = {"pmap": ("clusterctl.cli.pmap", "pmap_command"),
            "pipeline": ("clusterctl.cli.pipeline", "pipeline_command"),
            "trace": ("clusterctl.cli.trace", "trace_command"),
            "hub": ("clusterctl.cli.hub", "hub_command"),
            "spawn": ("clusterctl.cli.actors", "spawn_command"),
            "ps": ("clusterctl.cli.actors", "ps_command"),
            "logs": ("clusterctl.cli.actors", "logs_command"),
            "send": ("clusterctl.cli.actors", "send_command"),
            "call": ("clusterctl.cli.actors", "call_command"),
            "kill": ("clusterctl.cli.actors", "kill_command"),
            "env": ("clusterctl.cli.env", "env_command")}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """The global options may come after the command too (``ps --json``)."""
        return super().parse_args(ctx, globals_first(self, ctx, args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            import importlib

            module, attribute = self.LAZY[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


@click.group(cls=Commands, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--hosts", metavar="FILE", type=click.Path(dir_okay=False),
              help="Hosts file. Default: $CLUSTERCTL_HOSTS, ./hosts, then the user config "
                   "directory; with none, one local node with a slot per CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout (and nothing else there).")
@click.option("--timeout", type=Seconds(), metavar="SECONDS",
              help="Give up on a call after this long (30, 5s, 2m; the remote work is "
                   "cancelled). For pmap and pipeline: --item-timeout.")
@click.option("--debug", is_flag=True, help="Show clusterctl's own tracebacks.")
@click.option("--ssh-config", metavar="FILE", type=click.Path(dir_okay=False),
              help="SSH client config file to use instead of ~/.ssh/config (like ssh -F).")
@click.option("--known-hosts", metavar="FILE", type=click.Path(dir_okay=False),
              help="known_hosts file to check and append host keys to.")
@click.option("--accept-new-host-keys", is_flag=True,
              help="Trust and record host keys of hosts never seen before, where the ssh config leaves "
                   "StrictHostKeyChecking at ask, its default (a changed key, and StrictHostKeyChecking "
                   "yes, still refuse).")
@click.option("--trace", "trace_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Record what the command does on every node into FILE (Chrome trace JSON: "
                   "open it in Perfetto, or read it with `clusterctl trace --analyze FILE`); "
                   "written also when the command is interrupted.")
@click.option("--env", type=click.Choice(["on", "off"]), default=None,
              help="Ship what your functions need from this Python (installed packages, your own "
                   "modules) to the hosts that lack it (on, the default unless CLUSTERCTL_ENV=off), "
                   "or ship nothing and use what the hosts have (off).")
@click.option("--quiet-tasks", is_flag=True,
              help="Drop what your functions print (shown on stderr by default, each line "
                   "prefixed with its node and item: n1[17]).")
@click.option("--cwd", metavar="DIR",
              help="The directory tasks run in, on every node (default: on a local node this "
                   "directory, on other hosts the home directory).")
@click.option("--setenv", metavar="NAME[=VALUE]", multiple=True,
              help="Set NAME in the tasks' environment, on every node: to VALUE, or to its "
                   "value here. Repeat for more.")
@click.version_option(__version__, prog_name="clusterctl")
@click.pass_context
def cli(ctx: click.Context, hosts, as_json, timeout, debug, ssh_config, known_hosts,
        accept_new_host_keys, trace_path, env, quiet_tasks, cwd, setenv) -> None:
    """Run Python across the machines you can ssh into.

    Nodes start on demand and keep running between commands; `clusterctl down` stops them.
    The options here may also follow the command (`clusterctl ps --json`).
    """
    ctx.obj = Options(hosts, as_json, timeout, debug, ssh_config, known_hosts, accept_new_host_keys,
                      trace_path, env, quiet_tasks, cwd, setenv)


@cli.command()
@click.pass_context
def world(ctx: click.Context) -> None:
    """Start missing nodes, ping every node, and show the world.

    A node that does not answer shows as pang with the reason; the exit code is then 3.
    """

    def body(opts: Options) -> int:
        from clusterctl.render import tables as render

        with opts.cluster() as cluster, render.WorldProgress(len(cluster.nodes)) as progress:
            infos = cluster.world(on_node=progress.advance)
        if opts.json:
            click.echo(render.dump_json(render.world_json(infos)))
        else:
            render.print_world(render.stdout_console(), infos)
        return 0 if all(i.ok for i in infos) else EXIT_SOME_NODES_FAILED

    run(ctx, body)


@cli.command(cls=CallCommand)
@click.argument("node", shell_complete=complete_nodes)
@click.argument("function", metavar="MODULE.FUNCTION")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@timeout_option
@click.pass_context
def rpc(ctx: click.Context, node: str, function: str, args: tuple[str, ...],
        timeout: float | None) -> None:
    """Call MODULE.FUNCTION(ARGS...) on NODE and print the result.

    The function may also be named in two words, MODULE FUNCTION (math pow). Each ARG is
    read as a Python literal (2, 'a', [1, 2], {'k': 1}) if it is one, else taken as a
    string. Options may come after the ARGS; an ARG that starts with -- goes after --.
    Example: clusterctl rpc local math.pow 2 10 --timeout 5s
    """

    def body(opts: Options) -> int:
        from clusterctl.render import plain as render  # (no rich: one value to print)

        if timeout is not None:
            opts.timeout = timeout

        target, rest = function_named(function, args)
        values = [parse_arg(a) for a in rest]
        with opts.cluster() as cluster:
            result = cluster.rpc(node, target, *values)
        if opts.json:
            click.echo(render.dump_json({"node": node, "result": render.jsonable(result)}))
        else:
            click.echo(render.value_text(result))
        return 0

    run(ctx, body)


@cli.command(cls=CallCommand, short_help="Call a function on every node; show who failed.")
@click.argument("function", metavar="MODULE.FUNCTION")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--nodes", "-n", metavar="NAMES", help="Comma-separated node names (default: all).")
@timeout_option
@click.pass_context
def multicall(ctx: click.Context, function: str, args: tuple[str, ...],
              nodes: str | None, timeout: float | None) -> None:
    """Call MODULE.FUNCTION(ARGS...) on every node; show each node's result or error.

    The function may also be named in two words, MODULE FUNCTION. ARGS are read as for
    rpc; options may come after them, and an ARG that starts with -- goes after --. Exit
    code 3 if any node failed. Example: clusterctl multicall os.getloadavg
    """

    def body(opts: Options) -> int:
        from clusterctl.render import tables as render

        if timeout is not None:
            opts.timeout = timeout

        target, rest = function_named(function, args)
        values = [parse_arg(a) for a in rest]
        names = node_list(nodes)
        with opts.cluster() as cluster:
            results = cluster.multicall(target, *values, nodes=names)
        if opts.json:
            click.echo(render.dump_json({n: render.outcome_json(v) for n, v in results.items()}))
        else:
            render.stdout_console().print(render.multicall_table(dict(results)))
        return 0 if results.ok else EXIT_SOME_NODES_FAILED

    run(ctx, body)


@cli.command(short_help="Stop the nodes, and wait until they are gone.")
@click.option("--nodes", "-n", metavar="NAMES", help="Comma-separated node names (default: all).")
@click.option("--all", "everything", is_flag=True,
              help="Also stop the nodes of your other worlds (other hosts files): the local "
                   "ones on this machine and those the hub knows; then the hub.")
@click.pass_context
def down(ctx: click.Context, nodes: str | None, everything: bool) -> None:
    """Stop the nodes (all of the world by default) and wait until they are gone.

    The spawned processes of the nodes it stops end with them; it names them. Nodes that
    other hosts files started keep running (it names them too, and the hub keeps
    running for them); --all stops them as well.
    """

    if everything and nodes:
        raise click.UsageError("--all stops every node: give it no --nodes")

    def body(opts: Options) -> int:
        from clusterctl.render import tables as render

        names = node_list(nodes)
        with opts.cluster() as cluster:
            running = cluster.processes(names)  # (what ends with the nodes, to be named)
            others = cluster.other_nodes() if names is None else []
            outcomes = cluster.down(names, other_worlds=everything, others=others)
        ended = [row for row in running if row.get("state") != "failed"
                 and isinstance(outcomes.get(row.get("node")), str)]
        if opts.json:
            click.echo(render.dump_json({n: (v if isinstance(v, str) else render.outcome_json(v))
                                         for n, v in outcomes.items()}))
        else:
            render.stdout_console().print(render.down_table(outcomes))
            if ended:
                click.echo("ended with them: " + ", ".join(
                    f"{row['id']} ({row['name']})" if row.get("name") else row["id"]
                    for row in ended))
            if everything and others:
                click.echo("of other worlds: " + render.other_worlds_text(others))
        if others and not everything:
            hub = any(o.through_hub for o in others)
            click.echo("note: nodes of other hosts files still run: "
                       + render.other_worlds_text(others)
                       + ("; the hub keeps running for them" if hub else "")
                       + "; `clusterctl down --all` stops them" + (" and it" if hub else " too"),
                       err=True)
        failed = any(isinstance(v, ClusterError) for v in outcomes.values())
        return EXIT_SOME_NODES_FAILED if failed else 0

    run(ctx, body)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="clusterctl")
