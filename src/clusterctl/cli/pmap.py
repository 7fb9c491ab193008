"""``clusterctl pmap SCRIPT.py``: the user's function over the user's data, on every slot.

The script is run here, once, as a module of its own (its ``if __name__ == "__main__"``
block does not run). Its function, and everything the function uses from the script
and from modules next to it, travels to the nodes by value, so the script need not
exist on the hosts. Results are written as JSON lines to stdout (or ``--output``); the
progress display and the summary go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Callable, Iterable, Iterator

import click

from clusterctl.cli.arguments import Seconds
from clusterctl.cli.common import Options, node_list, run
from clusterctl.cli.output import FORMATS, open_results, silence_stdout, write_results
from clusterctl.errors import EXIT_SOME_NODES_FAILED, ClusterError, UsageError

SCRIPT_MODULE = "__clusterctl_script__"


class ScriptError(ClusterError):
    """The script (or its ``inputs()``) raised here, before any work went out."""


def load_script(path: str) -> dict[str, Any]:
    """Run the script as a module of its own; return its namespace.

    Modules imported from the script's directory are registered to travel by value,
    like the script itself, since the nodes do not have them.
    """
    import runpy

    import cloudpickle

    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    before = set(sys.modules)
    sys.path.insert(0, directory)
    try:
        namespace = runpy.run_path(path, run_name=SCRIPT_MODULE)
    except SystemExit as exc:
        raise ScriptError(f"{path} called exit({exc.code}) while loading",
                          hint="keep the command-line part under `if __name__ == \"__main__\":`")
    except BaseException as exc:  # noqa: BLE001 - the user's code: show their traceback
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ScriptError(f"{path} raised while loading: {type(exc).__name__}: {exc}\n"
                          + user_traceback(exc, path)) from None
    finally:
        try:
            sys.path.remove(directory)
        except ValueError:
            pass
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) or ""
        if origin and os.path.abspath(origin).startswith(directory + os.sep) \
                and "site-packages" not in origin:
            cloudpickle.register_pickle_by_value(module)
    return namespace


def user_traceback(exc: BaseException, path: str) -> str:
    """The traceback of ``exc`` from the first frame in the user's script on; a syntax
    error's file, line and caret alone (the frames before it are clusterctl's loader)."""
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    frames = traceback.extract_tb(exc.__traceback__)
    for i, frame in enumerate(frames):
        if os.path.abspath(frame.filename) == path:
            frames = frames[i:]
            break
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return "Traceback (most recent call last):\n" + "".join(lines).rstrip()


def script_function(namespace: dict, name: str, path: str) -> Callable:
    fn = namespace.get(name)
    if fn is None:
        defined = sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == SCRIPT_MODULE)
        raise UsageError(f"{path} defines no function {name!r}",
                         hint=f"define `def {name}(item):`, or name another with --fn "
                              f"(the script defines: {', '.join(defined) or 'no functions'})")
    if not callable(fn):
        raise UsageError(f"{name!r} in {path} is a {type(fn).__name__}, not a function")
    return fn


def json_lines(stream, name: str) -> Iterator[Any]:
    """Items from JSON lines, read one line at a time (blank lines are skipped)."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{name}:{number}: not a JSON value: {exc}",
                             hint="give one JSON value per line") from None


def script_inputs(namespace: dict, path: str) -> tuple[Iterable[Any] | None, int | None]:
    """The script's items (None if it defines none), and how many when that is known."""
    inputs = namespace.get("inputs")
    if inputs is None:
        return None, None
    if callable(inputs):
        try:
            inputs = inputs()
        except Exception as exc:  # noqa: BLE001 - the user's code
            raise ScriptError(f"inputs() in {path} raised: {type(exc).__name__}: {exc}\n"
                              + user_traceback(exc, os.path.abspath(path))) from None
    try:
        iter(inputs)
    except TypeError:
        raise UsageError(f"inputs in {path} is a {type(inputs).__name__}, not an iterable",
                         hint="define `def inputs():` returning a list or yielding items") from None
    try:
        total = len(inputs)  # type: ignore[arg-type]
    except TypeError:
        total = None
    return guarded(inputs, path), total


def guarded(items: Iterable[Any], path: str) -> Iterator[Any]:
    """The script's inputs, with an exception in its generator reported as the script's."""
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the user's generator
            raise ScriptError(f"the inputs of {path} raised: {type(exc).__name__}: {exc}\n"
                              + user_traceback(exc, os.path.abspath(path))) from None
        yield item


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


@click.command("pmap")
@click.argument("script", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--fn", "fn_name", default="task", show_default=True, metavar="NAME",
              help="The function in SCRIPT to apply to each item.")
@click.option("--call", "call_name", metavar="MODULE.FUNCTION",
              help="Instead of SCRIPT: map this function, which the nodes import by name; "
                   "items (from --input or stdin) and results travel as plain data, nothing "
                   "pickled, so restricted hosts that allow it take part.")
@click.option("--input", "-i", "input_path", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Items as JSON lines ('-': stdin). Default: the script's inputs(), else stdin.")
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
                 input_path: str | None,
                 output_path: str | None, output_format: str, unordered: bool, indexed: bool, chunksize: int | None,
                 retries: int, on_error: str, limit: int | None, poison_after: int,
                 nodes: str | None, speculate: bool, item_timeout: float | None,
                 progress: bool | None, summary: bool) -> None:
    """Apply a function from SCRIPT to every item, over all nodes' slots.

    SCRIPT defines the function (`task` by default) and may define the items:
    `inputs()`, returning or yielding them. Otherwise items are read as JSON lines from
    --input FILE or stdin. Results are written to stdout as JSON lines, in input order
    unless --unordered. The function travels by value: the script need not exist on the
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

        fn, title, (source, total, close_source) = the_work(script, fn_name, call_name, input_path)

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


def the_work(script: str | None, fn_name: str, call_name: str | None, input_path: str | None):
    """The function (a script's, or a name with --call), the progress title, and the
    items as ``open_inputs`` gives them."""
    if (script is None) == (call_name is None):
        raise UsageError("give a SCRIPT.py, or --call MODULE.FUNCTION" if script is None
                         else "give a SCRIPT.py or --call MODULE.FUNCTION, not both")
    if call_name is not None:
        return call_name, f"pmap {call_name}", open_inputs({}, f"--call {call_name}", input_path)
    namespace = load_script(script)
    return (script_function(namespace, fn_name, script), f"pmap {fn_name}",
            open_inputs(namespace, script, input_path))


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


def open_inputs(namespace: dict, script: str, input_path: str | None):
    """The items, how many (None: not known), and how to close what was opened for them."""
    if input_path is not None and input_path != "-":
        try:
            fh = open(input_path, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --input {input_path}: {exc.strerror}") from None
        return json_lines(fh, input_path), None, fh.close
    if input_path is None:
        items, total = script_inputs(namespace, script)
        if items is not None:
            return items, total, _no_op
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError(f"no items: {script} defines no inputs(), and no --input was given"
                             if not script.startswith("--call") else
                             f"no items for {script}: pass --input FILE (JSON lines) or pipe them to stdin",
                             hint="define `def inputs():` in the script, pass --input FILE "
                                  "(JSON lines), or pipe JSON lines to stdin")
    return json_lines(sys.stdin, "<stdin>"), None, _no_op


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


def _no_op() -> None:
    return None
