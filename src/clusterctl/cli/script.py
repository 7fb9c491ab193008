"""The user's script, run here once as a module of its own (its ``if __name__ ==
"__main__"`` block does not run): its namespace, the function it names, the items its
``inputs()`` gives, and its own traceback when it raises."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable, Iterable, Iterator

from clusterctl.errors import ClusterError, UsageError

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
