"""One root for every error clusterctl raises, with the exit code and a hint on the class.

The API raises these and never prints or exits; the CLI renders one of them once, at
the edge, as one line naming the cause and the fix, and exits with ``exit_code``.
"""

from __future__ import annotations

import linecache
import re

# the root, the exit codes and the process errors are the node's (process code raises
# them on hosts, where only the node's modules are): one family for a program and a process
from clusterctl.node.failures import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401
                                      EXIT_SOME_NODES_FAILED, EXIT_USAGE, CallFailed,
                                      ClusterError, MailboxFull, NameTaken, NoProcess,
                                      NotInProcess, ProcessError, ReceiveTimeout)


_FRAME = re.compile(r'  File "([^"]+)", line (\d+), in .*')


def with_source_lines(traceback: str) -> str:
    """A remote traceback with the source line of each frame the host could not show
    (its file is not there: the script and the modules that travelled with a function
    keep their names here, see ``api.pickling``), read from the file on this machine."""
    lines = traceback.splitlines()
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        frame = _FRAME.fullmatch(line)
        if frame is None or (i + 1 < len(lines) and lines[i + 1].startswith("    ")):
            continue
        source = linecache.getline(frame.group(1), int(frame.group(2))).strip()
        if source:
            out.append("    " + source)
    return "\n".join(out) + ("\n" if traceback.endswith("\n") else "")


def restore_error(cls: type, args: tuple, state: dict) -> BaseException:
    """An error of ``cls`` rebuilt from its ``args`` and attributes, without calling its
    ``__init__`` (whose arguments differ from class to class): for errors that travel
    pickled between processes."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UsageError(ClusterError):
    """The command line asked for something that cannot be: exit code 2."""

    summary = "usage error"

    exit_code = EXIT_USAGE


class HostsFileError(ClusterError):
    """A hosts file that cannot be read or parsed; the message names file and line."""

    summary = "bad hosts file"

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.path = path
        self.line = line


class UnknownNodeError(UsageError):
    """A node name that the hosts file does not define."""

    summary = "no such node"


class NodeError(ClusterError):
    """Something went wrong with one node; ``node`` names it."""

    def __init__(self, node: str, message: str, *, hint: str | None = None,
                 summary: str | None = None) -> None:
        super().__init__(f"{node}: {message}", hint=hint, summary=summary)
        self.node = node
        self.reason = message


class NodeStartError(NodeError):
    """A node process could not be started on its host."""

    summary = "did not start"


class NodeUnreachable(NodeError):
    """No connection to the node could be made (host down, refused, timed out)."""

    summary = "unreachable"


class HandshakeError(NodeError):
    """The node answered but the handshake failed (cookie, protocol, Python version)."""

    summary = "handshake failed"


class ProtocolError(NodeError):
    """The peer sent something that is not clusterctl's wire protocol."""

    summary = "protocol error"


class NodeLost(NodeError):
    """The connection to a node broke while work was in flight.

    For an rpc the outcome is unknown: the function may or may not have run.
    """

    summary = "lost"


class CallTimeout(NodeError):
    """A call did not finish within its timeout; the remote work was cancelled."""

    summary = "timed out"


class SerializationError(ClusterError):
    """A function, argument or result could not be pickled or unpickled."""

    summary = "cannot pickle"


class RemoteError(NodeError):
    """The remote function raised. Carries the remote type, message and traceback."""

    def __init__(self, node: str, remote_type: str, remote_message: str,
                 remote_traceback: str = "", *, exception: BaseException | None = None) -> None:
        super().__init__(node, f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = with_source_lines(remote_traceback) if remote_traceback else ""
        self.exception = exception

    def __str__(self) -> str:
        text = self.message
        if self.remote_traceback:
            text += "\n\nRemote traceback (node %s):\n%s" % (self.node, self.remote_traceback.rstrip())
        return text

    def __reduce__(self):  # picklable, so results-as-values can travel between processes
        return (self.__class__, (self.node, self.remote_type, self.remote_message,
                                 self.remote_traceback))


class UnpicklableResult(RemoteError, SerializationError):
    """The function ran, but its result cannot be pickled to travel back (a generator,
    a lock, an open file). The message names the result's type; the hint says what to
    return instead; there is no remote traceback, since none of it is the user's code."""

    summary = "result cannot be pickled"

    def __init__(self, node: str, remote_type: str, remote_message: str,
                 remote_traceback: str = "", *, exception: BaseException | None = None) -> None:
        super().__init__(node, remote_type, remote_message, remote_traceback, exception=exception)
        self.message = f"{node}: {remote_message}"
        self.args = (self.message,)
        self.reason = remote_message


class WorkerCrashed(RemoteError):
    """The worker process running the task died (segfault, SIGKILL, out of memory).

    The node replaced the worker and stays up; the task itself is failed.
    """

    summary = "worker crashed"


class Refused(NodeError):
    """A restricted host turned the request down: its owner's policy does not allow the
    function, or the request carried pickled code or data (which such a host never takes).
    Nothing ran."""

    summary = "refused"

    def __init__(self, node: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(node, message, hint=hint or "a restricted host runs only the "
                         "module.function names its owner allows, with plain data; ask the "
                         "host's owner to allow what you need")


class Cancelled(ClusterError):
    """The work was cancelled before it finished (Ctrl-C, a timeout, a stop)."""

    summary = "cancelled"

    exit_code = EXIT_INTERRUPTED


class HubError(ClusterError):
    """The hub (the per-user daemon holding the SSH connections) could not be started or
    reached, or was lost."""

    hint = ("run the command again: a new hub starts; set CLUSTERCTL_HUB=off to connect "
            "without one")


