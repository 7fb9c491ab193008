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
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from . import __version__
from .errors import (EXIT_INTERRUPTED, EXIT_SOME_NODES_FAILED, ClusterError, UsageError)

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    error (the message says what failed and how to fix it)
  2    usage error (bad option, argument or node name)
  3    some nodes failed (world, multicall, down)
  130  interrupted (Ctrl-C)"""


@dataclass
class Options:
    """The global options, handed to every command."""

    hosts: str | None
    json: bool
    timeout: float | None
    debug: bool
    ssh_config: str | None
    known_hosts: str | None
    accept_new_host_keys: bool

    def cluster(self):
        from .cluster import Cluster

        ssh = {}
        if self.ssh_config:
            ssh["config_file"] = self.ssh_config
        if self.known_hosts:
            ssh["known_hosts"] = self.known_hosts
        if self.accept_new_host_keys:
            ssh["accept_new_host_keys"] = True
        cluster = Cluster(self.hosts, timeout=self.timeout, ssh_options=ssh)
        try:
            self.ask_about_host_keys(cluster)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def ask_about_host_keys(self, cluster) -> None:
        """OpenSSH's "ask": list every unknown host key once, before any live display,
        and trust them if the user says so. Nobody to ask: they are refused later,
        with a message saying how to trust them."""
        if self.accept_new_host_keys or not sys.stdin.isatty() or not sys.stderr.isatty():
            return
        if all(cluster.spec(n).is_local for n in cluster.nodes):
            return
        unknowns = cluster.unknown_host_keys()
        if not unknowns:
            return
        click.echo("The authenticity of these hosts can't be established:", err=True)
        for u in unknowns:
            click.echo(f"  {u.host_label}  {u.key_type} key fingerprint {u.fingerprint}", err=True)
        if click.confirm("Trust them and add their keys to known_hosts?", default=False, err=True):
            cluster.trust_host_keys(unknowns)


def parse_arg(text: str) -> Any:
    """A command-line argument as a Python literal (``2``, ``'a'``, ``[1, 2]``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str):
    """Node names from the hosts file, for shell completion."""
    try:
        from .hosts import resolve_world

        hosts = ctx.find_root().params.get("hosts")
        specs, _ = resolve_world(hosts)
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []
    return [s.name for s in specs if s.name.startswith(incomplete)]


