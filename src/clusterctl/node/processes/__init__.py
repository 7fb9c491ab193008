"""Spawned processes: ``runtime`` (what runs inside one: its mailbox, ``receive``,
``send``, ``call``; user code imports it as ``clusterctl.actor``), ``table`` (the node's
processes: started, ended, restarted), ``requests`` (what controllers and processes ask
about them), ``post`` (delivering frames to them), ``peers`` and ``relay`` (what
crosses to other nodes, through the hub, in order and once each), and ``groups`` (a
supervision group, itself a process)."""
