"""A supervised worker that crashes now and then and is restarted by its node.

    clusterctl spawn --name flaky --restart permanent --intensity 5 --period 10 \\
        examples/crasher.py work 0.3
    clusterctl ps                                   # restarts go up, the name stays
    clusterctl call flaky "'count'"                 # the count since the last restart

``python examples/crasher.py`` does the same from Python and prints what happens.
"""

import random
import time

from clusterctl.actor import ReceiveTimeout, receive, reply


def work(crash_chance=0.3, tick=0.2):
    """Count ticks; every tick crash with ``crash_chance``. Answers 'count' calls."""
    count = 0
    while True:
        try:
            if receive(timeout=tick) == "count":
                reply(count)
        except ReceiveTimeout:
            count += 1
            if random.random() < crash_chance:
                raise RuntimeError("crashed after %d ticks (as it does now and then)" % count)


if __name__ == "__main__":
    from clusterctl import Cluster

    with Cluster() as cluster:
        cluster.spawn(work, 0.3, name="flaky", restart="permanent", intensity=20, period=10)
        for _ in range(8):
            time.sleep(0.5)
            row = next((r for r in cluster.processes() if r["name"] == "flaky"), None)
            print("flaky:", row["id"] if row else "-", "restarts", row["restarts"] if row else "-")
        cluster.kill("flaky")
