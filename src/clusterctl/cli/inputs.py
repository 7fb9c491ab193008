"""Where the items of a map or a pipeline come from: the script's ``inputs()``, or
``--input FILE`` / stdin, read as JSON lines or, with ``--lines``, as plain text lines."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterator

import click

from clusterctl.cli.script import script_inputs
from clusterctl.errors import UsageError


def input_options(command):
    """``--input`` and ``--lines``, as pmap and pipeline take them."""
    command = click.option(
        "--lines", is_flag=True,
        help="Read --input or stdin as plain text: each line (without its line ending) is "
             "one item, a string; blank lines are skipped.")(command)
    return click.option(
        "--input", "-i", "input_path", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
        help="Items as JSON lines ('-': stdin; --lines: text lines). Default: the "
             "script's inputs(), else stdin.")(command)


def json_lines(stream, name: str) -> Iterator[Any]:
    """Items from JSON lines, read one line at a time (blank lines are skipped)."""
    for number, line in enumerate(_decoded(stream, name, "JSON lines"), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{name}:{number}: not a JSON value: {exc}",
                             hint="give one JSON value per line, or --lines for plain text") from None


def text_lines(stream, name: str) -> Iterator[str]:
    """Items from text lines, read one line at a time: each line without its line ending
    (blank lines are skipped)."""
    for line in _decoded(stream, name, "--lines"):
        line = line.rstrip("\r\n")
        if line:
            yield line


def _decoded(stream, name: str, what: str) -> Iterator[str]:
    """The lines of a text stream, with bytes that are not UTF-8 said in one line."""
    try:
        yield from stream
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 text ({exc.reason}: byte "
                         f"{exc.object[exc.start:exc.start + 1]!r})",
                         hint=f"give {what} as UTF-8 text") from None


def open_inputs(namespace: dict, script: str, input_path: str | None, lines: bool = False):
    """The items, how many (None: not known), and how to close what was opened for them.
    With ``lines``, --input or stdin is read as text lines (stdin when there is no
    --input, even if the script defines ``inputs()``)."""
    read = text_lines if lines else json_lines
    if input_path is not None and input_path != "-":
        try:
            fh = open(input_path, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --input {input_path}: {exc.strerror}") from None
        return read(fh, input_path), None, fh.close
    if input_path is None and not lines:
        items, total = script_inputs(namespace, script)
        if items is not None:
            return items, total, _no_op
    if input_path is None and (sys.stdin is None or sys.stdin.isatty()):
        kind = "text lines" if lines else "JSON lines"
        if lines:
            message = "no items: --lines reads --input FILE or stdin, and stdin is a terminal"
        elif script.startswith("--call"):
            message = f"no items for {script}: pass --input FILE (JSON lines) or pipe them to stdin"
        else:
            message = f"no items: {script} defines no inputs(), and no --input was given"
        raise UsageError(message, hint=("define `def inputs():` in the script, " if not lines else "")
                         + f"pass --input FILE ({kind}), or pipe {kind} to stdin")
    stdin, close = _strict_stdin()
    return read(stdin, "<stdin>"), None, close


def _strict_stdin():
    """Standard input as UTF-8 that fails on bytes that are not (Python's own stdin lets
    them through as stand-ins, which would travel as items), and how to close it; the
    stream itself when it has no descriptor (a test runner's)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdin, _no_op
    stream = open(fd, encoding="utf-8", closefd=False)
    return stream, stream.close


def _no_op() -> None:
    return None
