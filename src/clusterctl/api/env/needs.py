"""Which modules a call needs on the node: those its pickle refers to (a function or
class pickled by reference, a module a by-value function uses, the class of an
argument) and those its by-value functions import when they run (``import`` inside a
function body). Only the top-level names matter: a package travels whole."""

from __future__ import annotations

import re
import sys
import types
from typing import Any, Callable

_STRINGS = frozenset(("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "STRING",
                      "BINSTRING", "SHORT_BINSTRING"))
_GETS = frozenset(("GET", "BINGET", "LONG_BINGET"))
_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))
MAX_OPCODES = 200_000  # a pickle longer than this is read this far (its types repeat)
QUICK_SCAN = 1 << 16  # a pickle up to this size is read for names only (see ``names_in``)
_SHORT_STRING = re.compile(rb"\x8c([\x01-\xff])")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def names_in(data: bytes) -> set[str]:
    """Every short string of a small pickle that could be a module's name: a superset of
    the modules it refers to (each is a short string the first time it comes), found
    ten times faster than by reading the pickle's operations; what is not a module the
    controller knows is dropped later (``top_levels``, ``packages_for``)."""
    found = set()
    modules = sys.modules
    for match in _SHORT_STRING.finditer(data):
        start = match.end()
        try:
            text = data[start:start + match.group(1)[0]].decode()
        except UnicodeDecodeError:
            continue
        if text in modules or (_MODULE_NAME.match(text) and text.partition(".")[0] in modules):
            found.add(text)
    return found


def modules_referred(data: bytes) -> set[str]:
    """The modules ``data`` may refer to: quickly for a small pickle (``names_in``, a
    superset), by its operations for a large one (whose long binary parts are skipped)."""
    return names_in(data) if len(data) <= QUICK_SCAN else modules_in_pickle(data)


def modules_in_pickle(data: bytes) -> set[str]:
    """The modules ``data`` refers to: each global's module, and each module a by-value
    function uses (cloudpickle's ``subimport``)."""
    import pickletools

    found: set[str] = set()
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # the values pushed lately, strings or None
    after_subimport = False
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data)):
            if count > MAX_OPCODES:
                break
            name = op.name
            if name in _STRINGS or name in _GETS:
                value = arg if name in _STRINGS else memo.get(arg)
                if after_subimport and type(value) is str:
                    found.add(value)
                    after_subimport = False
                recent.append(value)
                del recent[:-4]
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in _PUTS:
                memo[arg] = recent[-1] if recent else None
            elif name == "STACK_GLOBAL":
                module, qualname = (recent[-2:] + [None, None])[:2] if len(recent) >= 2 else (None, None)
                if type(module) is str:
                    found.add(module)
                after_subimport = qualname in ("subimport", "dynamic_subimport")
                recent.append(None)
            elif name == "GLOBAL":
                module, _, qualname = str(arg).partition(" ")
                found.add(module)
                after_subimport = qualname in ("subimport", "dynamic_subimport")
                recent.append(None)
            else:
                recent.append(None)
                del recent[:-4]
    except Exception:  # noqa: BLE001 - a pickle we cannot read: what was found stands
        pass
    return found


_imported: dict[int, tuple[types.CodeType, frozenset]] = {}  # id(code) -> (code, modules)


def modules_imported(fn: Callable | None) -> set[str]:
    """The modules ``fn`` imports when it runs, and those the functions it uses import,
    for a function that travels by value (one of the script's, a lambda); nothing is
    run or imported to find them. Kept per code object (a lambda made anew for each call
    has the same)."""
    if not isinstance(fn, types.FunctionType):
        return set()
    known = _imported.get(id(fn.__code__))
    if known is not None and known[0] is fn.__code__:
        return set(known[1])
    found = _imported_now(fn)
    if len(_imported) > 1024:
        _imported.clear()
    _imported[id(fn.__code__)] = (fn.__code__, frozenset(found))
    return found


def by_reference(obj) -> bool:
    """Whether cloudpickle pickles the function or class ``obj`` by reference (its module
    is imported where it is unpickled), as it decides: it can be found again under its
    module and name, and its module is neither the main script nor registered to travel
    by value. A lambda, a function defined in another, a script's function travel by
    value: their module is not needed, what they use is."""
    module_name = getattr(obj, "__module__", None)
    module = sys.modules.get(module_name or "")
    if module is None or module_name in ("__main__", "__mp_main__"):
        return False
    cloudpickle = sys.modules.get("cloudpickle")
    if cloudpickle is not None:
        try:
            registered = cloudpickle.list_registry_pickle_by_value()
        except AttributeError:
            registered = ()
        parts = module_name.split(".")
        if any(".".join(parts[:i]) in registered for i in range(1, len(parts) + 1)):
            return False  # (it or a package it is in travels by value)
    found = module
    for part in getattr(obj, "__qualname__", "").split("."):
        found = getattr(found, part, None)
    return found is obj


def _imported_now(fn: Callable) -> set[str]:
    import dis

    found: set[str] = set()
    seen: set[int] = set()
    todo = [fn]
    while todo:
        func = todo.pop()
        if id(func) in seen:
            continue
        seen.add(id(func))
        if by_reference(func):  # (its module is imported there: it brings what it needs)
            found.add(func.__module__)
            continue
        codes = [func.__code__]
        while codes:
            code = codes.pop()
            for instruction in dis.get_instructions(code):
                if instruction.opname == "IMPORT_NAME":
                    found.add(instruction.argval)
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
            for name in code.co_names:
                if name in func.__globals__:
                    _refers(func.__globals__[name], found, todo)
        for cell in func.__closure__ or ():
            try:
                _refers(cell.cell_contents, found, todo)
            except ValueError:  # (an empty cell)
                continue
        for value in (func.__defaults__ or ()) + tuple((func.__kwdefaults__ or {}).values()):
            _refers(value, found, todo)
    return found


def _refers(value, found: set, todo: list) -> None:
    """What a function's global, closure cell or default needs: a module, a function's
    own needs (by value) or its module (by reference), a class's or a value's module
    (when it travels by reference)."""
    if isinstance(value, types.ModuleType):
        found.add(value.__name__)
    elif isinstance(value, types.FunctionType):
        todo.append(value)
    else:
        cls = value if isinstance(value, type) else type(value)
        if by_reference(cls):
            found.add(cls.__module__)


NOT_SHIPPED = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {
    "__main__", "builtins", "clusterctl", "clusterctl_node", "cloudpickle", "__mp_main__",
    "__clusterctl_script__"}  # the standard library, what every node has, the script itself


def top_levels(modules: set[str]) -> set[str]:
    """The top-level names of ``modules`` that are neither the standard library's nor
    what every node has (clusterctl's agent, cloudpickle), nor the script itself."""
    return {m.partition(".")[0] for m in modules if m} - NOT_SHIPPED


def needed(fn: Callable | None, data: bytes) -> set[str]:
    """The top-level modules a call of ``fn`` pickled as ``data`` needs on the node."""
    return top_levels(modules_referred(data) | modules_imported(fn))
