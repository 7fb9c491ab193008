"""The nodes of one run, shared by the schedulers that hand them work: a pmap has one
scheduler, a pipeline one per group of stages. The crew connects the nodes, adds each
to every scheduler that uses it, connects a node lost with its hub again, says when no
node is left for the work, and at the end cancels what is still in flight."""

from __future__ import annotations

import time
from typing import Iterable

from clusterctl import errors
from clusterctl.api.pmap.connectors import JOINED, Connectors
from clusterctl.api.pmap.inbox import Inbox
from clusterctl.api.pmap.item_errors import AllNodesLost
from clusterctl.api.pmap.nodes import MapNode, slots_of
from clusterctl.api.pmap.scheduler import Scheduler
from clusterctl.api.pmap.stats import reason_of
from clusterctl.api.pmap.tuning import CANCEL_WAIT_SECONDS, JOIN_GRACE_SECONDS, MAX_REJOINS, WAIT_SECONDS


class Member:
    """One scheduler's part in a run: the nodes it may use, and how to name it in an
    error (``""`` for a pmap, ``"stage 2 (parse)"`` in a pipeline)."""

    def __init__(self, scheduler: Scheduler, names: Iterable[str], label: str = "") -> None:
        self.scheduler = scheduler
        self.names = list(names)
        self.label = label
        self.join_errors: dict[str, errors.ClusterError] = {}

    @property
    def stats(self):
        return self.scheduler.stats


