"""Placement groups in the control store, and their reservation across the cluster's nodes.

Contract
--------
The daemon that owns the control store (the head of a cluster, or a lone node) keeps every
placement group here; processes of every node send their placement group calls to it. A group
reserves its bundles atomically: all of them or none.

Reserving is two-phase. The manager picks a node for each bundle with the group's strategy
(``bundle_placement.py``) over this node's free resources and the cluster view's, then asks
every chosen node to *prepare* its bundles (take their resources, ``node_bundles.py``). When
all of them say yes it sends each a *commit*, which adds the bundles' ``R_group_*`` resources
there, and the group is ``CREATED``; when any says no (the view was stale) or cannot be
reached, the prepared ones are cancelled and the group waits for the next view of the cluster.
A lone node runs both phases in-process, in one step.

A group that cannot be reserved now stays ``PENDING`` and is tried again whenever resources
are freed here or another node reports; one that can never fit (more than any node has, or
STRICT_SPREAD over more bundles than there are nodes) stays pending too, with the reason, and
``quanta status`` lists it as infeasible. When a node dies, the bundles it held are placed
again (the group is ``RESCHEDULING`` meanwhile) and its other bundles stay where they are.

Removing a group kills its actors and the workers that use its bundles (their tasks fail) and
gives the reservations back on every node. Groups of a job whose driver exits are removed
unless created with ``lifetime="detached"``; detached ones are reserved again when the head
restarts on the same storage.
"""

from __future__ import annotations

import pickle
import re
from typing import TYPE_CHECKING, Any

from quanta._private import messages as m
from quanta._private.node.bundle_placement import NodeSlot, infeasible_reason, place_bundles
from quanta._private.node.node_bundles import BUNDLE_MARKER
from quanta._private.resources import RESOURCE_UNIT, ResourceSet
from quanta._private.transport import Connection, ConnectionClosed

if TYPE_CHECKING:
    from quanta._private.node.daemon import NodeDaemon

PLACEMENT_GROUPS = "placement_groups"
PENDING = "PENDING"
CREATED = "CREATED"
RESCHEDULING = "RESCHEDULING"
REMOVED = "REMOVED"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


_GROUP_RESOURCE = re.compile(r"^.+_group_(?:\d+_)?([0-9a-f]{28})$")
_BUNDLE_INDEX = re.compile(rf"^{BUNDLE_MARKER}_group_(\d+)_[0-9a-f]{{28}}$")


def pg_of_resource(name: str) -> str | None:
    """The placement group id a resource name belongs to, or None for a plain resource
    (a user's own resource may contain ``_group_``; a group's ends in its 28-digit id)."""
    if "_group_" not in name:
        return None
    match = _GROUP_RESOURCE.match(name)
    return match.group(1) if match else None


def _plain(resources: ResourceSet) -> ResourceSet:
    """``resources`` without placement groups' own resources."""
    return ResourceSet._from_units(
        {k: u for k, u in resources._units.items() if pg_of_resource(k) is None})


def group_of(request: ResourceSet) -> str | None:
    """The placement group a lease or actor request draws on, or None."""
    for name in request:
        pg_id = pg_of_resource(name)
        if pg_id is not None:
            return pg_id
    return None


def bundle_index_of(request: ResourceSet) -> int:
    """The bundle a group request names, -1 for any bundle of the group."""
    for name in request:
        match = _BUNDLE_INDEX.match(name)
        if match:
            return int(match.group(1))
    return -1


