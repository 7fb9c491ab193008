"""clusterctl's error root, and the errors of spawned processes: one family, raised alike
by the API in a program and by ``clusterctl.actor`` inside a process, so a program and
a process catch the same classes (``except clusterctl.errors.NoProcess``).

It is here, in the node's shared part, because process code runs on hosts, where only
the node's modules are; ``clusterctl.errors`` takes these classes from here and adds the
controller's own. ``KINDS`` is the one table from the kind a node names a process error
by, on the wire (``"noproc"``, ``"full"``...), to its class. Ships to hosts: the
standard library only.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOME_NODES_FAILED = 3
EXIT_INTERRUPTED = 130


class ClusterError(Exception):
    """Root of clusterctl's errors. ``hint`` says what the user can do about it;
    ``summary`` is the cause in a few words, for a table cell (``host key changed``,
    ``timed out``): each class has one, and an error may carry a more precise one."""

    exit_code = EXIT_ERROR
    hint: str | None = None
    summary = "failed"

    def __init__(self, message: str, *, hint: str | None = None,
                 summary: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        if summary is not None:
            self.summary = summary

    def one_line(self) -> str:
        """The cause and, when known, the fix, on one line."""
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ProcessError(ClusterError):
    """A request about a spawned process could not be done (see the subclasses); the
    message names the process (its id names its node)."""

    summary = "process error"


class NotInProcess(ProcessError):
    """A process operation (``receive``, ``reply``...) was called outside a spawned process."""

    summary = "not in a process"
    hint = "call it from a function run by clusterctl spawn or Cluster.spawn"


class NoProcess(ProcessError):
    """No process has that id or name: it ended, or never was."""

    summary = "no such process"
    hint = "clusterctl ps lists the processes and their names"


class NameTaken(ProcessError):
    """A process name is unique in the world, and this one is registered already."""

    summary = "name taken"
    hint = "pick another name, or clusterctl kill the process that holds it"


class MailboxFull(ProcessError):
    """The receiver's mailbox had no room: mailboxes are bounded in bytes."""

    summary = "mailbox full"
    hint = "the receiver does not keep up: send less, or spawn it with a larger mailbox"


class CallFailed(ProcessError):
    """The called process ended, or could not be reached, before it replied."""

    summary = "call failed"


class ReceiveTimeout(ProcessError, TimeoutError):
    """``receive`` or ``call`` waited ``timeout`` seconds for nothing."""

    summary = "timed out"


# the kinds a node names process errors by on the wire, and their classes
KINDS: dict[str, type] = {
    "noproc": NoProcess, "full": MailboxFull, "taken": NameTaken, "exited": CallFailed,
    "remote": CallFailed, "usage": ProcessError, "timeout": ReceiveTimeout,
}


def process_error(kind, message: str, default: type = ProcessError) -> ProcessError:
    """The error a node's ``kind`` names, with ``message`` (``default`` for a kind not
    in ``KINDS``)."""
    return KINDS.get(kind, default)(message)


# kinds of a spawn's failure that are Python's own errors, raised by the process's code
PYTHON_KINDS = {"import": "ImportError", "unpickle": "UnpicklingError"}


def type_name(kind, default: str = "ProcessError") -> str:
    """The class name a failed result carries for ``kind`` (what a program is shown)."""
    cls = KINDS.get(kind)
    return cls.__name__ if cls is not None else PYTHON_KINDS.get(kind, default)
