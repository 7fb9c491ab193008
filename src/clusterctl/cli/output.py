"""Where a map-like command's results go, and in what form: JSON lines (the default,
what any program reads) or pickle records (``--format pickle``: every result exactly as
the function returned it; ``clusterctl.read_results`` reads them back), to stdout or
``--output FILE``. On the terminal the live progress is drawn on, lines go above it."""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator

from clusterctl.errors import UsageError

FORMATS = ("json", "pickle")


class JsonLines:
    """Results as JSON lines; ``note()`` says what had to be converted for JSON."""

    def __init__(self, out) -> None:
        from clusterctl.render.jsonvalues import JsonValues

        self.out = out
        self.json = JsonValues()

    def write(self, value: Any) -> None:
        self.out.write(self.json.dumps(value) + "\n")

    def write_indexed(self, index: int, value: Any) -> None:
        self.out.write('{"index": %d, "result": %s}\n' % (index, self.json.dumps(value)))

    def flush(self) -> None:
        self.out.flush()

    def note(self) -> str | None:
        return self.json.note()


class PickleRecords:
    """Results as pickle records (``clusterctl.api.results_file``)."""

    def __init__(self, out) -> None:
        from clusterctl.api.results_file import ResultsWriter

        self.writer = ResultsWriter(out)

    def write(self, value: Any) -> None:
        self.writer.write(value)

    def write_indexed(self, index: int, value: Any) -> None:
        self.writer.write((index, value))

    def flush(self) -> None:
        self.writer.flush()

    def note(self) -> str | None:
        return None


def open_results(output_path: str | None, fmt: str, progress_console=None):
    """The sink results are written to, and how to close what was opened for it.
    ``progress_console``: the console live progress is drawn on (None: none is)."""
    if fmt == "pickle":
        if output_path is None:
            if sys.stdout.isatty():
                raise UsageError("--format pickle writes binary records, not for a terminal",
                                 hint="give --output FILE, or redirect stdout to a file")
            return PickleRecords(sys.stdout.buffer), _no_op
        fh = _open(output_path, "wb")
        return PickleRecords(fh), fh.close
    if output_path is None:
        out = sys.stdout
        if progress_console is not None and on_the_same_terminal(out, progress_console.file):
            out = LinesAboveProgress(progress_console)
        return JsonLines(out), _no_op
    fh = _open(output_path, "w", encoding="utf-8")
    return JsonLines(fh), fh.close


def _open(path: str, mode: str, **kwargs):
    try:
        return open(path, mode, **kwargs)
    except OSError as exc:
        raise UsageError(f"cannot write --output {path}: {exc.strerror}") from None


def write_results(results: Iterator[Any], sink, indexed: bool) -> None:
    if indexed:
        for index, value in results:
            sink.write_indexed(index, value)
    else:
        for value in results:
            sink.write(value)


def on_the_same_terminal(out, err) -> bool:
    """Whether ``out`` and ``err`` are one terminal (the usual case: both on the screen)."""
    try:
        return out.isatty() and os.path.samestat(os.fstat(out.fileno()), os.fstat(err.fileno()))
    except (AttributeError, OSError, ValueError):
        return False


class LinesAboveProgress:
    """Results bound for the terminal the live progress is drawn on. Written straight to
    stdout, a result lands inside the live view: fused with its line, or erased when it
    is drawn again. Each whole line goes through the progress console instead, which
    prints it above the view; on one terminal, the screen shows the same."""

    def __init__(self, console) -> None:
        self.console = console
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self.write("\n")


def silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _no_op() -> None:
    return None
