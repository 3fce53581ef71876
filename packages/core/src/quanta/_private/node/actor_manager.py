"""The actor table of the control store and the node's side of the actor lifecycle.

Contract
--------
Every actor is registered here by its creator (``register_actor``) before its handle is
returned, which is where a duplicate name is refused. Once the creator has resolved the
constructor's arguments it sends the creation spec (with the registration, or later with
``create_actor``). The manager then reserves the actor's resources, dedicates a worker to it
and sends that worker ``ACTOR_CREATE``; the worker runs the constructor and answers
``actor_ready``. Every process that holds a handle *subscribes* and is sent
``(ACTOR_STATE, actor_id, state, address, incarnation, reason)`` on each change, so callers
learn the actor's address, its restarts and its death from one source.

States are Ray's: ``DEPENDENCIES_UNREADY`` -> ``PENDING_CREATION`` -> ``ALIVE`` ->
(``RESTARTING`` -> ``ALIVE``)* -> ``DEAD``. ``incarnation`` counts restarts; a caller treats
calls it sent to an older incarnation as lost.

Death: the worker's connection closing (process died) restarts the actor while
``max_restarts`` allows (-1: always), re-running the constructor from the stored spec;
``kill(no_restart=True)``, ``exit_actor()``, the owner's death (non-detached actors), the
last handle going away, or a constructor that raised make it ``DEAD`` with a reason that
callers put in their ``ActorDiedError``. Resources go back to the node when the worker dies.

Records (without connections) are written to the control store's storage on every change,
so named and detached actors are visible in the SQLite file. A head restarted on that storage
brings back the detached actors that were alive, each waiting for the node it ran on to join
again and report it (``adopt``); an actor whose node does not come back (the old head's own
node never does) dies with that reason. An adopted actor keeps its process and address, but
its creation spec went with the old head, so it is not restarted if its process dies later.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from quanta._private import messages as m
from quanta._private.node.cluster_view import Infeasible
from quanta._private.node.group_leases import removed_text
from quanta._private.node.placement_groups import REMOVED, bundle_index_of, group_of
from quanta._private.resources import ResourceSet
from quanta._private.transport import Connection, ConnectionClosed
from quanta.exceptions import ActorAlreadyExistsError

if TYPE_CHECKING:
    from quanta._private.node.daemon import NodeDaemon, WorkerInfo

ACTORS = "actors"
DEPENDENCIES_UNREADY = "DEPENDENCIES_UNREADY"
PENDING_CREATION = "PENDING_CREATION"
ALIVE = "ALIVE"
RESTARTING = "RESTARTING"
DEAD = "DEAD"


class ActorRecord:
    __slots__ = (
        "actor_id", "name", "namespace", "detached", "owner_conn", "owner_address", "job_id",
        "class_name", "meta", "handle_owner", "creation", "hold", "schedule", "max_restarts",
        "num_restarts", "state", "worker", "address", "reason", "subscribers", "pid",
        "no_restart", "kill_reason", "strategy", "host", "node_id", "awaiting",
    )

    def __init__(self, info: dict[str, Any], owner_conn: Connection) -> None:
        self.actor_id: str = info["actor_id"]
        self.name: str | None = info.get("name")
        self.namespace: str = info.get("namespace") or ""
        self.detached: bool = bool(info.get("detached"))
        self.owner_conn = owner_conn
        self.owner_address: str = info["owner_address"]
        self.job_id: str = info.get("job_id", "")
        self.class_name: str = info["class_name"]
        self.meta: Any = info.get("meta")
        self.handle_owner: str | None = info.get("handle_owner")
        self.creation: dict[str, Any] | None = None
        self.hold = ResourceSet(info.get("resources") or {})
        self.schedule = ResourceSet(info.get("schedule_resources") or info.get("resources") or {})
        self.max_restarts: int = int(info.get("max_restarts", 0))
        self.num_restarts = 0
        self.state = DEPENDENCIES_UNREADY
        self.worker: WorkerInfo | None = None
        self.address = ""
        self.reason = ""
        self.subscribers: set[Connection] = set()
        self.pid = 0
        self.no_restart = False
        self.kill_reason = ""  # set by kill(no_restart=False): why the process went
        self.strategy: str = info.get("strategy") or "DEFAULT"
        self.host: str | None = None  # the node address of the node hosting it, if not here
        self.node_id = ""  # the node it runs on
        self.awaiting: str | None = None  # restored by a restarted head: its node's id

    def public(self) -> dict[str, Any]:
        """What ``get_actor`` and ``list_actors`` see."""
        return {
            "actor_id": self.actor_id, "name": self.name, "namespace": self.namespace,
            "detached": self.detached, "owner_address": self.owner_address,
            "job_id": self.job_id, "class_name": self.class_name, "meta": self.meta,
            "handle_owner": self.handle_owner, "state": self.state, "address": self.address,
            "num_restarts": self.num_restarts, "max_restarts": self.max_restarts,
            "reason": self.reason, "pid": self.pid, "node_id": self.node_id,
        }


class ActorManager:
    def __init__(self, daemon: NodeDaemon) -> None:
        self.d = daemon
        self.actors: dict[str, ActorRecord] = {}
        self.named: dict[tuple[str, str], str] = {}  # (namespace, name) -> actor_id
        self.pending: list[ActorRecord] = []  # waiting for resources or a worker
        self.early: dict[str, dict[str, Any]] = {}  # creations that came before registration

    # --- a restarted head ----------------------------------------------------------------
    def restore(self) -> None:
        """Bring back the actors of an earlier run on the same storage (see the module doc):
        detached live ones wait for their node; the others' owners are gone, so they are
        recorded dead."""
        storage = self.d.control.storage
        for _, raw in list(storage.items(ACTORS)):
            old = pickle.loads(raw)
            if old.get("state") == DEAD:
                continue
            if not old.get("detached") or old.get("state") != ALIVE or not old.get("node_id"):
                old.update(state=DEAD, address="", reason=(
                    "The actor died because the head restarted while it was "
                    + ("not placed yet." if old.get("detached") else
                       "owned by a process of the old head's run (it was not detached).")))
                storage.put(ACTORS, old["actor_id"].encode(), pickle.dumps(old))
                continue
            rec = ActorRecord(dict(old, resources=None), None)
            rec.state = ALIVE
            rec.address = old.get("address", "")
            rec.pid = old.get("pid", 0)
            rec.num_restarts = old.get("num_restarts", 0)
            rec.max_restarts = 0  # its creation spec is gone: it cannot run again
            rec.node_id = rec.awaiting = old["node_id"]
            self.actors[rec.actor_id] = rec
            if rec.name:
                self.named[(rec.namespace, rec.name)] = rec.actor_id

    def adopt(self, node_id: str, node_address: str, running: list[tuple]) -> None:
        """A node that joined this head again runs these actors (``(actor_id, incarnation,
        address, pid)``): the restored ones continue there, the others are killed."""
        for actor_id, incarnation, address, pid in running:
            rec = self.actors.get(actor_id)
            if rec is not None and rec.state != DEAD and rec.awaiting == node_id:
                rec.awaiting = None
                rec.host = node_address
                rec.address = address
                rec.pid = pid
                rec.num_restarts = incarnation
                self._changed(rec)
            elif rec is None or rec.state == DEAD or rec.host != node_address:
                self.d.links.notify_node(node_address, "kill_hosted_actor", actor_id)

    def node_dead(self, node_id: str) -> None:
        """The membership gave up on ``node_id``: restored actors waiting for it die."""
        for rec in [r for r in self.actors.values() if r.awaiting == node_id]:
            rec.awaiting = None
            self._dead(rec, f"The actor died because its node {node_id} did not join the "
                       "cluster again after the head restarted.")

    # --- registration -------------------------------------------------------------------
    def register(self, conn: Connection, info: dict[str, Any]) -> dict[str, Any] | None:
        """Add an actor. Returns the existing actor's record for ``get_if_exists`` when the
        name is taken, else None. Raises ValueError for a name taken by a live actor."""
        name = info.get("name")
        key = (info.get("namespace") or "", name)
        if name:
            existing_id = self.named.get(key)
            existing = self.actors.get(existing_id) if existing_id else None
            if existing is not None and existing.state != DEAD:
                if info.get("get_if_exists"):
                    existing.subscribers.add(conn)
                    return existing.public()
                raise ActorAlreadyExistsError(
                    f"The name {name!r} is already taken by another actor in namespace "
                    f"{key[0]!r}: pick another name, kill that actor first, or pass "
                    "get_if_exists=True to get a handle to it.")
        rec = ActorRecord(info, conn)
        self.actors[rec.actor_id] = rec
        if name:
            self.named[key] = rec.actor_id
        rec.subscribers.add(conn)
        creation = info.get("creation") or self.early.pop(rec.actor_id, None)
        if creation is not None:
            self.create(rec.actor_id, creation)
        else:
            self._save(rec)
        return None

    def create(self, actor_id: str, creation: dict[str, Any]) -> None:
        """The creator resolved the constructor's arguments: place the actor."""
        rec = self.actors.get(actor_id)
        if rec is None:  # the creation overtook the registration (another connection order)
            self.early[actor_id] = creation
            return
        if rec.state != DEPENDENCIES_UNREADY:
            return
        rec.creation = creation
        pg_id = group_of(rec.schedule)
        if pg_id is not None:
            if self.d.pgs.state_of(pg_id) in (None, REMOVED):
                self._dead(rec, f"The actor {rec.class_name} cannot be scheduled: "
                           + removed_text(pg_id))
                return
        elif not self._feasible_somewhere(rec):
            total = self.d.view.largest(self.d.resources)
            self._dead(rec, f"The actor {rec.class_name} cannot be scheduled: it requires "
                       f"{rec.schedule!r} but the largest node in the cluster has {total!r}. "
                       "Lower the actor's resource request or add a node that has them.")
            return
        rec.state = PENDING_CREATION
        self._save(rec)
        self.pending.append(rec)
        self.d._schedule()

    def _feasible_somewhere(self, rec: ActorRecord) -> bool:
        res = self.d.resources
        if res.feasible(rec.schedule) and res.feasible(rec.hold):
            return True
        return any(rec.schedule.fits_in(n.total) and rec.hold.fits_in(n.total)
                   for n in self.d.view.nodes.values())

    def _place_elsewhere(self, rec: ActorRecord) -> bool:
        """In a cluster, send ``rec`` to the node the view picks when that is another one
        (it then waits there for its resources). Returns whether it was sent."""
        d = self.d
        pg_id = group_of(rec.schedule)
        if pg_id is not None:  # to the node holding its bundle; waits while none does
            _, nodes = d.pgs.where(pg_id)
            target = d.group_leases.pick(rec.schedule, nodes, bundle_index_of(rec.schedule))
            if target is None or target == d.node_id:
                return False
            node = d.view.nodes.get(target)
            return node is not None and self._host(rec, node)
        try:
            # what must be free there: the larger of the placing and the held amounts
            names = set(rec.schedule) | set(rec.hold)
            need = ResourceSet._from_units(
                {k: max(rec.schedule.units(k), rec.hold.units(k)) for k in names})
            while True:
                node = d.view.choose(need, rec.strategy, d.resources)
                if node is None:
                    return False
                if self._host(rec, node):
                    return True
                d.view.mark_unreachable(node.node_id)  # gone: choose again without it
        except Infeasible as e:
            self._dead(rec, f"The actor {rec.class_name} cannot be scheduled: {e}")
            return True

    def _host(self, rec: ActorRecord, node: Any) -> bool:
        """Ask ``node`` to host ``rec``; False when it cannot be reached."""
        creation = dict(rec.creation, incarnation=rec.num_restarts)
        if self.d.links.notify_node(node.address, "host_actor", rec.actor_id, creation,
                                    rec.hold.to_dict(), rec.schedule.to_dict()):
            rec.host = node.address
            rec.node_id = node.node_id
            return True
        return False

    def subscribe(self, conn: Connection, actor_id: str) -> tuple:
        rec = self.actors.get(actor_id)
        if rec is None:
            return (DEAD, "", 0, f"The actor {actor_id} is unknown to the cluster: it was never "
                    "created here, or its record is gone.")
        if rec.state != DEAD:
            rec.subscribers.add(conn)
        return (rec.state, rec.address, rec.num_restarts, rec.reason)

    def get_named(self, name: str, namespace: str) -> dict[str, Any]:
        actor_id = self.named.get((namespace, name))
        rec = self.actors.get(actor_id) if actor_id else None
        if rec is None or rec.state == DEAD:
            raise ValueError(
                f"Failed to look up actor with name {name!r} in namespace {namespace!r}: no "
                "live actor has that name there (check the name and the namespace; an actor "
                "that is not detached dies with its owner).")
        return rec.public()

    def list_named(self, namespace: str | None) -> list[dict[str, str]]:
        return [{"name": name, "namespace": ns} for (ns, name), aid in self.named.items()
                if (namespace is None or ns == namespace)
                and self.actors[aid].state != DEAD]

    def list_actors(self) -> list[dict[str, Any]]:
        return [rec.public() for rec in self.actors.values()]

    def summary(self) -> dict[str, Any]:
        """For ``quanta status``: actors counted by state, and those waiting to be placed
        with what they need."""
        states: dict[str, int] = {}
        for rec in self.actors.values():
            states[rec.state] = states.get(rec.state, 0) + 1
        waiting = [{"actor_id": rec.actor_id, "class_name": rec.class_name, "name": rec.name,
                    "state": rec.state, "resources": rec.schedule.to_dict(),
                    "strategy": rec.strategy}
                   for rec in self.actors.values()
                   if rec.state in (PENDING_CREATION, RESTARTING) and not rec.address]
        return {"states": states, "waiting": waiting}

    # --- placement ----------------------------------------------------------------------
    def schedule(self) -> int:
        """Give waiting actors a worker when their resources fit. Returns how many actors
        still need a worker that is not started yet."""
        d = self.d
        need_workers = 0
        still: list[ActorRecord] = []
        for rec in list(self.pending):
            if rec.state not in (PENDING_CREATION, RESTARTING):
                continue
            if self._place_elsewhere(rec):
                continue
            w = d.dedicate_worker(rec.schedule, rec.hold, rec.actor_id)
            if w is None or w is True:
                need_workers += w is True
                still.append(rec)
                continue
            rec.worker = w
            rec.pid = w.pid
            rec.node_id = d.node_id
            d.send_actor_create(w, dict(rec.creation, incarnation=rec.num_restarts))
        self.pending = still
        return need_workers

    def ready(self, actor_id: str, incarnation: int, error: str | None, address: str = "",
              pid: int = 0) -> None:
        """The actor's worker ran the constructor (``error``: its traceback if it raised);
        a worker of another node gives its address."""
        rec = self.actors.get(actor_id)
        if rec is None or rec.state == DEAD or incarnation != rec.num_restarts:
            return
        if error is not None:
            self._dead(rec, "The actor died because of an error raised in its creation "
                       f"task (the constructor of {rec.class_name}):\n{error}")
            return
        rec.state = ALIVE
        rec.address = rec.worker.address if rec.worker is not None else address
        if rec.worker is None:
            rec.pid = pid
        self._changed(rec)

    # --- death ------------------------------------------------------------------------
    def worker_died(self, w: WorkerInfo) -> None:
        """The process of an actor's worker exited (its connection closed)."""
        rec = self.actors.get(w.actor_id)
        if rec is None or rec.worker is not w:
            return
        rec.worker = None
        self._process_died(rec)

    def hosted_died(self, actor_id: str, incarnation: int) -> None:
        """The node hosting an actor reports its worker's death."""
        rec = self.actors.get(actor_id)
        if rec is None or rec.host is None or incarnation != rec.num_restarts:
            return
        rec.host = None
        self._process_died(rec)

    def node_lost(self, address: str) -> None:
        """The connection to the node at ``address`` closed: its actors' processes are gone."""
        for rec in [r for r in self.actors.values() if r.host == address]:
            rec.host = None
            self._process_died(rec)

    def _process_died(self, rec: ActorRecord) -> None:
        rec.address = ""
        if rec.state == DEAD:
            return
        unlimited = rec.max_restarts < 0
        if not rec.no_restart and (unlimited or rec.num_restarts < rec.max_restarts):
            rec.kill_reason = ""
            rec.num_restarts += 1
            rec.state = RESTARTING
            rec.reason = "The actor's process died unexpectedly; it is being restarted."
            self._changed(rec)
            self.pending.append(rec)
            self.d._schedule()
            return
        if rec.no_restart:
            self._dead(rec, rec.reason or "The actor was killed.")
        elif rec.kill_reason:
            self._dead(rec, rec.kill_reason + (
                f" Its max_restarts ({rec.max_restarts}) is used up, so it is not restarted."
                if rec.max_restarts else " It has no restarts (max_restarts=0)."))
        elif rec.max_restarts:
            self._dead(rec, f"The actor's process died unexpectedly and it was already "
                       f"restarted {rec.num_restarts} time(s), its max_restarts.")
        else:
            self._dead(rec, "The actor's process died unexpectedly (it exited, crashed or was "
                       "killed by the system); max_restarts=0, so it is not restarted.")

    def kill(self, actor_id: str, no_restart: bool, reason: str) -> None:
        rec = self.actors.get(actor_id)
        if rec is None or rec.state == DEAD:
            return
        if no_restart:
            rec.no_restart = True
            self._dead(rec, reason)
            return
        rec.kill_reason = reason
        if rec.worker is not None:
            self.d._kill_worker(rec.worker)
        elif rec.host is not None:
            self.d.links.notify_node(rec.host, "kill_hosted_actor", rec.actor_id)

    def owns_live_actors(self, conn: Connection) -> bool:
        return any(rec.owner_conn is conn and not rec.detached and rec.state != DEAD
                   for rec in self.actors.values())

    def group_removed(self, pg_id: str) -> None:
        """The placement group ``pg_id`` was removed: its actors, placed or waiting, die."""
        for rec in list(self.actors.values()):
            if rec.state != DEAD and group_of(rec.schedule) == pg_id:
                placed = rec.state not in (DEPENDENCIES_UNREADY, PENDING_CREATION)
                self._dead(rec, f"The actor died because its placement group {pg_id} was "
                           + ("removed." if placed else "removed before it could be placed."))

    def owner_gone(self, conn: Connection) -> None:
        """A client closed: kill the actors it owned (not detached), drop its subscriptions."""
        for rec in list(self.actors.values()):
            rec.subscribers.discard(conn)
            if rec.owner_conn is conn and not rec.detached and rec.state != DEAD:
                self._dead(rec, "The actor died because its owner (the process that created "
                           f"it, {rec.owner_address}) exited. Create it with "
                           "lifetime='detached' to keep it alive without its owner.")

    def _dead(self, rec: ActorRecord, reason: str) -> None:
        rec.state = DEAD
        rec.reason = reason
        rec.address = ""
        rec.creation = None  # its constructor arguments are not needed any more
        if rec in self.pending:
            self.pending.remove(rec)
        if rec.name and self.named.get((rec.namespace, rec.name)) == rec.actor_id:
            del self.named[(rec.namespace, rec.name)]
        w = rec.worker
        if w is not None:
            self.d._kill_worker(w)
        if rec.host is not None:
            self.d.links.notify_node(rec.host, "kill_hosted_actor", rec.actor_id)
            rec.host = None
        self._changed(rec)
        rec.subscribers.clear()

    # --- broadcasting and storage -------------------------------------------------------
    def _changed(self, rec: ActorRecord) -> None:
        msg = (m.ACTOR_STATE, rec.actor_id, rec.state, rec.address, rec.num_restarts,
               rec.reason)
        for conn in list(rec.subscribers):
            try:
                conn.send(msg)
            except ConnectionClosed:
                rec.subscribers.discard(conn)
        self._save(rec)

    def _save(self, rec: ActorRecord) -> None:
        self.d.control.storage.put(ACTORS, rec.actor_id.encode(), pickle.dumps(rec.public()))
