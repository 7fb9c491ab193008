"""``clusterctl env``: what the hosts hold of the packages clusterctl shipped them, and
removing what no worker used for a while."""

from __future__ import annotations

import click

from clusterctl.cli.common import Options, run
from clusterctl.errors import EXIT_SOME_NODES_FAILED


@click.command("env", short_help="Show (or remove) the packages shipped to each host.")
@click.option("--nodes", "-n", metavar="NAMES", help="Comma-separated node names (default: all).")
@click.option("--remove-unused", "days", type=click.FloatRange(min=0), metavar="DAYS",
              help="Remove the packages no worker used for DAYS days (0: every one; what a "
                   "call needs is shipped again).")
@click.pass_context
def env_command(ctx: click.Context, nodes: str | None, days: float | None) -> None:
    """Show the packages each host holds, shipped from this Python (name, version, size,
    when a worker last used it), or remove the unused ones. Nodes on one host share its
    cache: each shows the same."""

    def body(opts: Options) -> int:
        from clusterctl.errors import ClusterError
        from clusterctl.render import tables as render

        names = [n.strip() for n in nodes.split(",") if n.strip()] if nodes else None
        with opts.cluster() as cluster:
            if days is None:
                outcomes = cluster.environments(names)
            else:
                outcomes = cluster.drop_environments(days, names)
        if opts.json:
            click.echo(render.dump_json({n: (v if not isinstance(v, ClusterError)
                                             else render.error_json(v))
                                         for n, v in outcomes.items()}))
        else:
            render.stdout_console().print(render.env_table(outcomes, removed=days is not None))
        failed = any(isinstance(v, ClusterError) for v in outcomes.values())
        return EXIT_SOME_NODES_FAILED if failed else 0

    run(ctx, body)
