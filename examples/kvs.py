"""The key-value server of the Erlang seed slides (``kvs``: store, lookup), as a
spawned process.

From the shell::

    clusterctl spawn --name kvs examples/kvs.py serve
    clusterctl call kvs "('store', 'a', 1)"       # -> True
    clusterctl call kvs "('lookup', 'a')"         # -> 1
    clusterctl kill kvs

From Python: ``python examples/kvs.py`` spawns it, stores and looks up a few keys,
and kills it.
"""

from clusterctl.actor import receive, reply


def serve(table=None):
    """Answer ``('store', key, value)`` with True and ``('lookup', key)`` with the value
    (None if there is none); anything else with an error tuple."""
    table = dict(table or {})
    while True:
        request = receive()
        match request:
            case ("store", key, value):
                table[key] = value
                reply(True)
            case ("lookup", key):
                reply(table.get(key))
            case ("keys",):
                reply(sorted(table, key=repr))
            case _:
                reply(("error", "unknown request %r" % (request,)))


if __name__ == "__main__":
    from clusterctl import Cluster

    with Cluster() as cluster:
        pid = cluster.spawn(serve, name="kvs")
        print("kvs runs as", pid)
        for key, value in (("a", 1), ("b", [2, 3]), ("c", {"d": 4})):
            cluster.call("kvs", ("store", key, value))
        print("lookup b ->", cluster.call("kvs", ("lookup", "b")))
        print("keys ->", cluster.call("kvs", ("keys",)))
        cluster.kill("kvs")
