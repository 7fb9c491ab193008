"""``clusterctl pmap SCRIPT.py``: the user's function over the user's data, on every slot.

The script is run here, once, as a module of its own (its ``if __name__ == "__main__"``
block does not run). Its function, and everything the function uses from the script
and from modules next to it, travels to the nodes by value, so the script need not
exist on the hosts. Results are written as JSON lines to stdout (or ``--output``); the
progress display and the summary go to stderr.
"""

from __future__ import annotations

import click

from clusterctl.cli.arguments import Seconds
from clusterctl.cli.common import Options, node_list, run
from clusterctl.cli.inputs import input_options, open_inputs
from clusterctl.cli.output import FORMATS, open_results, silence_stdout, write_results
from clusterctl.cli.script import load_script, script_function
from clusterctl.errors import EXIT_SOME_NODES_FAILED, UsageError


def failure_options(command):
    """--on-error, --limit and --poison-after, as pmap and pipeline take them."""
    for option in reversed((
            click.option("--on-error", type=click.Choice(["raise", "skip", "collect"]),
                         default="raise", show_default=True,
                         help="raise: stop at the first failed item; skip: leave failed items "
                              "out; collect: leave them out and list them at the end (exit "
                              "code 3)."),
            click.option("--limit", type=click.IntRange(min=0), metavar="N",
                         help="Read at most N items."),
            click.option("--poison-after", type=click.IntRange(min=1), default=3,
                         show_default=True, metavar="N",
                         help="Fail an item that crashed its worker (or lost its node) N times."))):
        command = option(command)
    return command


def no_call_timeout(opts: Options, command: str) -> None:
    """``--timeout`` gives up on one call; a map or pipeline is many, and would carry on
    past it unasked: refused, naming the limit it has."""
    if opts.timeout is not None:
        raise UsageError(f"--timeout gives up on one call; {command} runs many and takes "
                         "--item-timeout SECONDS instead",
                         hint="--item-timeout stops an item that runs longer (its worker is "
                              "killed): it fails as ItemTimeout, and is tried again under --retries")


def format_option(command):
    """--format, as pmap and pipeline take it."""
    return click.option(
        "--format", "output_format", type=click.Choice(FORMATS), default="json",
        show_default=True,
        help="json: a JSON line per result (numpy numbers and arrays as numbers and lists, "
             "NaN and infinities as null, bytes as base64; anything else as its repr, "
             "with a note on stderr). pickle: every result exactly, for "
             "clusterctl.read_results(FILE) (binary: with --output FILE or a redirect)."
    )(command)


@click.command("pmap", short_help="Apply a script's function to every item, on every slot.")
@click.argument("script", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--fn", "fn_name", default="task", show_default=True, metavar="NAME",
              help="The function in SCRIPT to apply to each item.")
@click.option("--call", "call_name", metavar="MODULE.FUNCTION",
              help="Instead of SCRIPT: map this function, which the nodes import by name; "
                   "items (from --input or stdin) and results travel as plain data, nothing "
                   "pickled, so restricted hosts that allow it take part.")
@input_options
@click.option("--output", "-o", "output_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the results here instead of stdout.")
@format_option
@click.option("--unordered", is_flag=True, help="Write results as they finish, not in input order.")
@click.option("--indexed", is_flag=True,
              help='Write {"index": I, "result": R} lines (useful with --unordered).')
@click.option("--chunksize", type=click.IntRange(min=1), metavar="N",
              help="Items per message (default: adapted to the function's speed).")
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Try an item whose function raised up to N more times, on another node first.")
@failure_options
@click.option("--nodes", "-n", metavar="NAMES", help="Comma-separated node names (default: all).")
@click.option("--speculate/--no-speculate", default=True, show_default=True,
              help="Start items overdue on their node (stuck, or queued behind a long item) "
                   "again on another slot (the first result wins). Turn off if running an "
                   "item twice would be wrong.")
@click.option("--item-timeout", type=Seconds(),
              metavar="SECONDS",
              help="Stop an item that runs longer (its worker is killed): it fails as "
                   "ItemTimeout, like an exception, and is tried again under --retries.")
@click.option("--progress/--no-progress", default=None,
              help="Show live progress on stderr (default: when stderr is a terminal).")
@click.option("--summary/--no-summary", default=True, show_default=True,
              help="Show the per-node summary on stderr at the end.")
