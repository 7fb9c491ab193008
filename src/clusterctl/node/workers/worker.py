"""A worker slot: one forked process that runs tasks one at a time for its node, over
its channel (workers/channel.py); what the tasks print goes to their controllers
(workers/output.py).
"""

from __future__ import annotations

import collections.abc
import importlib
import json
import os
import pickle
import signal
import sys
import time
import traceback

from .. import ops, plain, wire
from . import envs, output, wants
from .channel import HOLD_FLAG, NodeChannel

HOLD_SECONDS = 0.001  # a reply may be held back (see channel.HOLD_FLAG) if its task took less

try:  # cloudpickle ships with the agent; results and exceptions travel through it
    import cloudpickle
except ImportError:  # pragma: no cover - the bundle always carries it
    cloudpickle = None


def _dumps(obj) -> bytes:
    if cloudpickle is not None:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def dumps_result(value) -> bytes:
    """A result pickled: plain ``pickle`` first (several times faster for small values),
    cloudpickle when that fails. Plain pickle refers to functions and classes by name
    only after checking that the name leads back to the very same object, so where it
    succeeds the receiver gets what cloudpickle would have sent; where it cannot (a
    lambda, a class sent by value), it raises and cloudpickle takes over."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - PicklingError, TypeError, AttributeError, ...
        pass  # (outside the handler, so cloudpickle's own error is not chained to this one)
    return _dumps(value)


def qualified_type(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def describe_exception(exc: BaseException, node: str, kind: str = "raised",
                       skip_frames: int = 1) -> dict:
    """An exception as data: its type, message and the remote traceback, user frames only
    (none of the node's, cloudpickle's or the import machinery's: a user's mistake, a
    function that is not callable, shows no frames of ours)."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        tb = tb.tb_next if tb is not None else None
    if tb is None or kind == "import":  # nothing of the user's ran: no frames to show
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        described = traceback.TracebackException(type(exc), exc, tb)
        _only_user_frames(described, set())
        chained = described.__cause__ or described.__context__
        text = "".join(described.format()) if described.stack or chained else ""
    return {"type": qualified_type(exc), "message": str(exc), "traceback": text,
            "node": node, "kind": kind}


# the node's package and cloudpickle's: their frames are ours, never the user's
_NOT_USERS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                   for m in (sys.modules[__name__.split(".")[0]], cloudpickle) if m is not None)


def _only_user_frames(described: traceback.TracebackException, seen: set) -> None:
    if id(described) in seen:
        return
    seen.add(id(described))
    described.stack = traceback.StackSummary.from_list(
        [f for f in described.stack
         if not f.filename.startswith(_NOT_USERS) and not f.filename.startswith("<frozen ")])
    for chained in (described.__cause__, described.__context__):
        if chained is not None:
            _only_user_frames(chained, seen)


def item_failure(fn, exc: BaseException, node: str) -> dict:
    """An item's exception as data. A function that wraps others (a pipeline's stages)
    says how many frames of its own to leave out (``wrapper_frames``) and which of its
    parts raised (``failed_in``, reported as ``where``)."""
    info = describe_exception(exc, node, skip_frames=1 + getattr(fn, "wrapper_frames", 0))
    where = getattr(fn, "failed_in", None)
    if where:
        info["where"] = where
    return info


def unpicklable_result(value, exc: BaseException, node: str) -> dict:
    """The error of a result that cannot travel back, as data: one line naming its type,
    a hint of what to return instead, and no traceback (the frames would be ours and
    the pickler's, none of them the user's)."""
    cls = type(value)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    problem = str(exc) or type(exc).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    message = f"the result could not be pickled: the function returned {article} {name}"
    if f"'{name}'" not in problem:
        message += f" ({problem})"
    if isinstance(value, collections.abc.Iterator):
        hint = "return a list instead: list(...) of it"
    else:
        hint = ("return plain data instead: numbers, strings, lists, dicts, or objects of "
                "classes the controller can import")
    return {"type": qualified_type(exc), "message": message, "traceback": "", "node": node,
            "kind": "unpicklable", "hint": hint}


