"""What a spawned process's code calls: ``receive``, ``send``, ``call``, ``reply``,
``self``, ``register``, ``spawn``, ``link``, ``monitor``, ``kill``, ``exit`` and the rest.

    from clusterctl.actor import receive, reply

They work inside a process started by ``clusterctl spawn`` or ``Cluster.spawn``; the
same module runs on the node (see ``clusterctl.node.processes.runtime``).
"""

from clusterctl.node.processes.runtime import (
    CallFailed, Down, Exit, MailboxFull, NameTaken, NoProcess, NotInProcess, ProcessError,
    ReceiveTimeout, call, caller, demonitor, exit, kill, link, monitor, receive, register, reply,
    self, send, sender, spawn, trap_exits, unlink, whereis)

__all__ = ["CallFailed", "Down", "Exit", "MailboxFull", "NameTaken", "NoProcess", "NotInProcess",
           "ProcessError", "ReceiveTimeout", "call", "caller", "demonitor", "exit", "kill", "link",
           "monitor", "receive", "register", "reply", "self", "send", "sender", "spawn",
           "trap_exits", "unlink", "whereis"]