class PlacementGroupRecord:
    __slots__ = ("pg_id", "name", "namespace", "strategy", "bundles", "state", "detached",
                 "creator", "job_id", "waiters", "reason", "nodes", "attempt", "inflight",
                 "prepared", "wait_view")

    def __init__(self, info: dict[str, Any], creator: Connection | None) -> None:
        self.pg_id: str = info["pg_id"]
        self.name: str = info.get("name") or ""
        self.namespace: str = info.get("namespace") or ""
        self.strategy: str = info["strategy"]
        self.bundles: list[dict[str, float]] = info["bundles"]
        self.detached = bool(info.get("detached"))
        self.job_id: str = info.get("job_id", "")
        self.creator = creator
        self.state = PENDING
        self.waiters: list[tuple[Connection, int, str]] = []  # (conn, req, "wait"|"locate")
        self.reason = ""
        self.nodes: list[str | None] = [None] * len(self.bundles)  # node id per bundle
        self.attempt = 0
        self.inflight: dict[str, list[int]] | None = None  # node id -> bundles it prepares
        self.prepared: set[str] = set()
        # the node that could not prepare the last attempt: another node's failure waits for
        # a fresher view of the cluster, this node's for its own resources to change
        self.wait_view = ""

    def public(self) -> dict[str, Any]:
        return {
            "placement_group_id": self.pg_id, "name": self.name, "namespace": self.namespace,
            "strategy": self.strategy, "state": self.state, "detached": self.detached,
            "bundles": {i: dict(b) for i, b in enumerate(self.bundles)},
            "bundles_to_node_id": {i: n for i, n in enumerate(self.nodes) if n is not None}
            if self.state in (CREATED, RESCHEDULING) else {},
            "stats": {"scheduling_state": self.state, "infeasible": bool(self.reason)},
            "job_id": self.job_id, "reason": self.reason,
        }


