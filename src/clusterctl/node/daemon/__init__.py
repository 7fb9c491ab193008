"""The node process (``node``: start, the loop's turns, housekeeping, stop) and its
connections (``sessions``: the handshake, what each connection asks, the gate a
restricted node's policy puts at its door). It composes the other rooms: the worker
pool, the spawned processes, a restricted node's policy."""
