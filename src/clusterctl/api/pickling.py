"""Pickling what a call sends (functions, arguments, pmap's function) with cloudpickle."""

from __future__ import annotations

from typing import Any

from clusterctl import errors


def dumps(obj: Any, what: str) -> bytes:
    """cloudpickle with a clear error naming what could not be pickled."""
    import pickle

    import cloudpickle

    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling raises many types
        raise errors.SerializationError(f"cannot pickle the {what}: {type(exc).__name__}: {exc}",
                                        hint="pass plain data, and functions that do not "
                                             "capture open files, sockets, locks or threads")
