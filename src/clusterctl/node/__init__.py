"""The node: the agent that runs on every host, shipped there by the controller (the
bundle renames this package ``clusterctl_node``), so everything here imports only the
standard library, cloudpickle (in a worker and a spawned process) and its own modules.

At the top, what the controller shares with the node (it imports nothing else of it):
``wire`` (frames, the handshake's proofs), ``ops`` (the tables of message kinds),
``addresses`` (process ids and names), ``plain`` (plain data for restricted hosts),
``boot`` (the boot conversation, the code cache, the run directory's checks, and the
helpers for processes and locks: it runs alone on a host, so they live there),
``failures`` (the error root and the process errors, one family for a program and a
process), ``notices`` (``Down``, ``Exit``), ``supervision`` (restart rules) and
``stages`` (a pipeline's fused stages). Beside them,
the node's own machinery: ``loop`` (the event loop), ``log``, ``aliases`` (the names
process code imports) and ``part`` (the interface through which the worker pool and the
spawned processes plug into the daemon).

The rooms:

- ``daemon/``: the node process, its connections and their sessions;
- ``workers/``: the worker slots, the forked processes they run in, and what runs there;
- ``processes/``: spawned processes, their table, routing between them and other nodes;
- ``restricted/``: the agent a host's owner installs, its policy, its plain-data worker.
"""
