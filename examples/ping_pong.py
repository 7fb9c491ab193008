"""Two processes play ping-pong; the pinger reports the round trips it measured.

    python examples/ping_pong.py [ROUNDS]

With two or more nodes in the world, the players run on two of them.
"""

import sys
import time

from clusterctl.actor import receive, reply, self, send


def ponger():
    """Answer every ('ping', from, n) with ('pong', n); end on 'stop'."""
    while True:
        msg = receive()
        if msg == "stop":
            return
        _, sender, n = msg
        send(sender, ("pong", n))


def pinger(partner, rounds):
    """Play ``rounds`` rounds with ``partner``; answer the 'result' call with
    (rounds, seconds per round trip)."""
    started = time.perf_counter()
    for n in range(rounds):
        send(partner, ("ping", self(), n))
        # (selective: a 'result' call may already wait in the mailbox)
        assert receive(match=lambda m: m[0] == "pong") == ("pong", n)
    per_round = (time.perf_counter() - started) / rounds
    send(partner, "stop")
    receive(match=lambda m: m == "result")
    reply((rounds, per_round))


if __name__ == "__main__":
    from clusterctl import Cluster

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with Cluster() as cluster:
        nodes = cluster.nodes
        pong = cluster.spawn(ponger, node=nodes[-1])
        ping = cluster.spawn(pinger, pong, rounds, node=nodes[0])
        done, per_round = cluster.call(ping, "result", timeout=120)
        print(f"{done} rounds between {ping} and {pong}: {per_round * 1e6:.0f} µs a round trip")
