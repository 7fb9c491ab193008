"""``clusterctl hub``: the hub's state (it is started on demand by the other commands,
and stopped by ``down``)."""

from __future__ import annotations

import click

from clusterctl.cli.common import Options, run


@click.command("hub", short_help="Show (or stop) the hub, which holds the SSH connections.")
@click.option("--stop", is_flag=True, help="Stop the hub (the nodes keep running).")
@click.pass_context
def hub_command(ctx: click.Context, stop: bool) -> None:
    """Show the hub: the per-user daemon that holds the SSH connections to the hosts, so
    commands pay no SSH handshake, and watches every node it reached (up, or lost and
    why). Commands start it when they need it; it exits by itself when idle
    (CLUSTERCTL_HUB_IDLE seconds, default 600); `clusterctl down` stops it with the
    nodes (`down --all` when it reached other hosts files' nodes). CLUSTERCTL_HUB=off
    makes commands connect directly."""

    def body(opts: Options) -> int:
        from clusterctl.config.cookie import load_or_create_cookie
        from clusterctl.hub.client import HubClient
        from clusterctl.render import hub as render_hub
        from clusterctl.render import tables as render
        from clusterctl.transport.base import NodeSettings
        from clusterctl.transport.bundle import agent_bundle

        client = HubClient(NodeSettings(cookie=load_or_create_cookie(), bundle=agent_bundle()))
        if stop:
            stopped = client.stop(10.0)
            click.echo("hub stopped" if stopped else "no hub runs")
            return 0
        status = client.call("status", {}, 10.0, start=False)
        if opts.json:
            click.echo(render.dump_json(status))
        elif status is None:
            click.echo("no hub runs (commands start one when they need it)")
        else:
            render_hub.show(render.stdout_console(), status)
        return 0

    run(ctx, body)