def error_frame(task_id, error: dict, exc: BaseException | None = None) -> bytes:
    """A failed result; the exception itself rides along pickled when it can."""
    payload = b""
    if exc is not None:
        try:
            payload = _dumps(exc)
        except Exception:
            payload = b""
    return wire.encode({"op": "result", "id": task_id, "ok": False, "error": error}, payload)


class _LoadFailure:
    """A function that could not be unpickled here; calling it reports why."""

    def __init__(self, error: dict) -> None:
        self.error = error


def resolve_by_name(mod: str, fun: str):
    """``mod`` imported, then ``fun`` looked up in it (dots allowed: ``path.join``)."""
    fn = _resolved.get((mod, fun))
    if fn is not None:
        return fn
    fn = _resolve(mod, fun)
    if len(_resolved) >= RESOLVED_CACHE:
        _resolved.clear()
    _resolved[(mod, fun)] = fn
    return fn


RESOLVED_CACHE = 1024
_resolved: dict[tuple[str, str], object] = {}


def _resolve(mod: str, fun: str):
    obj = importlib.import_module(mod)
    for part in fun.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError("%s.%s is not callable (it is %s)" % (mod, fun, type(obj).__name__))
    return obj


class PlainTasks:
    """A worker's tasks of plain data: a function by name, JSON both ways, nothing
    pickled (what a restricted node takes, and any node for a map by name). Mixed into
    ``Worker``, which gives ``node``."""

    node: str

    def _plain_task(self, head: dict, payload, decode, what: str):
        """A plain task's function (by name) and its decoded data, with None; or, if
        either cannot be had, (None, (None, None), the error's frame)."""
        try:
            data = decode(payload)
        except plain.PlainDataError as exc:
            return None, (None, None), error_frame(head.get("id"), refused(
                "the %s are not plain data: %s" % (what, exc), self.node))
        try:
            return resolve_by_name(head["mod"], head["fun"]), data, None
        except BaseException as exc:  # noqa: BLE001
            return None, (None, None), error_frame(head.get("id"), describe_exception(
                exc, self.node, "import", 0))

    def plain_call(self, head: dict, payload) -> bytes:
        """A call by name with plain data's ``[args, kwargs]``; the result as plain data,
        an exception as text only (nothing is pickled either way)."""
        task_id = head.get("id")
        fn, (args, kwargs), failed = self._plain_task(head, payload, decode_arguments, "arguments")
        if failed is not None:
            return failed
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the exception goes back as text only
            return error_frame(task_id, describe_exception(exc, self.node))
        try:
            return wire.encode_ok_result(task_id, plain.dumps(value))
        except plain.PlainDataError as exc:
            return error_frame(task_id, not_plain_result(exc, self.node))

    def plain_map(self, head: dict, payload) -> bytes:
        """A batch of plain-data items for a function by name; the reply is plain data's
        ``[seconds, all_ok, data]`` as ``map`` gives it, an outcome being ``[true, value]``
        or ``[false, error dict]``."""
        task_id = head.get("id")
        fn, items, failed = self._plain_task(head, payload, decode_items, "items")
        if failed is not None:
            return failed
        started = time.perf_counter()
        values: list = []
        outcomes = None  # one [ok, value or error] per item, once an item failed
        for item in items:
            try:
                value = fn(item)
            except BaseException as exc:  # noqa: BLE001
                if outcomes is None:
                    outcomes = [[True, v] for v in values]
                outcomes.append([False, describe_exception(exc, self.node)])
                continue
            if outcomes is None:
                values.append(value)
            else:
                outcomes.append([True, value])
        spent = time.perf_counter() - started
        if outcomes is None:
            try:
                return wire.encode_ok_result(task_id, plain.dumps([spent, True, values]))
            except plain.PlainDataError:  # find which result could not travel
                outcomes = [[True, v] for v in values]
        for outcome in outcomes:
            if outcome[0]:
                try:
                    plain.dumps(outcome[1])
                except plain.PlainDataError as exc:
                    outcome[:] = [False, not_plain_result(exc, self.node)]
        return wire.encode_ok_result(task_id, plain.dumps([spent, False, outcomes]))