def run(ctx: click.Context, body: Callable[[Options], int | None]) -> None:
    """Run a command body; render any error once and exit with its code."""
    opts: Options = ctx.obj
    try:
        code = body(opts) or 0
    except ClusterError as exc:
        _show_error(opts, exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    except click.exceptions.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug of ours: say so, hide the traceback
        if opts.debug:
            raise
        click.echo(f"error: internal error: {type(exc).__name__}: {exc} "
                   "(run again with --debug for the traceback, and please report it)", err=True)
        code = 1
    ctx.exit(code)


def _show_error(opts: Options, exc: ClusterError) -> None:
    from . import render

    if opts.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if opts.json:
        click.echo(render.dump_json({"error": render.error_json(exc)}))
    click.echo("error: " + render.error_text(exc), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES_HELP)
@click.option("--hosts", metavar="FILE", type=click.Path(dir_okay=False),
              help="Hosts file. Default: $CLUSTERCTL_HOSTS, ./hosts, then the user config "
                   "directory; with none, one local node with a slot per CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout (and nothing else there).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Give up on a call after this many seconds (the remote work is cancelled).")
@click.option("--debug", is_flag=True, help="Show clusterctl's own tracebacks.")
@click.option("--ssh-config", metavar="FILE", type=click.Path(dir_okay=False),
              help="SSH client config file to use instead of ~/.ssh/config (like ssh -F).")
@click.option("--known-hosts", metavar="FILE", type=click.Path(dir_okay=False),
              help="known_hosts file to check and append host keys to.")
@click.option("--accept-new-host-keys", is_flag=True,
              help="Trust and record host keys of hosts never seen before, where the ssh config leaves "
                   "StrictHostKeyChecking at ask, its default (a changed key, and StrictHostKeyChecking "
                   "yes, still refuse).")
@click.version_option(__version__, prog_name="clusterctl")
@click.pass_context
def cli(ctx: click.Context, hosts, as_json, timeout, debug, ssh_config, known_hosts,
        accept_new_host_keys) -> None:
    """Run Python across the machines you can ssh into.

    Nodes start on demand and keep running between commands; `clusterctl down` stops them.
    """
    ctx.obj = Options(hosts, as_json, timeout, debug, ssh_config, known_hosts, accept_new_host_keys)


@cli.command()
@click.pass_context
def world(ctx: click.Context) -> None:
    """Start missing nodes, ping every node, and show the world.

    A node that does not answer shows as pang with the reason; the exit code is then 3.
    """

    def body(opts: Options) -> int:
        from . import render

        with opts.cluster() as cluster, render.WorldProgress(len(cluster.nodes)) as progress:
            infos = cluster.world(on_node=progress.advance)
        if opts.json:
            click.echo(render.dump_json(render.world_json(infos)))
        else:
            render.stdout_console().print(render.world_table(infos))
        return 0 if all(i.ok for i in infos) else EXIT_SOME_NODES_FAILED

    run(ctx, body)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("node", shell_complete=complete_nodes)
@click.argument("module")
@click.argument("function")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def rpc(ctx: click.Context, node: str, module: str, function: str, args: tuple[str, ...]) -> None:
    """Call MODULE.FUNCTION(ARGS...) on NODE and print the result.

    Each ARG is read as a Python literal (2, 'a', [1, 2], {'k': 1}) if it is one, else
    taken as a string. Example: clusterctl rpc n1 math pow 2 10
    """

    def body(opts: Options) -> int:
        from . import render

        values = [parse_arg(a) for a in args]
        with opts.cluster() as cluster:
            result = cluster.rpc(node, f"{module}:{function}", *values)
        if opts.json:
            click.echo(render.dump_json({"node": node, "result": render.jsonable(result)}))
        else:
            click.echo(render.value_text(result))
        return 0

    run(ctx, body)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("module")
@click.argument("function")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--nodes", "-n", metavar="NAMES", help="Comma-separated node names (default: all).")
@click.pass_context
def multicall(ctx: click.Context, module: str, function: str, args: tuple[str, ...],
              nodes: str | None) -> None:
    """Call MODULE.FUNCTION(ARGS...) on every node; show each node's result or error.

    Exit code 3 if any node failed. Example: clusterctl multicall os getloadavg
    """

    def body(opts: Options) -> int:
        from . import render

        values = [parse_arg(a) for a in args]
        names = _node_list(nodes)
        with opts.cluster() as cluster:
            results = cluster.multicall(f"{module}:{function}", *values, nodes=names)
        if opts.json:
            click.echo(render.dump_json({n: render.outcome_json(v) for n, v in results.items()}))
        else:
            render.stdout_console().print(render.multicall_table(dict(results)))
        return 0 if results.ok else EXIT_SOME_NODES_FAILED

    run(ctx, body)


@cli.command()
@click.option("--nodes", "-n", metavar="NAMES", help="Comma-separated node names (default: all).")
@click.pass_context
def down(ctx: click.Context, nodes: str | None) -> None:
    """Stop the nodes (all of the world by default) and wait until they are gone."""

    def body(opts: Options) -> int:
        from . import render

        with opts.cluster() as cluster:
            outcomes = cluster.down(_node_list(nodes))
        if opts.json:
            click.echo(render.dump_json({n: (v if isinstance(v, str) else render.outcome_json(v))
                                         for n, v in outcomes.items()}))
        else:
            render.stdout_console().print(render.down_table(outcomes))
        failed = any(isinstance(v, ClusterError) for v in outcomes.values())
        return EXIT_SOME_NODES_FAILED if failed else 0

    run(ctx, body)


def _register_pmap() -> None:
    from .cli_pmap import pmap_command

    cli.add_command(pmap_command, "pmap")


def _node_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--nodes names no node", hint="write --nodes n1,n2")
    return names


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="clusterctl")


try:  # the pmap command lives in its own module
    _register_pmap()
except ImportError:  # pragma: no cover - only while the module does not exist yet
    pass
