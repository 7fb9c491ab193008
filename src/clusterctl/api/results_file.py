"""Results kept exactly: the file ``--format pickle`` writes, and ``read_results`` that
gives them back. JSON carries numbers, text, lists and dicts; a numpy array, a set, an
object of the user's own class come back from it changed. Here each result is pickled
(cloudpickle, so classes defined in the script travel too) and read back as it was.

The file is ``MAGIC``, then one record per result: its length (8 bytes, big-endian)
and its pickle. A run cut short leaves a file whose records are whole up to the last
one flushed; the reader gives those and then says the file ends in a torn record,
rather than stopping quietly as if the run had finished.

Reading unpickles, so it runs whatever code the file names: read only files you (or
your own runs) wrote.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO, Iterator

import cloudpickle

from clusterctl import errors

MAGIC = b"clusterctl results 1\n"
_LENGTH = struct.Struct(">Q")


class ResultsWriter:
    """Writes results to ``out`` (a binary file) as ``read_results`` reads them."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        out.write(MAGIC)

    def write(self, value: Any) -> None:
        data = cloudpickle.dumps(value, protocol=5)
        self.out.write(_LENGTH.pack(len(data)))
        self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def read_results(path: str) -> Iterator[Any]:
    """The results a ``--format pickle`` run wrote to ``path``, in the order written
    (``(index, result)`` pairs when it ran with ``--indexed``).

    Raises ``UsageError`` when ``path`` is not such a file, and after the last whole
    result when the file ends in a torn record (the run was cut short)."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise errors.UsageError(f"cannot read results file {path}: {exc.strerror}") from None
    with fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise errors.UsageError(f"{path} is not a results file written with --format pickle")
        count = 0
        while True:
            head = fh.read(_LENGTH.size)
            if not head:
                return
            data = fh.read(_LENGTH.unpack(head)[0]) if len(head) == _LENGTH.size else b""
            if len(head) < _LENGTH.size or len(data) < _LENGTH.unpack(head)[0]:
                raise errors.UsageError(
                    f"{path} ends in a torn record after {count:,} results: the run that "
                    "wrote it was cut short", hint="the results before it are whole")
            yield cloudpickle.loads(data)
            count += 1
