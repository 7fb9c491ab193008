"""``clusterctl pipeline SCRIPT.py``: items through the script's stages, on every slot.

The script is loaded as pmap's is; it defines ``stages`` (functions, or (function,
options) pairs), its items (``inputs()``, or --input / stdin), and optionally a
``fold``. Results go to stdout as JSON lines; with a fold, only the fold's value.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from clusterctl.cli.arguments import Seconds
from clusterctl.cli.common import Options, node_list, run
from clusterctl.cli.output import JsonLines, silence_stdout, write_results
from clusterctl.cli.inputs import input_options, open_inputs
from clusterctl.cli.pmap import _nothing, failure_options, format_option, no_call_timeout, run_reported
from clusterctl.cli.script import ScriptError, load_script, user_traceback
from clusterctl.errors import UsageError


def script_stages(namespace: dict, path: str):
    stages = namespace.get("stages")
    if stages is None:
        raise UsageError(f"{path} defines no stages",
                         hint="define `stages = [first, second, ...]`, functions of one item "
                              "(or (function, {\"replicas\": N, \"nodes\": [...]}) pairs)")
    return stages


def script_fold(namespace: dict, path: str) -> tuple[Any, Any] | None:
    """``fold = (function, initial)``, or ``def fold(accumulator, result)`` with an
    ``initial`` value (None if the script gives none)."""
    fold = namespace.get("fold")
    if fold is None:
        return None
    hint = ("define `def fold(accumulator, result):` (and `initial = ...`), or "
            "`fold = (function, initial)`")
    if isinstance(fold, tuple) and len(fold) == 2:
        if not callable(fold[0]):
            raise UsageError(f"fold in {path} is a pair whose first part is {_a(fold[0])}, "
                             "not a function", hint=hint)
        return fold
    if callable(fold):
        return fold, namespace.get("initial")
    raise UsageError(f"fold in {path} is {_a(fold)}, not a function", hint=hint)


def _a(value) -> str:
    """``an int``, ``a tuple``: what a value is, with its article."""
    name = type(value).__name__
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


@click.command("pipeline", short_help="Run items through the stages a script defines.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@input_options
@click.option("--output", "-o", "output_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the results here instead of stdout (with a fold: as well as folding them).")
@format_option
@click.option("--unordered", is_flag=True, help="Write results as they finish, not in input order.")
@click.option("--indexed", is_flag=True,
              help='Write {"index": I, "result": R} lines (useful with --unordered).')
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Try an item whose stage raised up to N more times, on another node first.")
@failure_options
@click.option("--nodes", "-n", metavar="NAMES",
              help="Comma-separated node names for the stages that are not pinned (default: all).")
@click.option("--item-timeout", type=Seconds(), metavar="SECONDS",
              help="Stop an item whose stages run longer (its worker is killed): it fails as "
                   "ItemTimeout, and is tried again under --retries.")
@click.option("--progress/--no-progress", default=None,
              help="Show the live per-stage table on stderr (default: when stderr is a terminal).")
@click.option("--summary/--no-summary", default=True, show_default=True,
              help="Show the per-stage table and the bottleneck on stderr at the end.")
@click.pass_context
def pipeline_command(ctx: click.Context, script: str, input_path: str | None, lines: bool,
                     output_path: str | None, output_format: str, unordered: bool, indexed: bool,
                     retries: int, on_error: str,
                     limit: int | None, poison_after: int, nodes: str | None,
                     item_timeout: float | None, progress: bool | None, summary: bool) -> None:
    """Run every item through the stages SCRIPT defines, each stage a farm on the slots.

    SCRIPT defines `stages`, a list of functions of one item, or of (function, options)
    pairs, the options `replicas` (at most that many slots) and `nodes` (pin the stage
    to those nodes, e.g. the GPU host). Items come from `inputs()`, --input or stdin, as
    for pmap (--lines: plain text lines); results go to stdout as JSON lines, in input
    order unless --unordered (--indexed: with each item's index).
    Items stream through bounded queues, so a slow stage holds back the input instead
    of filling memory; every item gives exactly one result, even when a node is lost.
    A `fold` (def fold(accumulator, result) with `initial`, or fold = (function,
    initial)) folds the results here, and its value is printed instead of them.

    On stderr, per stage: items in and out, queue, replicas, the service time T_S, the
    inter-arrival time T_A and ρ = T_S / (replicas × T_A); the bottleneck is named.

    Example: clusterctl pipeline examples/text_pipeline.py
    """

    def body(opts: Options) -> int:
        from clusterctl.api.pipeline import Pipeline
        from clusterctl.render import pipeline as render_pipeline

        no_call_timeout(opts, "pipeline")
        namespace = load_script(script)
        stages = script_stages(namespace, script)
        fold = script_fold(namespace, script)
        source, total, close_source = open_inputs(namespace, script, input_path, lines)

        def start(cluster):
            return Pipeline(cluster, stages, source, ordered=not unordered, retries=retries,
                            on_error=on_error, limit=limit, poison_after=poison_after,
                            nodes=node_list(nodes), total=total, item_timeout=item_timeout)

        def deliver(run_, sink, console) -> None:
            with render_pipeline.PipelineProgress(run_.stats, console, f"pipeline {script}") \
                    if console is not None else _nothing():
                _deliver(run_, sink, fold, output_path is not None, os.path.abspath(script),
                         console, indexed)

        return run_reported(opts, start, deliver, render_pipeline.summary,
                            output_path=output_path, output_format=output_format,
                            progress=progress, summary=summary, close_source=close_source)

    run(ctx, body)


def _deliver(run_, sink, fold, tee: bool, script: str, console, indexed: bool) -> None:
    """Write the results to ``sink``; with a fold, fold them (writing them too if
    ``tee``) and write the fold's value to stdout (as JSON, when the results go to
    --output; to ``sink`` when they do not), also of the items that did not fail when
    some did (``--on-error=collect``). ``indexed``: results written with their index
    (the fold still gets the results alone)."""
    from clusterctl.api.pmap import ItemErrors

    results = run_.values(indexed=indexed)
    try:
        if fold is None:
            write_results(results, sink, indexed)
            return
        fn, accumulator = fold
        try:
            for found in results:
                index, value = found if indexed else (None, found)
                if tee and indexed:
                    sink.write_indexed(index, value)
                elif tee:
                    sink.write(value)
                accumulator = _fold_one(fn, accumulator, value, script)
        except ItemErrors:
            _write_fold(accumulator, sink, tee, console)
            raise
        _write_fold(accumulator, sink, tee, console)
    except BrokenPipeError:
        silence_stdout()
    finally:
        results.close()
        try:
            sink.flush()
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            silence_stdout()


def _write_fold(value, sink, tee: bool, console) -> None:
    """The fold's value: to stdout beside a --output file (above the live view when
    both are on one terminal), else where the results would have gone."""
    if not tee:
        sink.write(value)
        return
    from clusterctl.cli.output import LinesAboveProgress, on_the_same_terminal

    out = sys.stdout
    if console is not None and on_the_same_terminal(out, console.file):
        out = LinesAboveProgress(console)
    JsonLines(out).write(value)
    out.flush()


def _fold_one(fn, accumulator, value, script: str):
    try:
        return fn(accumulator, value)
    except Exception as exc:  # noqa: BLE001 - the user's fold: show their traceback
        raise ScriptError(f"fold raised on a result: {type(exc).__name__}: {exc}\n"
                          + user_traceback(exc, script)) from None
