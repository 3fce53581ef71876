"""Actors this node runs for the cluster's actor manager on another node (the head).

In a cluster the head's daemon manages every actor (``actor_manager.py``): it picks the node
each actor runs on. When it picks another node it sends that node's daemon ``host_actor``
with the creation spec and the resources the actor holds; the daemon here waits until they fit
and a worker is idle, dedicates the worker to the actor and sends it ``ACTOR_CREATE``, as for
a local actor. The worker reports ``actor_ready`` to the head itself (with its address); this
node reports the worker's death (``hosted_actor_died``) and kills it when the head asks
(``kill_hosted_actor``).

Hosted actors outlive the head's connection: when the head restarts (on its storage) this node
registers again and reports the actors it runs (``hosted_actors``); the head adopts the ones
its restored table still knows (named detached actors) and has the others killed. Reactor
thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quanta._private import messages as m
from quanta._private.resources import ResourceSet
from quanta._private.transport import Connection, ConnectionClosed

if TYPE_CHECKING:
    from quanta._private.node.daemon import NodeDaemon, WorkerInfo


class HostedActor:
    __slots__ = ("actor_id", "home", "creation", "hold", "schedule", "worker")

    def __init__(self, actor_id: str, home: Connection, creation: dict[str, Any],
                 hold: ResourceSet, schedule: ResourceSet) -> None:
        self.actor_id = actor_id
        self.home = home  # the connection from the managing daemon
        self.creation = creation
        self.hold = hold
        self.schedule = schedule
        self.worker: WorkerInfo | None = None


class HostedActors:
    def __init__(self, daemon: NodeDaemon) -> None:
        self.d = daemon
        self.actors: dict[str, HostedActor] = {}
        self.pending: list[HostedActor] = []

    def host(self, home: Connection, actor_id: str, creation: dict[str, Any],
             hold: dict[str, float], schedule: dict[str, float]) -> None:
        old = self.actors.get(actor_id)
        if old is not None and old.worker is not None:
            self.d._kill_worker(old.worker)  # an older incarnation still here
        rec = HostedActor(actor_id, home, creation, ResourceSet(hold), ResourceSet(schedule))
        self.actors[actor_id] = rec
        self.pending.append(rec)
        self.d._schedule()

    def schedule(self) -> int:
        """Place waiting hosted actors; returns how many still need a worker."""
        d = self.d
        need = 0
        still = []
        for rec in self.pending:
            w = d.dedicate_worker(rec.schedule, rec.hold, rec.actor_id)
            if w is None or w is True:
                need += w is True
                still.append(rec)
                continue
            rec.worker = w
            d.send_actor_create(w, rec.creation)
        self.pending = still
        return need

    def worker_died(self, w: WorkerInfo) -> bool:
        """The process of a worker dedicated to an actor exited. Returns whether the actor
        was one hosted here (then its manager has been told)."""
        rec = self.actors.get(w.actor_id or "")
        if rec is None or rec.worker is not w:
            return False
        del self.actors[rec.actor_id]
        self._tell_head(rec, "hosted_actor_died", rec.actor_id,
                        rec.creation.get("incarnation", 0))
        return True

    def _tell_head(self, rec: HostedActor, method: str, *args: object) -> None:
        """Notify the managing daemon: over the link to the head (which follows a restarted
        head), or the connection the actor came on when there is none."""
        head = self.d.head_node_address
        if head is not None and self.d.links.notify_node(head, method, *args):
            return
        try:
            rec.home.send((m.NOTIFY, method, args))
        except ConnectionClosed:
            pass

    def report(self) -> None:
        """Tell the head (registered again) which actors run here."""
        d = self.d
        running = [(r.actor_id, r.creation.get("incarnation", 0), r.worker.address,
                    r.worker.pid) for r in self.actors.values()
                   if r.worker is not None and r.worker.address]
        if running and d.head_node_address is not None:
            d.links.notify_node(d.head_node_address, "hosted_actors", d.node_id,
                                d.tcp_address, running)

    def kill(self, actor_id: str) -> None:
        rec = self.actors.pop(actor_id, None)
        if rec is None:
            return
        if rec in self.pending:
            self.pending.remove(rec)
        if rec.worker is not None:
            self.d._kill_worker(rec.worker)

    def home_gone(self, conn: Connection) -> None:
        """The managing daemon's connection closed: its actors keep running (a head that
        restarts adopts or kills them when this node reports them); ones still waiting for
        a worker are dropped, their creation is the head's to retry."""
        for rec in [r for r in self.pending if r.home is conn]:
            self.kill(rec.actor_id)
