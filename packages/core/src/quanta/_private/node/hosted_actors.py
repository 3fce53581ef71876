"""Actors this node runs for the cluster's actor manager on another node (the head).

In a cluster the head's daemon manages every actor (``actor_manager.py``): it picks the node
each actor runs on. When it picks another node it sends that node's daemon ``host_actor``
with the creation spec and the resources the actor holds; the daemon here waits until they fit
and a worker is idle, dedicates the worker to the actor and sends it ``ACTOR_CREATE``, as for
a local actor. The worker reports ``actor_ready`` to the head itself (with its address); this
node reports the worker's death (``hosted_actor_died``) and kills it when the head asks
(``kill_hosted_actor``). Reactor thread only.
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
        try:
            rec.home.send((m.NOTIFY, "hosted_actor_died",
                           (rec.actor_id, rec.creation.get("incarnation", 0))))
        except ConnectionClosed:
            pass
        return True

    def kill(self, actor_id: str) -> None:
        rec = self.actors.pop(actor_id, None)
        if rec is None:
            return
        if rec in self.pending:
            self.pending.remove(rec)
        if rec.worker is not None:
            self.d._kill_worker(rec.worker)

    def home_gone(self, conn: Connection) -> None:
        """The managing daemon went away: its actors here go too."""
        for rec in [r for r in self.actors.values() if r.home is conn]:
            self.kill(rec.actor_id)
