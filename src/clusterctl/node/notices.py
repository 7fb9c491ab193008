"""What a process is told about others, as messages: ``Down`` (a monitored process
ended) and ``Exit`` (a linked one did). One class each, for a process
(``clusterctl.actor``) and a program (``Cluster.monitor(to).wait()``) alike. They travel
pickled, as tuples with names. Ships to hosts: the standard library only."""

from __future__ import annotations


class Down(tuple):
    """A monitor's notice: the monitored process ended. ``ref`` is what ``monitor``
    returned (a program's monitor: the process watched), ``process`` its id, ``reason``
    "normal", "killed", "noproc" (it was gone already), the error, or why its node was
    lost, and ``traceback`` the remote traceback of an error ("" otherwise)."""

    __slots__ = ()

    def __new__(cls, ref, process, reason, traceback=""):
        return tuple.__new__(cls, (ref, process, reason, traceback))

    ref = property(lambda s: s[0])
    process = property(lambda s: s[1])
    reason = property(lambda s: s[2])
    traceback = property(lambda s: s[3])

    def __getnewargs__(self):
        return tuple(self)

    def __repr__(self) -> str:
        return "Down(ref=%r, process=%r, reason=%r)" % (self[0], self[1], self[2])


class Exit(tuple):
    """A linked process ended, delivered as a message to a process that traps exits
    (``trap_exits()``); without trapping, an abnormal end kills the linked process too."""

    __slots__ = ()

    def __new__(cls, process, reason, traceback=""):
        return tuple.__new__(cls, (process, reason, traceback))

    process = property(lambda s: s[0])
    reason = property(lambda s: s[1])
    traceback = property(lambda s: s[2])

    def __getnewargs__(self):
        return tuple(self)

    def __repr__(self) -> str:
        return "Exit(process=%r, reason=%r)" % (self[0], self[1])