@click.pass_context
def pmap_command(ctx: click.Context, script: str | None, fn_name: str, call_name: str | None,
                 input_path: str | None, lines: bool,
                 output_path: str | None, output_format: str, unordered: bool, indexed: bool, chunksize: int | None,
                 retries: int, on_error: str, limit: int | None, poison_after: int,
                 nodes: str | None, speculate: bool, item_timeout: float | None,
                 progress: bool | None, summary: bool) -> None:
    """Apply a function from SCRIPT to every item, over all nodes' slots.

    SCRIPT defines the function (`task` by default) and may define the items:
    `inputs()`, returning or yielding them. Otherwise items are read as JSON lines from
    --input FILE or stdin (plain text lines with --lines). Results are written to
    stdout as JSON lines, in input order unless --unordered. The function travels by value: the script need not exist on the
    hosts. A lost node's items are redone elsewhere; each item gives exactly one result.
    One slow item does not stall the others: in input order, results after it are
    held back (up to a bound) while the slots work on; --item-timeout stops an item
    that never ends.

    Or, with --call MODULE.FUNCTION instead of SCRIPT, map a function the nodes import
    by name, with items as JSON lines: the way to use restricted hosts.

    Example: clusterctl pmap examples/primes.py --limit 20
    """

    def body(opts: Options) -> int:
        from clusterctl.api.pmap import PMap
        from clusterctl.render import pmap as render_pmap

        no_call_timeout(opts, "pmap")

        fn, title, (source, total, close_source) = the_work(script, fn_name, call_name, input_path, lines)

        def start(cluster):
            return PMap(cluster, fn, source, ordered=not unordered, chunksize=chunksize,
                        retries=retries, on_error=on_error, limit=limit,
                        poison_after=poison_after, nodes=node_list(nodes),
                        speculate=speculate, total=total, item_timeout=item_timeout)

        return run_reported(opts, start, lambda run_, sink, console: _write_run(
            run_, sink, console, title, indexed), render_pmap.summary, output_path=output_path,
            output_format=output_format, progress=progress, summary=summary,
            close_source=close_source)

    run(ctx, body)


def run_reported(opts: Options, start, deliver, summarize, *, output_path: str | None,
                 output_format: str, progress: bool | None, summary: bool, close_source) -> int:
    """Run a map-like command (pmap, pipeline): ``start(cluster)`` makes the run,
    ``deliver(run, sink, console)`` writes its results to ``sink`` (with live progress
    on ``console``, None when not shown); failed items (``--on-error=collect``), what
    had to be converted for JSON, and ``summarize(stats, interrupted)`` go to stderr at
    the end, after Ctrl-C too."""
    from clusterctl.api.pmap import ItemErrors
    from clusterctl.render import pmap as render_pmap

    console = render_pmap.stderr_console()
    shown = console.is_terminal if progress is None else progress
    sink, close_out = open_results(output_path, output_format, console if shown else None)
    interrupted = False
    run_ = None
    try:
        with opts.cluster() as cluster:
            if shown:  # (what tasks print goes above the live view, not into it)
                cluster.task_output.write = render_pmap.task_lines_above(console)
            run_ = start(cluster)
            try:
                deliver(run_, sink, console if shown else None)
            except KeyboardInterrupt:
                interrupted = True
                raise
    except ItemErrors as exc:
        console.print(render_pmap.errors_table(exc.failures))
        return EXIT_SOME_NODES_FAILED
    finally:
        close_out()
        close_source()
        note = sink.note()
        if note is not None:
            console.print("note: " + note, style="yellow", markup=False, highlight=False)
        if run_ is not None and summary and run_.stats.started is not None:
            console.print(summarize(run_.stats, interrupted))
    return 0


def the_work(script: str | None, fn_name: str, call_name: str | None, input_path: str | None,
             lines: bool):
    """The function (a script's, or a name with --call), the progress title, and the
    items as ``open_inputs`` gives them."""
    if (script is None) == (call_name is None):
        raise UsageError("give a SCRIPT.py, or --call MODULE.FUNCTION" if script is None
                         else "give a SCRIPT.py or --call MODULE.FUNCTION, not both")
    if call_name is not None:
        return call_name, f"pmap {call_name}", open_inputs({}, f"--call {call_name}", input_path, lines)
    namespace = load_script(script)
    return (script_function(namespace, fn_name, script), f"pmap {fn_name}",
            open_inputs(namespace, script, input_path, lines))


def _write_run(run_, sink, progress_console, title: str, indexed: bool) -> None:
    """Write the results of a run to ``sink`` as they come, with live progress on
    ``progress_console`` (None: no progress). A reader of our output that went away
    (a closed pipe) ends the run quietly."""
    from clusterctl.render import pmap as render_pmap

    results = run_.values(indexed=indexed)
    try:
        with render_pmap.PmapProgress(run_.stats, progress_console, title) \
                if progress_console is not None else _nothing():
            write_results(results, sink, indexed)
    except BrokenPipeError:
        silence_stdout()
    finally:
        results.close()
        try:
            sink.flush()
        except (BrokenPipeError, ValueError):
            silence_stdout()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None
