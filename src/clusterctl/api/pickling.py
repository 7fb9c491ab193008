"""Pickling what a call sends (functions, arguments, pmap's function): plain data with
the standard pickle, anything else with cloudpickle. Both load the same way on a worker
(``cloudpickle.loads`` is ``pickle.loads``); plain data spares a command the import of
cloudpickle."""

from __future__ import annotations

import functools
import io
import pickle
import types
from typing import Any

from clusterctl import errors

_SCALARS = frozenset((int, float, str, bytes, bool, type(None), complex))
_CONTAINERS = frozenset((tuple, list, dict, set, frozenset))
MAX_PLAIN_CHECK = 1000  # values looked at before cloudpickle is used anyway


def dumps(obj: Any, what: str) -> bytes:
    """Pickle ``obj``, with a clear error naming what could not be pickled."""
    if is_plain(obj):
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        with io.BytesIO() as out:
            _pickler()(out, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
            return out.getvalue()
    except Exception as exc:  # noqa: BLE001 - pickling raises many types
        raise errors.SerializationError(f"cannot pickle the {what}: {type(exc).__name__}: {exc}",
                                        hint="pass plain data, and functions that do not "
                                             "capture open files, sockets, locks or threads")


def is_plain(obj: Any) -> bool:
    """Numbers, strings, bytes, None, and tuples, lists, dicts and sets of them (a few
    nested levels, at most ``MAX_PLAIN_CHECK`` values): what plain pickle carries alike."""
    todo, seen = [obj], 0
    while todo:
        value = todo.pop()
        seen += 1
        if seen > MAX_PLAIN_CHECK:
            return False
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind not in _CONTAINERS:
            return False
        todo.extend(value.items() if kind is dict else value)
    return True


@functools.cache
def _pickler():
    """cloudpickle's Pickler, but a function sent by value keeps its file's name.
    cloudpickle (3.1 on) names every such code object ``<dynamic-code>``, so a remote
    traceback could not say which file a line is in, the script's or a helper module's;
    with the name kept, it says, and the controller adds the source line
    (``errors.RemoteError``)."""
    import collections

    import cloudpickle

    by_value = cloudpickle.Pickler.dispatch_table[types.CodeType]

    def code_with_its_file(code: types.CodeType):
        rebuild, args = by_value(code)
        return rebuild, tuple(code.co_filename if type(a) is str and a == DYNAMIC_CODE else a
                              for a in args)

    class FileNamingPickler(cloudpickle.Pickler):
        dispatch_table = collections.ChainMap({types.CodeType: code_with_its_file},
                                              cloudpickle.Pickler.dispatch_table)

    return FileNamingPickler


DYNAMIC_CODE = "<dynamic-code>"  # cloudpickle's name for the file of code sent by value