class Worker(PlainTasks):
    """The loop of one worker process."""

    READ_APART = ("envgiven",)  # the answer to ``ask``, taken under WANT_SEQ as it comes
    ASKS = True  # whether a missing module is asked of the task's controller (``wants``)

    def __init__(self, sock, node: str) -> None:
        self.channel = NodeChannel(sock)
        self.node = node
        self.functions: dict[str, object] = {}
        self.holding = False  # whether the task being run may have its reply held back
        self.started = 0.0  # when it started (perf_counter)
        self.wants: wants.Wants | None = None  # set in the worker's own process (``run``)
        self.home: tuple[str, dict] | None = None  # the node's directory and environment
        self.unsituated: str | None = None  # why the tasks cannot run where they are to
        # what tasks print: to the controller in the worker's own process (``worker_main``)
        self.output: output.TaskOutput | None = None

    # -- tasks ------------------------------------------------------------------------

    def function(self, head: dict):
        key = head.get("fk")
        if key is not None:
            fn = self.functions.get(key)
            if fn is None:
                raise LookupError("function %s was never defined on this worker" % key)
            return fn
        return None

    def ask(self, module: str) -> tuple[list, str | None]:
        """While a task runs: ask the node for the packages that hold ``module`` (it asks
        the task's controller, see ``wants``) and wait for the answer: (ids, error)."""
        frame = self.channel.exchange(wire.encode({"op": "envwant", "module": module}))
        try:
            head = wire.frame_head(frame) if frame is not None else {}
        except wire.FrameError:
            head = {}
        ids, error = head.get("ids"), head.get("error")
        return (ids if type(ids) is list else []), (error if type(error) is str else None)

    def run(self) -> None:
        if self.ASKS:
            self.wants = wants.install(self.ask)
        takes = self.dispatch()
        channel = self.channel
        while True:
            msg = channel.read()
            if msg is None:
                return
            seq, frame = msg
            self.holding = seq >= HOLD_FLAG
            if self.holding:
                seq -= HOLD_FLAG
            head_len, _ = wire.check_header(frame, 1 << 62)
            head = wire.decode_head(frame[wire.HEADER_SIZE:wire.HEADER_SIZE + head_len])
            payload = memoryview(frame)[wire.HEADER_SIZE + head_len:]
            reply = takes(head["op"], head, payload)
            if reply is None:  # (a definition, or a function forgotten: no answer)
                continue
            quick = self.holding and time.perf_counter() - self.started < HOLD_SECONDS
            channel.poll()  # drops that came meanwhile are answered ahead of this reply
            channel.send(seq, reply, quick)

    def dispatch(self):
        """The one dispatch of what the node sends a worker (``ops.NODE_WORKER``): a task's
        handler returns its reply, a definition's nothing; an unknown kind is answered as
        a failed result."""
        return ops.Dispatch(ops.NODE_WORKER.takes("worker"), {
            "defn": lambda head, payload: self.define(head["key"], payload, head.get("env")),
            "forget": lambda head, payload: self.forget(head.get("key")),
            "situate": lambda head, payload: self.situate(payload),
            "call": lambda head, payload: self.task(self.call, head, payload),
            "map": lambda head, payload: self.task(self.map, head, payload),
        }, self.unknown_task)

    def forget(self, key) -> None:
        self.functions.pop(key, None)

    def situate(self, payload) -> None:
        """Where the next tasks run (``situate``, sent before the first task of a
        controller whose situation differs from the last): their working directory (the
        node's own if none is given) and the variables set in their environment over the
        node's own. A directory it cannot enter fails those tasks, saying why."""
        if self.home is None:
            self.home = (os.getcwd(), dict(os.environ))
        directory, environ = self.home
        try:
            spec = json.loads(bytes(payload) or b"{}")
        except ValueError:
            spec = {}
        env = spec.get("env") if isinstance(spec, dict) else None
        os.environ.clear()
        os.environ.update(environ)
        if isinstance(env, dict):
            os.environ.update({k: v for k, v in env.items() if type(k) is str and type(v) is str
                               and k and "=" not in k and "\0" not in k + v})
        cwd = spec.get("cwd") if isinstance(spec, dict) else None
        self.unsituated = None
        try:
            os.chdir(cwd if type(cwd) is str and cwd else directory)
        except OSError as exc:
            os.chdir(directory)
            self.unsituated = "cannot run in %s on this host: %s" % (cwd, exc.strerror)

    def task(self, run, head: dict, payload) -> bytes:
        if self.channel.held and not self.holding:  # a task not marked starts with nothing held back
            self.channel.flush()
        if self.unsituated is not None:
            return error_frame(head.get("id"), refused(self.unsituated, self.node))
        self.started = time.perf_counter()
        if envs.use(head.get("env")):  # (the packages it needs: first on the path)
            _resolved.clear()
        printed, asking = self.output, self.wants
        if printed is not None:
            printed.place = None  # (a call's lines name no item; a map sets its own)
        if asking is not None:
            asking.start_task()  # (what it imports that the host lacks is asked for)
        try:
            return run(head, payload)
        finally:
            if asking is not None:
                asking.end_task()
            if printed is not None:
                printed.task_ended()  # (what it printed goes ahead of its reply)

    def unknown_task(self, op: str, head: dict, payload) -> bytes:
        return self.task(lambda head, payload: error_frame(head.get("id"), {
            "type": "ProtocolError", "message": "unknown task operation %r" % op,
            "traceback": "", "node": self.node, "kind": "protocol"}), head, payload)

    def define(self, key: str, payload, env=None) -> None:
        try:
            envs.use(env)
            self.functions[key] = pickle.loads(payload)
        except BaseException as exc:  # noqa: BLE001 - reported on first use
            self.functions[key] = _LoadFailure(describe_exception(exc, self.node, "unpickle", 0))

    def _load_call(self, head: dict, payload):
        fn = self.function(head)
        if isinstance(fn, _LoadFailure):
            return fn, None, None
        packed_fn, args, kwargs = pickle.loads(payload)
        if fn is None:
            fn = packed_fn
        if fn is None:
            fn = resolve_by_name(head["mod"], head["fun"])
        return fn, args, kwargs

    def call(self, head: dict, payload) -> bytes:
        if head.get("enc") == "json":
            return self.plain_call(head, payload)
        task_id = head.get("id")
        try:
            fn, args, kwargs = self._load_call(head, payload)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back as data
            kind = "import" if isinstance(exc, (ImportError, AttributeError)) else "unpickle"
            return error_frame(task_id, describe_exception(exc, self.node, kind, 0), exc)
        if isinstance(fn, _LoadFailure):
            return error_frame(task_id, fn.error)
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            return error_frame(task_id, describe_exception(exc, self.node), exc)
        try:
            data = dumps_result(value)
        except BaseException as exc:  # noqa: BLE001
            return error_frame(task_id, unpicklable_result(value, exc, self.node))
        return wire.encode_ok_result(task_id, data)

    def map(self, head: dict, payload) -> bytes:
        """Apply one function to a batch. The reply's payload is ``(seconds, all_ok, data)``:
        the seconds spent in calls, and if every item succeeded the plain list of values,
        otherwise one outcome per item, ``(True, value)`` or ``(False, error dict,
        exception or None)``. Its head is the plain successful result."""
        if head.get("enc") == "json":
            return self.plain_map(head, payload)
        task_id = head.get("id")
        try:
            fn = self.function(head)
            if fn is None:
                fn = resolve_by_name(head["mod"], head["fun"])
            items = pickle.loads(payload)
        except BaseException as exc:  # noqa: BLE001
            return error_frame(task_id, describe_exception(exc, self.node, "unpickle", 0), exc)
        if isinstance(fn, _LoadFailure):
            return error_frame(task_id, fn.error)
        started = time.perf_counter()
        values: list = []
        outcomes = None
        printed, at = self.output, head.get("at") or 0
        if printed is not None:  # (the item a line is printed for: ``at`` + what is done)
            printed.place = (at, values)
        for item in items:
            try:
                value = fn(item)
            except BaseException as exc:  # noqa: BLE001
                if outcomes is None:
                    outcomes = [(True, v) for v in values]
                    if printed is not None:
                        printed.place = (at, outcomes)
                outcomes.append((False, item_failure(fn, exc, self.node), _picklable(exc)))
                continue
            if outcomes is None:
                values.append(value)
            else:
                outcomes.append((True, value))
        spent = time.perf_counter() - started
        if outcomes is None:
            try:
                return wire.encode_ok_result(task_id, dumps_result((spent, True, values)))
            except BaseException:  # noqa: BLE001 - find which result could not travel
                outcomes = [(True, v) for v in values]
        try:
            data = _dumps((spent, False, outcomes))
        except BaseException:  # noqa: BLE001 - find which result could not travel
            data = _dumps((spent, False, [_checked_outcome(o, self.node) for o in outcomes]))
        return wire.encode_ok_result(task_id, data)


