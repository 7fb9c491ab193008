"""The command line as people type it: durations with units, the global options after
the command as well as before it, and a function named ``MODULE.FUNCTION`` or
``MODULE FUNCTION``. Parsing only; the commands use these."""

from __future__ import annotations

import re

import click

from clusterctl.errors import UsageError

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_UNITS = {None: 1.0, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Seconds(click.ParamType):
    """A duration: a number of seconds (``30``, ``2.5``) or one with a unit (``500ms``,
    ``5s``, ``2m``, ``1h``); more than 0, or 0 too when ``zero`` is allowed."""

    name = "seconds"

    def __init__(self, zero: bool = False) -> None:
        self.zero = zero

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = _DURATION.fullmatch(str(value))
            if match is None:
                self.fail(f"not a number of seconds: {value!r} (write 30, 2.5, 500ms, 5s, 2m "
                          "or 1h)", param, ctx)
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds < 0 or seconds == 0 and not self.zero:
            self.fail(f"{value!r} is {'less than 0' if seconds < 0 else 'no time'}: give "
                      f"{'0 or ' if self.zero else ''}more than 0 seconds", param, ctx)
        return seconds


def globals_first(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    """``args`` with the global options written after the command moved before it
    (``clusterctl ps --json`` as ``clusterctl --json ps``), where the command has no
    option of that name itself (rpc's ``--timeout`` stays rpc's). What follows ``--``
    is the function's, and stays."""
    takes = {name: not (p.is_flag or p.count) for p in group.params if isinstance(p, click.Option)
             for name in p.opts + p.secondary_opts}
    at = 0
    while at < len(args):
        name = args[at].split("=", 1)[0]
        if args[at] == "--" or not args[at].startswith("-"):
            break
        at += 1 + (takes.get(name, False) and "=" not in args[at])
    if at >= len(args) or args[at] == "--":
        return args
    command = group.get_command(ctx, args[at])
    if command is None:
        return args
    own = _option_names(command, ctx)
    moved: list[str] = []
    rest: list[str] = []
    i = at + 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in takes and name not in own:
            width = 1 + (takes[name] and "=" not in arg)
            moved += args[i:i + width]
            i += width
            continue
        rest.append(arg)
        i += 1
    return args[:at] + moved + [args[at]] + rest


def _option_names(command: click.Command, ctx: click.Context) -> set[str]:
    names = {name for p in command.get_params(ctx) for name in p.opts + p.secondary_opts}
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            names |= _option_names(command.get_command(ctx, sub), ctx)
    return names


def function_named(first: str, rest: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The function a command names, as ``"module:function"``, and the arguments left:
    ``math.pow 2 10`` or ``math pow 2 10``. A dotted first word is MODULE.FUNCTION
    unless it is a module importable here (``os.path join /tmp x``: ``os.path``'s
    ``join``)."""
    if "." in first.strip(".") and not _a_module_here(first):
        module, _, function = first.rpartition(".")
        return f"{module}:{function}", rest
    if not rest:
        raise UsageError(f"{first} names a module: which of its functions?",
                         hint=f"write {first}.FUNCTION, or {first} FUNCTION")
    return f"{first}:{rest[0]}", rest[1:]


def _a_module_here(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # (its parent is no package, or is not here)
        return False
