"""Placement groups in the control store and their reservation on the node.

Contract
--------
A placement group reserves its bundles atomically: all of them or none. Reserving takes the
sum of the bundles from the node's free resources (one allocation, GPUs included) and adds,
per bundle ``i`` and resource ``R``, the resources ``R_group_i_<pg>`` and ``R_group_<pg>``
(Ray's names) plus ``bundle_group_i_<pg>``/``bundle_group_<pg>`` markers. A task or actor
scheduled into the group asks for those names instead of ``R`` (the submitter rewrites its
request, see ``pg_request``), so the ordinary lease scheduler places it inside the bundle.

A group that cannot be reserved now stays ``PENDING`` and is retried whenever resources are
freed; one that can never fit (more than the node has, or STRICT_SPREAD over more bundles
than there are nodes) stays pending too and is listed as infeasible by ``quanta status``.
Removing a group kills the workers that use its bundles (their tasks fail, their actors die)
and gives the reservation back. Groups of a driver that exits are removed unless created with
``lifetime="detached"``.
"""

from __future__ import annotations

import pickle
import re
from typing import TYPE_CHECKING, Any

from quanta._private import messages as m
from quanta._private.resources import RESOURCE_UNIT, Allocation, ResourceSet
from quanta._private.transport import Connection, ConnectionClosed

if TYPE_CHECKING:
    from quanta._private.node.daemon import NodeDaemon

PLACEMENT_GROUPS = "placement_groups"
PENDING = "PENDING"
CREATED = "CREATED"
REMOVED = "REMOVED"
BUNDLE_MARKER = "bundle"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


_GROUP_RESOURCE = re.compile(r"^.+_group_(?:\d+_)?([0-9a-f]{28})$")


def pg_of_resource(name: str) -> str | None:
    """The placement group id a resource name belongs to, or None for a plain resource
    (a user's own resource may contain ``_group_``; a group's ends in its 28-digit id)."""
    if "_group_" not in name:
        return None
    match = _GROUP_RESOURCE.match(name)
    return match.group(1) if match else None


def bundle_resources(pg_id: str, bundles: list[dict[str, float]]) -> ResourceSet:
    """The resources that reserving ``bundles`` adds to the node."""
    out: dict[str, float] = {}
    for i, bundle in enumerate(bundles):
        for name, amount in list(bundle.items()) + [(BUNDLE_MARKER, 1000.0)]:
            for key in (f"{name}_group_{i}_{pg_id}", f"{name}_group_{pg_id}"):
                out[key] = out.get(key, 0.0) + amount
    return ResourceSet(out)


class PlacementGroupRecord:
    __slots__ = ("pg_id", "name", "namespace", "strategy", "bundles", "state", "detached",
                 "creator", "job_id", "alloc", "added", "waiters", "reason", "node_id")

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
        self.alloc: Allocation | None = None
        self.added: list[str] = []
        self.waiters: list[tuple[Connection, int]] = []
        self.reason = ""
        self.node_id = ""

    def public(self) -> dict[str, Any]:
        return {
            "placement_group_id": self.pg_id, "name": self.name, "namespace": self.namespace,
            "strategy": self.strategy, "state": self.state, "detached": self.detached,
            "bundles": {i: dict(b) for i, b in enumerate(self.bundles)},
            "bundles_to_node_id": {i: self.node_id for i in range(len(self.bundles))}
            if self.state == CREATED else {},
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
        if rec.state == PENDING:
            rec.reason = self._infeasible_reason(rec)
            self._save(rec)

    def _infeasible_reason(self, rec: PlacementGroupRecord) -> str:
        res = self.d.resources
        if rec.strategy == "STRICT_SPREAD" and len(rec.bundles) > 1:
            return (f"STRICT_SPREAD needs {len(rec.bundles)} nodes (one per bundle) but the "
                    "cluster has 1 node.")
        total = ResourceSet({})
        for b in rec.bundles:
            total = total + ResourceSet(b)
        if not res.feasible(total):
            plain = ResourceSet({k: v for k, v in res.total.to_dict().items()
                                 if not pg_of_resource(k)})  # not other groups' resources
            return (f"The bundles need {total!r} together but the largest node has "
                    f"{plain!r}.")
        return ""

    def schedule(self) -> None:
        """Reserve pending groups that fit now, in creation order."""
        if not self.pending:
            return
        res = self.d.resources
        still = []
        for rec in self.pending:
            if rec.state != PENDING:
                continue
            if rec.strategy == "STRICT_SPREAD" and len(rec.bundles) > 1:
                still.append(rec)
                continue
            need = ResourceSet({})
            for b in rec.bundles:
                need = need + ResourceSet(b)
            alloc = res.allocate(need)
            if alloc is None:
                still.append(rec)
                continue
            rec.alloc = alloc
            added = bundle_resources(rec.pg_id, rec.bundles)
            res.add_resources(added)
            rec.added = list(added)
            rec.state = CREATED
            rec.node_id = self.d.node_id
            rec.reason = ""
            self._save(rec)
            for conn, req in rec.waiters:
                self._reply(conn, req, True)
            rec.waiters = []
        self.pending = still

    def remove(self, pg_id: str) -> None:
        rec = self.groups.get(pg_id)
        if rec is None or rec.state == REMOVED:
            return
        d = self.d
        was_created = rec.state == CREATED
        rec.state = REMOVED
        if rec in self.pending:
            self.pending.remove(rec)
        if rec.name:
            self.named.pop((rec.namespace, rec.name), None)
        for conn, req in rec.waiters:
            self._reply(conn, req, False)
        rec.waiters = []
        if was_created:
            names = set(rec.added)
            for w in list(d.workers.values()):
                if w.alloc is not None and names & set(w.alloc.resources):
                    if w.actor_id is not None:
                        d.actors.kill(w.actor_id, True, "The actor died because its placement "
                                      f"group {pg_id} was removed.")
                    else:
                        d._kill_worker(w)
            d.resources.remove_resources(rec.added)
            if rec.alloc is not None:
                d.resources.release(rec.alloc)
                rec.alloc = None
        d.fail_requests_of_pg(pg_id)
        self._save(rec)
        d._schedule()

    def owner_gone(self, conn: Connection) -> None:
        """A client closed. A group belongs to its job, as in Ray: when the job's driver
        goes, its groups (not detached) are removed, wherever in the job they were made."""
        peer = conn.peer if isinstance(conn.peer, tuple) else (None, None)
        for rec in list(self.groups.values()):
            rec.waiters = [(c, r) for c, r in rec.waiters if c is not conn]
            if (peer[0] == "driver" and rec.job_id == peer[1] and not rec.detached
                    and rec.state != REMOVED):
                self.remove(rec.pg_id)

    # --- queries --------------------------------------------------------------------------
    def wait(self, conn: Connection, req: int, pg_id: str) -> bool | None:
        """Answer at once if the group is created or removed; else reply when it is."""
        rec = self.groups.get(pg_id)
        if rec is None or rec.state == REMOVED:
            return False
        if rec.state == CREATED:
            return True
        rec.waiters.append((conn, req))
        return None

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
        return [rec.public() for rec in self.pending if rec.state == PENDING]

    def created_count(self) -> int:
        return sum(1 for rec in self.groups.values() if rec.state == CREATED)

    # --- helpers ----------------------------------------------------------------------------
    def _reply(self, conn: Connection, req: int, ok: bool) -> None:
        try:
            conn.send((m.REPLY, req, True, ok))
        except ConnectionClosed:
            pass

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
