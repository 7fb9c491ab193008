"""What every command shares: the global options, and running a command body."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import click

from clusterctl.errors import EXIT_INTERRUPTED, ClusterError, UsageError


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
    trace: str | None = None  # --trace FILE
    env: str | None = None  # --env on|off
    quiet_tasks: bool = False  # --quiet-tasks
    cwd: str | None = None  # --cwd DIR
    setenv: tuple[str, ...] = ()  # --setenv NAME[=VALUE], repeated

    def cluster(self):
        from clusterctl.api.cluster import Cluster

        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and not os.path.isdir(runtime):  # (a typo: say where things go instead)
            click.echo(f"note: XDG_RUNTIME_DIR={runtime} is no directory: nodes and the hub "
                       f"keep their sockets and logs in /tmp/clusterctl-{os.getuid()}", err=True)

        ssh = {}
        if self.ssh_config:
            ssh["config_file"] = self.ssh_config
        if self.known_hosts:
            ssh["known_hosts"] = self.known_hosts
        if self.accept_new_host_keys:
            ssh["accept_new_host_keys"] = True
        env = None if self.env is None else self.env == "on"
        cluster = Cluster(self.hosts, timeout=self.timeout, ssh_options=ssh, trace=self.trace,
                          env=env, quiet_tasks=self.quiet_tasks, cwd=self.cwd,
                          setenv=variables(self.setenv))
        cluster.shipper.report = shipping_line
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


class CallCommand(click.Command):
    """A command that ends in ARGS... for a function: an argument may start with ``-``
    (``-5``), the command's own options (``--timeout``) are options wherever they are,
    and an argument that starts with ``--`` goes after ``--``; before it, an unknown
    ``--word`` is a usage error rather than an argument taken by mistake."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("context_settings", {})["ignore_unknown_options"] = True
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        known = {name for param in self.get_params(ctx) for name in param.opts + param.secondary_opts}
        for arg in args[:end]:
            name = arg.split("=", 1)[0]
            if name.startswith("--") and len(name) > 2 and name not in known:
                raise click.UsageError(f"no such option: {name} (an argument that starts with -- "
                                       f"goes after --, as in: {ctx.command_path} ... -- {arg})", ctx=ctx)
        return super().parse_args(ctx, args)


def timeout_option(command: Callable) -> Callable:
    """``--timeout SECONDS`` on a command, as the global option (which it overrides)."""
    from clusterctl.cli.arguments import Seconds

    return click.option("--timeout", type=Seconds(), metavar="SECONDS",
                        help="Give up on the call after this long (30, 5s, 2m; the remote work "
                             "is cancelled); the same as the global --timeout.")(command)


def run(ctx: click.Context, body: Callable[[Options], int | None]) -> None:
    """Run a command body; render any error once and exit with its code."""
    opts: Options = ctx.obj
    started = time.time()
    try:
        code = body(opts) or 0
    except ClusterError as exc:
        show_error(opts, exc)
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
    if opts.trace is not None and os.path.isfile(opts.trace) \
            and os.path.getmtime(opts.trace) >= started - 1:  # (written by this command)
        click.echo(f"trace written to {opts.trace}: read it with `clusterctl trace "
                   f"{opts.trace}`, or open it in ui.perfetto.dev", err=True)
    ctx.exit(code)


def show_error(opts: Options, exc: ClusterError) -> None:
    """An error as one line on stderr (and as JSON on stdout with ``--json``)."""
    from clusterctl.render import plain as render

    if opts.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if opts.json:
        click.echo(render.dump_json({"error": render.error_json(exc)}))
    click.echo("error: " + render.error_text(exc), err=True)


def variables(settings: tuple[str, ...]) -> dict[str, str]:
    """``--setenv NAME=VALUE`` and ``--setenv NAME`` (its value here) as a dict."""
    import os

    found: dict[str, str] = {}
    for setting in settings:
        name, equals, value = setting.partition("=")
        if not name or "\0" in setting:
            raise UsageError(f"--setenv {setting!r} names no variable", hint="write --setenv NAME=VALUE")
        if not equals:
            if name not in os.environ:
                raise UsageError(f"--setenv {name}: {name} is not set here",
                                 hint=f"write --setenv {name}=VALUE, or set it before the command")
            value = os.environ[name]
        found[name] = value
    return found


def node_list(text: str | None) -> list[str] | None:
    """The names of a ``--nodes n1,n2`` option; None (all nodes) if it was not given."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--nodes names no node", hint="write --nodes n1,n2")
    return names


def shipping_line(node: str, package, zipped: int) -> None:
    """What a command says as it ships a package to a host (on stderr)."""
    from clusterctl.render.plain import fmt_size

    click.echo(f"shipping {package.describe()} to {node}: {fmt_size(package.size)}, "
               f"{fmt_size(zipped)} zipped", err=True)