class Crew:
    def __init__(self, cluster, inbox: Inbox, members: list[Member]) -> None:
        self.cluster = cluster
        self.inbox = inbox
        self.members = members
        self.connectors = Connectors(cluster, inbox.post, self._ship)
        self.closing = False
        self._rejoins: dict[str, int] = {}
        self._connecting: set[str] = set()
        for member in members:
            member.scheduler.on_lost = self._lost

    @property
    def names(self) -> list[str]:
        """Every node of the run, each once, in the order first named."""
        return list(dict.fromkeys(n for m in self.members for n in m.names))

    def start(self) -> None:
        self._connect(self.names)

    def _connect(self, names: list[str]) -> None:
        self._connecting.update(names)
        self.connectors.start(names)

    # -- nodes joining -----------------------------------------------------------------

    def is_join(self, event) -> bool:
        return event[0] is JOINED

    def joined(self, name: str, conn, error: errors.ClusterError | None,
               late: bool = False) -> None:
        """A connector finished: the node joins each scheduler that uses it, or is
        reported as failed. One that joins ``late`` (or while the run closes) gets no work."""
        self.connectors.joined()
        self._connecting.discard(name)
        if (error is not None or conn is None) and not late and self._try_again(name):
            return
        for member in self.members:
            if name in member.names:
                self._join(member, name, conn, error, late)

    def _join(self, member: Member, name: str, conn, error, late: bool) -> None:
        stats = member.stats.nodes[name]
        codec = member.scheduler.codec
        if error is None and conn is not None and conn.restricted and not codec.plain:
            conn, error = None, errors.Refused(name, _pickled_refusal(member, codec))
        if error is not None or conn is None:
            member.join_errors[name] = error
            stats.state, stats.reason = "failed", reason_of(error)
        elif late or self.closing:
            stats.state, stats.slots = "running", slots_of(conn)
        else:
            self._add(member.scheduler, MapNode(name, conn, stats))

    def _ship(self, conn) -> None:
        """In a node's connector thread: what the map's functions need goes to its host
        (``api.env``), every host side by side; ``_add`` then finds it there."""
        for member in self.members:
            fn = member.scheduler.codec.fn
            if fn is not None and conn.node in member.names:
                self.cluster.with_environment(conn, getattr(fn, "functions", fn), {})

    def _add(self, scheduler: Scheduler, node: MapNode) -> None:
        stats = node.stats
        stats.slots = node.slots
        stats.state = "running"
        stats.reason = ""  # (it may join again, after a loss)
        stats.joined = time.monotonic()
        stats.left = None
        scheduler.add_node(node)
        conn = node.conn
        definition = scheduler.codec.definition()
        if definition is not None:
            head, data = definition
            try:  # what the function needs goes to the node's host first (api.env)
                fn = scheduler.codec.fn  # (a pipeline's: its stages' functions)
                head = self.cluster.with_environment(conn, getattr(fn, "functions", fn), head)
            except errors.ClusterError as exc:
                scheduler.retire(node, "failed", exc.one_line())
                return
            conn.send(head, data)
        if conn.lost is not None:
            scheduler.retire(node, "lost", reason_of(conn.lost))

    def _lost(self, node: MapNode) -> None:
        """A scheduler lost ``node``: the others sharing its connection lose it too (their
        chunks there go back to their queues), and it is connected again if its hub went."""
        for member in self.members:
            other = member.scheduler.nodes.get(node.name)
            if other is not None and other is not node and other.running and other.conn is node.conn:
                member.scheduler.retire(other, "lost", node.stats.reason)
        self._try_again(node.name)

    def _try_again(self, name: str) -> bool:
        """A node lost (or not reached) with the hub that carried its connection joins
        again through a new hub; its chunks in flight were requeued, so nothing of the
        run is lost or delivered twice. True if it is being connected again."""
        if name in self._connecting:
            return True
        tries = self._rejoins.get(name, 0)
        if self.closing or tries >= MAX_REJOINS or not self.cluster.lost_with_hub(name):
            return False
        self._rejoins[name] = tries + 1
        for member in self.members:
            if name in member.names:
                member.stats.nodes[name].state = "connecting"
        self._connect([name])
        return True

    # -- no node left ------------------------------------------------------------------

    def check_alive(self, member: Member) -> None:
        """Raise if no node is left (or coming) to do ``member``'s remaining work."""
        scheduler = member.scheduler
        nodes = scheduler.nodes
        if self.connectors.pending or any(n.running for n in nodes.values()):
            return
        stats = member.stats
        done = stats.done
        of = f" of {stats.total}" if stats.total is not None else ""
        what = f" for {member.label}" if member.label else ""
        load_errors = scheduler.load_errors
        if load_errors and len(load_errors) == len(nodes):
            error = load_errors[0]
            if isinstance(error, errors.Refused):  # (the nodes said why: it is not the loading)
                raise error
            error.hint = (f"no node could load the function or its items{what} ({done}{of} items "
                          "completed); make what it imports importable on the nodes")
            raise error
        reasons = {name: s.reason for name, s in stats.nodes.items() if s.reason}
        if not nodes and len(member.join_errors) == 1:
            raise next(iter(member.join_errors.values()))
        listing = "; ".join(f"{n}: {r}" for n, r in reasons.items())
        verb = "was lost" if nodes else "could be reached"
        who = "every node" + what + " " + verb if nodes else "no node" + what + " " + verb
        completed = f"{done}{of} items had come through it" if member.label else \
            f"{done}{of} items completed"
        raise AllNodesLost(f"{who} ({listing}); {completed}", completed=done, reasons=reasons)

    # -- the end -----------------------------------------------------------------------

    def settle(self) -> None:
        """The work is done before every node joined: give the nodes being started a moment
        to finish starting, so none comes up after the caller moved on (e.g. to ``down``)."""
        self.connectors.wait(JOIN_GRACE_SECONDS)
        while (event := self.inbox.take()) is not None:
            if self.is_join(event):  # joined too late to get work: report it as it is
                self.joined(*event[1:], late=True)

    def shutdown(self, handle) -> None:
        """Cancel all work still in flight and wait (a little) until the nodes confirm it:
        then no worker runs anything of this run any more. ``handle`` takes the events
        that come meanwhile."""
        self.closing = True
        schedulers = [m.scheduler for m in self.members]
        for scheduler in schedulers:
            for node in scheduler.nodes.values():
                for chunk in list(node.inflight.values()):
                    try:
                        scheduler.cancel(chunk, wait=True)
                    except Exception:  # noqa: BLE001 - best effort: a broken connection cancels too
                        pass
            scheduler.retry.clear()
            scheduler.buffer.clear()
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        try:
            while any(s.cancelling for s in schedulers):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.inbox.drain(min(left, WAIT_SECONDS), handle)
            if self.connectors.pending:  # left early (an error): no node may come up later
                self.settle()
        finally:
            for scheduler in schedulers:
                for node in scheduler.nodes.values():
                    self.inbox.unwatch(node)
            self.inbox.close()


def _pickled_refusal(member: Member, codec) -> str:
    """Why a restricted host cannot take part (a pipeline's stages always travel pickled)."""
    if member.label:
        return (f"a restricted host takes no pickled code: a pipeline's stages ({member.label}) "
                "travel pickled, so they run on ordinary nodes only")
    return (f"a restricted host takes no pickled code: {codec.name} travels pickled, so it runs "
            "on ordinary nodes only; map a module function by name (--call module.function) "
            "to use this host")