class PlacementGroupManager:
    def __init__(self, daemon: NodeDaemon) -> None:
        self.d = daemon
        self.groups: dict[str, PlacementGroupRecord] = {}
        self.named: dict[tuple[str, str], str] = {}
        self.pending: list[PlacementGroupRecord] = []

    # --- lifecycle ------------------------------------------------------------------------
    def restore(self) -> None:
        """Bring back the groups of an earlier run on the same storage (a restarted head):
        detached groups are reserved again (or wait, pending, as new ones do); the others
        belonged to drivers that are gone with that run, so they are recorded as removed."""
        for _, raw in self.d.control.storage.items(PLACEMENT_GROUPS):
            old = pickle.loads(raw)
            if old.get("state") == REMOVED:
                continue
            if not old.get("detached"):
                old["state"] = REMOVED
                old["reason"] = "its job's driver was gone when the head restarted"
                self.d.control.storage.put(PLACEMENT_GROUPS,
                                           old["placement_group_id"].encode(),
                                           pickle.dumps(old))
                continue
            bundles = [dict(b) for _, b in sorted(old["bundles"].items())]
            self.create(None, {"pg_id": old["placement_group_id"], "name": old["name"],
                               "namespace": old["namespace"], "strategy": old["strategy"],
                               "bundles": bundles, "detached": True,
                               "job_id": old.get("job_id", "")})

    def create(self, conn: Connection | None, info: dict[str, Any]) -> None:
        name = info.get("name") or ""
        key = (info.get("namespace") or "", name)
        if name and key in self.named:
            raise ValueError(
                f"A placement group named {name!r} already exists in namespace {key[0]!r}: "
                "pick another name or remove it first.")
        rec = PlacementGroupRecord(info, conn)
        self.groups[rec.pg_id] = rec
        if name:
            self.named[key] = rec.pg_id
        self.pending.append(rec)
        self.schedule()
        if rec.state == PENDING and rec.inflight is None:
            rec.reason = self._infeasible_reason(rec)
            self._save(rec)

    def _slots(self, rec: PlacementGroupRecord | None = None) -> list[NodeSlot]:
        """Every alive node with its free resources, this one first: only those that
        ``rec``'s bundles name when given (a node may have many groups' resources)."""
        d = self.d
        names = {k for b in rec.bundles for k in b} if rec is not None else None

        def only(rs: ResourceSet) -> ResourceSet:
            if names is None:
                return rs
            return ResourceSet._from_units({k: rs.units(k) for k in names})

        res = d.resources
        slots = [NodeSlot(d.node_id, res.available_of(names), res.total_of(names))
                 if names is not None else NodeSlot(d.node_id, res.available, res.total)]
        slots += [NodeSlot(n.node_id, only(n.available), only(n.total))
                  for n in d.view.nodes.values()]
        return slots

    def _unplaced(self, rec: PlacementGroupRecord) -> dict[int, ResourceSet]:
        return {i: ResourceSet(b) for i, b in enumerate(rec.bundles) if rec.nodes[i] is None}

    def _placed(self, rec: PlacementGroupRecord) -> dict[int, str]:
        return {i: n for i, n in enumerate(rec.nodes) if n is not None}

    def _infeasible_reason(self, rec: PlacementGroupRecord) -> str:
        slots = [NodeSlot(s.node_id, s.available, _plain(s.total)) for s in self._slots()]
        return infeasible_reason(self._unplaced(rec), rec.strategy, slots, self._placed(rec))

    def schedule(self) -> None:
        """Start reserving the pending groups that fit now, in creation order."""
        if not self.pending:
            return
        still = []
        for rec in self.pending:
            if rec.state not in (PENDING, RESCHEDULING):
                continue
            if rec.inflight is None and rec.wait_view in ("", self.d.node_id):
                self._reserve(rec)
            if rec.state != CREATED:
                still.append(rec)
        self.pending = [r for r in still if r.state in (PENDING, RESCHEDULING)]

    def view_changed(self) -> None:
        """Another node reported (head): groups whose reservation failed may try again."""
        retry = False
        for rec in self.pending:
            if rec.wait_view:
                rec.wait_view = ""
                retry = True
            if rec.reason:  # a node that joined may make it feasible
                rec.reason = self._infeasible_reason(rec)
        if retry:
            self.schedule()

    def _reserve(self, rec: PlacementGroupRecord) -> None:
        d = self.d
        if d.view.nodes:
            choice = place_bundles(self._unplaced(rec), rec.strategy, self._slots(rec),
                                   self._placed(rec))
        elif rec.strategy != "STRICT_SPREAD" or len(rec.bundles) == 1:
            # a lone node: every bundle here, if the prepare below finds room
            choice = {i: d.node_id for i, n in enumerate(rec.nodes) if n is None}
        else:
            choice = None
        if choice is None:
            return
        by_node: dict[str, list[int]] = {}
        for index, node_id in sorted(choice.items()):
            by_node.setdefault(node_id, []).append(index)
        rec.attempt += 1
        rec.inflight = by_node
        rec.prepared = set()
        attempt = rec.attempt
        for node_id, indices in by_node.items():
            pairs = [(i, rec.bundles[i]) for i in indices]
            if node_id == d.node_id:
                if not d.bundles.prepare(rec.pg_id, attempt, pairs):
                    self._abort(rec, node_id)
                    return
                rec.prepared.add(node_id)
                continue
            node = d.view.nodes.get(node_id)
            if node is not None:
                need = ResourceSet()
                for _, b in pairs:
                    need = need + ResourceSet(b)
                d.view.take(node, need)

            def answered(ok: bool, result: Any, node_id: str = node_id) -> None:
                self._prepared(rec, attempt, node_id, ok and result is True)

            if node is None or not d.links.call_node(node.address, "prepare_bundles",
                                                     (rec.pg_id, attempt, pairs), answered):
                self._abort(rec, node_id)
                return
        if len(rec.prepared) == len(by_node):
            self._commit(rec)

    def _prepared(self, rec: PlacementGroupRecord, attempt: int, node_id: str,
                  ok: bool) -> None:
        if rec.attempt != attempt or rec.inflight is None or rec.state == REMOVED:
            if ok:  # an answer to an abandoned attempt: give the bundles back
                self._tell(node_id, "cancel_bundles", rec.pg_id, attempt)
            return
        if not ok:
            self._abort(rec, node_id)
            return
        rec.prepared.add(node_id)
        if len(rec.prepared) == len(rec.inflight):
            self._commit(rec)
            self.pending = [r for r in self.pending if r.state != CREATED]

    def _abort(self, rec: PlacementGroupRecord, failed: str) -> None:
        """The node ``failed`` could not prepare its bundles: cancel the others' and wait
        (see ``wait_view``)."""
        for node_id in rec.prepared:
            if node_id == self.d.node_id:
                self.d.bundles.cancel(rec.pg_id, rec.attempt)
            else:
                self._tell(node_id, "cancel_bundles", rec.pg_id, rec.attempt)
        rec.attempt += 1
        rec.inflight = None
        rec.prepared = set()
        rec.wait_view = failed

    def _commit(self, rec: PlacementGroupRecord) -> None:
        d = self.d
        for node_id, indices in rec.inflight.items():
            for i in indices:
                rec.nodes[i] = node_id
            if node_id == d.node_id:
                d.bundles.commit(rec.pg_id, rec.attempt)
            else:
                self._tell(node_id, "commit_bundles", rec.pg_id, rec.attempt)
        rec.inflight = None
        rec.prepared = set()
        rec.state = CREATED
        rec.reason = ""
        self._save(rec)
        self._answer_waiters(rec)
        # leases and actors that wait for the group: after the scheduling pass under way
        d.reactor.call_later(0, lambda: d.group_leases.group_changed(rec.pg_id))

    def _tell(self, node_id: str, method: str, *args: Any) -> None:
        address = self.d.view.address_of(node_id)
        if address is not None:
            self.d.links.notify_node(address, method, *args)

    def remove(self, pg_id: str) -> None:
        rec = self.groups.get(pg_id)
        if rec is None or rec.state == REMOVED:
            return
        d = self.d
        rec.state = REMOVED
        if rec in self.pending:
            self.pending.remove(rec)
        if rec.name:
            self.named.pop((rec.namespace, rec.name), None)
        self._answer_waiters(rec)
        d.actors.group_removed(pg_id)
        why = f"The placement group {pg_id} was removed before this task could run in it."
        holders = {n for n in rec.nodes if n is not None} | set(rec.prepared)
        rec.attempt += 1
        rec.inflight = None
        rec.prepared = set()
        for node_id in holders:
            if node_id == d.node_id:
                d.bundles.release(pg_id, why)
            else:
                self._tell(node_id, "release_bundles", pg_id, why)
        d.group_leases.group_changed(pg_id)
        self._save(rec)
        d._schedule()

    def node_dead(self, node_id: str) -> None:
        """The node ``node_id`` died: place its bundles again; an attempt waiting for its
        answer is abandoned."""
        for rec in self.groups.values():
            if rec.state == REMOVED:
                continue
            if rec.inflight is not None and node_id in rec.inflight:
                self._abort(rec, node_id)
                rec.wait_view = ""
            lost = [i for i, n in enumerate(rec.nodes) if n == node_id]
            if not lost:
                continue
            for i in lost:
                rec.nodes[i] = None
            if rec.state == CREATED:
                rec.state = RESCHEDULING
                self.pending.append(rec)
            self._save(rec)
        self.schedule()

    def job_ended(self, job_id: str) -> None:
        """A job's driver exited: its groups (not detached) are removed, as in Ray, wherever
        in the job they were made."""
        for rec in list(self.groups.values()):
            if rec.job_id == job_id and not rec.detached and rec.state != REMOVED:
                self.remove(rec.pg_id)

    def owner_gone(self, conn: Connection) -> None:
        """A client closed: drop its waits; a driver's end is its job's end."""
        for rec in self.groups.values():
            if rec.waiters:
                rec.waiters = [w for w in rec.waiters if w[0] is not conn]
        peer = conn.peer if isinstance(conn.peer, tuple) else (None, None)
        if peer[0] == "driver":
            self.job_ended(peer[1])

    # --- queries --------------------------------------------------------------------------
    def wait(self, conn: Connection, req: int, pg_id: str) -> bool | None:
        """Answer at once if the group is created or removed; else reply when it is."""
        rec = self.groups.get(pg_id)
        if rec is None or rec.state == REMOVED:
            return False
        if rec.state in (CREATED, RESCHEDULING):
            return True
        rec.waiters.append((conn, req, "wait"))
        return None

    def locate(self, conn: Connection, req: int, pg_id: str) -> tuple | None:
        """Where the group's bundles are, for another node's lease router: ``(state, node ids
        per bundle)``, answered once every bundle is placed or the group is removed."""
        rec = self.groups.get(pg_id)
        if rec is None or rec.state == REMOVED:
            return (REMOVED, [])
        if rec.state == CREATED:
            return (CREATED, list(rec.nodes))
        rec.waiters.append((conn, req, "locate"))
        return None

    def where(self, pg_id: str) -> tuple[str, list[str | None]]:
        """The group's state and node id per bundle (None: not placed now)."""
        rec = self.groups.get(pg_id)
        if rec is None:
            return (REMOVED, [])
        return (rec.state, rec.nodes)

    def state_of(self, pg_id: str) -> str | None:
        rec = self.groups.get(pg_id)
        return None if rec is None else rec.state

    def get_named(self, name: str, namespace: str) -> dict[str, Any]:
        pg_id = self.named.get((namespace, name))
        if pg_id is None:
            raise ValueError(f"Failed to look up placement group with name {name!r} in "
                             f"namespace {namespace!r}: there is none (removed, or never "
                             "created there).")
        return self.groups[pg_id].public()

    def table(self, pg_id: str | None) -> dict[str, Any]:
        if pg_id is not None:
            rec = self.groups.get(pg_id)
            return {} if rec is None else rec.public()
        return {g: rec.public() for g, rec in self.groups.items()}

    def infeasible(self) -> list[dict[str, Any]]:
        return [rec.public() for rec in self.pending if rec.reason]

    def pending_groups(self) -> list[dict[str, Any]]:
        """Every group waiting to be reserved, in creation order (``reason`` set when it can
        never fit)."""
        return [rec.public() for rec in self.pending if rec.state in (PENDING, RESCHEDULING)]

    def created_count(self) -> int:
        return sum(1 for rec in self.groups.values() if rec.state == CREATED)

    # --- helpers ----------------------------------------------------------------------------
    def _answer_waiters(self, rec: PlacementGroupRecord) -> None:
        created = rec.state == CREATED
        for conn, req, kind in rec.waiters:
            answer = created if kind == "wait" else (rec.state, list(rec.nodes))
            try:
                conn.send((m.REPLY, req, True, answer))
            except ConnectionClosed:
                pass
        rec.waiters = []

    def _save(self, rec: PlacementGroupRecord) -> None:
        self.d.control.storage.put(PLACEMENT_GROUPS, rec.pg_id.encode(),
                                   pickle.dumps(rec.public()))


def pg_request(resources: dict[str, float], pg_id: str, bundle_index: int) -> dict[str, float]:
    """Rewrite a task's or actor's resource request to draw on a placement group's bundle
    (``bundle_index`` -1: any bundle)."""
    marker = 10 / RESOURCE_UNIT
    out = {f"{name}_group_{pg_id}": amount for name, amount in resources.items() if amount}
    out[f"{BUNDLE_MARKER}_group_{pg_id}"] = marker
    if bundle_index >= 0:  # an indexed request draws on its bundle *and* the group's total
        where = f"{bundle_index}_{pg_id}"
        out.update({f"{name}_group_{where}": amount
                    for name, amount in resources.items() if amount})
        out[f"{BUNDLE_MARKER}_group_{where}"] = marker
    return out