def refused(message: str, node: str) -> dict:
    """A refusal as a result's error: one line, no traceback."""
    return {"type": "Refused", "message": message, "traceback": "", "node": node, "kind": "refused"}


def not_plain_result(exc: plain.PlainDataError, node: str) -> dict:
    return {"type": "PlainDataError", "message": "the result is not plain data: %s" % exc,
            "traceback": "", "node": node, "kind": "unpicklable",
            "hint": "results travel as plain data here (JSON): return numbers, strings, "
                    "lists, dicts, tuples or bytes"}


def decode_items(payload) -> list:
    """A map's items from plain data's JSON."""
    items = plain.loads(payload)
    if type(items) is not list:
        raise plain.PlainDataError("a map's items must be a list, not %s" % plain.kind_of(items))
    return items


def decode_arguments(payload) -> tuple[list, dict]:
    """A call's ``[args, kwargs]`` from plain data's JSON."""
    value = plain.loads(payload)
    if not (type(value) is list and len(value) == 2 and type(value[0]) is list and type(value[1]) is dict):
        raise plain.PlainDataError("a call's payload must be [arguments, keyword arguments]")
    if not all(type(k) is str for k in value[1]):
        raise plain.PlainDataError("keyword argument names must be strings")
    return value[0], value[1]


def _picklable(exc: BaseException):
    try:
        _dumps(exc)
        return exc
    except BaseException:  # noqa: BLE001
        return None


