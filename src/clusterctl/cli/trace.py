"""``clusterctl trace FILE`` (or ``--analyze FILE``): what a trace written with
``--trace FILE`` says; ``trace record``: a trace of the spawned processes."""

from __future__ import annotations

import click

from clusterctl.cli.arguments import Seconds
from clusterctl.cli.common import Options, run
from clusterctl.errors import UsageError


@click.command("trace", short_help="Analyze a trace file, or record the spawned processes.")
@click.argument("action", required=False, metavar="[FILE | record]")
@click.option("--analyze", "analyze_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="The trace to analyze (written with clusterctl --trace FILE COMMAND, or by "
                   "trace record).")
@click.option("--for", "seconds", metavar="SECONDS", type=Seconds(),
              help="With record: how long to record.")
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
              help="With record: the trace file to write.")
@click.pass_context
def trace_command(ctx: click.Context, action: str | None, analyze_path: str | None,
                  seconds: float | None, output: str | None) -> None:
    """Report what the trace FILE (or --analyze FILE) recorded: per node and slot how busy
    it was and its queue wait, per map the service time per item and the stragglers, per
    pipeline stage T_S, T_A and ρ with the bottleneck, retries and lost nodes, round
    trips, bytes moved and MB/s, load imbalance, and a timeline with a lane per node.
    With --json, the same figures as JSON.

    Record one with the global option: clusterctl --trace run.json pmap script.py;
    the file opens in Perfetto (ui.perfetto.dev) too.

    clusterctl trace record --for SECONDS -o FILE records what the spawned processes of
    the running nodes do meanwhile (spawns, ends, restarts, every message), a thread per
    process in Perfetto; --analyze then lists each process's messages in and out.
    """

    def body(opts: Options) -> int:
        nonlocal analyze_path
        if action is not None and action != "record":  # (trace run.json: the natural guess)
            if analyze_path is not None:
                raise UsageError(f"give one trace to analyze: {action} or --analyze {analyze_path}")
            analyze_path = action
        if action == "record":
            if seconds is None or output is None or analyze_path is not None:
                raise UsageError("trace record takes --for SECONDS and -o FILE (and no --analyze)",
                                 hint="clusterctl trace record --for 10 -o run.json")
            from clusterctl.api.trace import record

            with opts.cluster() as cluster:
                record(cluster, output, seconds)
            click.echo(f"recorded {seconds:g} s into {output}", err=True)
            return 0
        if analyze_path is None or seconds is not None or output is not None:
            raise UsageError("give --analyze FILE, or record --for SECONDS -o FILE",
                             hint="clusterctl trace --analyze run.json")
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
