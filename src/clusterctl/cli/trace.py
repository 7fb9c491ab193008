"""``clusterctl trace --analyze FILE``: what a trace written with ``--trace FILE`` says."""

from __future__ import annotations

import click

from clusterctl.cli.common import Options, run


@click.command("trace")
@click.option("--analyze", "analyze_path", metavar="FILE", required=True,
              type=click.Path(dir_okay=False),
              help="The trace to analyze (written with clusterctl --trace FILE COMMAND).")
@click.pass_context
def trace_command(ctx: click.Context, analyze_path: str) -> None:
    """Report what a trace recorded: per node and slot how busy it was and its queue
    wait, per map the service time per item and the stragglers, per pipeline stage
    T_S, T_A and ρ with the bottleneck, retries and lost nodes, round trips, bytes
    moved and MB/s, load imbalance, and a timeline with a lane per node. With --json
    (before the command), the same figures as JSON.

    Record one with the global option: clusterctl --trace run.json pmap script.py;
    the file opens in Perfetto (ui.perfetto.dev) too.
    """

    def body(opts: Options) -> int:
        from clusterctl.api.trace.analysis import analyze, load

        found = analyze(load(analyze_path))
        if opts.json:
            from clusterctl.render.plain import dump_json

            click.echo(dump_json(found.to_json()))
            return 0
        from clusterctl.render.trace import print_report

        print_report(found)
        return 0

    run(ctx, body)