def _checked_outcome(outcome, node: str):
    try:
        _dumps(outcome)
        return outcome
    except BaseException as exc:  # noqa: BLE001
        return (False, unpicklable_result(outcome[1], exc, node), None)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its node dies, so no worker is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - not Linux: the EOF on the channel still ends us
        pass


def worker_main(sock, node: str, parent_pid: int, make=Worker) -> None:
    """Entry point in the forked child. Never returns. ``make(sock, node)`` gives the
    worker (a restricted node's ``PlainWorker`` sets its limits there first); what its
    tasks print goes to their controllers."""

    def body():
        worker = make(sock, node)
        worker.output = output.install(worker.channel.tell)
        return worker.run()

    run_child(body, parent_pid)


def run_child(body, parent_pid: int) -> None:
    """A forked child of the node (a worker, a spawned process): a process group of its
    own, killed with its node, then ``body()``, whose result is the exit status. Never
    returns."""
    code = 0
    try:
        try:  # a process group of its own: killing the group ends what its tasks started too
            os.setpgid(0, 0)
        except OSError:  # (the node did it first)
            pass
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent()
        if os.getppid() != parent_pid:
            os._exit(0)
        code = body() or 0
    except BaseException:  # noqa: BLE001
        traceback.print_exc(file=sys.__stderr__)  # (the node's log, whatever tasks print to)
        code = 1
    finally:
        try:
            sys.__stdout__.flush()
            sys.__stderr__.flush()
        except Exception:  # noqa: BLE001
            pass
        os._exit(code)
