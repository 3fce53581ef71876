"""The placement group bundles this node holds: the node's side of the two-phase reserve.

The placement group manager (the head's daemon, ``placement_groups.py``) reserves a group's
bundles in two phases over every node it chose:

1. ``prepare(pg_id, attempt, bundles)`` takes the bundles' resources from the node's free resources
   as one allocation (so no lease can take them meanwhile) and answers whether they fit. A
   node that cannot take them answers False and keeps nothing.
2. ``commit(pg_id, attempt)`` turns prepared bundles into usable ones: it adds, per bundle
   ``i`` and resource ``R``, the resources ``R_group_i_<pg>`` and ``R_group_<pg>`` (Ray's
   names) plus ``bundle_group_i_<pg>``/``bundle_group_<pg>`` markers. A task or actor placed
   in the group asks for those names (the submitter rewrites its request, see
   ``placement_groups.pg_request``), so the ordinary lease scheduler runs it inside the bundle.
   When any node cannot prepare, the manager ``cancel``\\ s the others instead. ``attempt``
   numbers the manager's tries at a group, so a late answer never touches a newer try.

``release(pg_id)`` gives everything of a group back: the workers using its resources are
killed (their tasks fail, their actors die), lease requests queued for it fail, and its
resources and allocations go. Reactor thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quanta._private.resources import Allocation, ResourceSet

if TYPE_CHECKING:
    from quanta._private.node.daemon import NodeDaemon

BUNDLE_MARKER = "bundle"


def bundle_resources(pg_id: str, bundles: list[tuple[int, dict[str, float]]]) -> ResourceSet:
    """The resources that committing ``bundles`` ((index, bundle) pairs) adds to the node."""
    out: dict[str, float] = {}
    for i, bundle in bundles:
        for name, amount in list(bundle.items()) + [(BUNDLE_MARKER, 1000.0)]:
            for key in (f"{name}_group_{i}_{pg_id}", f"{name}_group_{pg_id}"):
                out[key] = out.get(key, 0.0) + amount
    return ResourceSet(out)


class _Reserved:
    __slots__ = ("attempt", "bundles", "alloc", "committed")

    def __init__(self, attempt: int, bundles: list[tuple[int, dict[str, float]]],
                 alloc: Allocation) -> None:
        self.attempt = attempt
        self.bundles = bundles
        self.alloc = alloc
        self.committed = False


class NodeBundles:
    def __init__(self, daemon: NodeDaemon) -> None:
        self.d = daemon
        self.groups: dict[str, list[_Reserved]] = {}
        self.added: dict[str, set[str]] = {}  # pg id -> resource names committed here

    def prepare(self, pg_id: str, attempt: int,
                bundles: list[tuple[int, dict[str, float]]]) -> bool:
        need = ResourceSet()
        for _, bundle in bundles:
            need = need + ResourceSet(bundle)
        alloc = self.d.resources.allocate(need)
        if alloc is None:
            return False
        self.groups.setdefault(pg_id, []).append(_Reserved(attempt, bundles, alloc))
        return True

    def commit(self, pg_id: str, attempt: int) -> None:
        for rec in self.groups.get(pg_id, ()):
            if rec.attempt == attempt and not rec.committed:
                rec.committed = True
                added = bundle_resources(pg_id, rec.bundles)
                self.d.resources.add_resources(added)
                self.added.setdefault(pg_id, set()).update(added)

    def cancel(self, pg_id: str, attempt: int) -> None:
        """Give back the bundles ``attempt`` prepared, unless committed."""
        recs = self.groups.get(pg_id, [])
        for rec in [r for r in recs if r.attempt == attempt and not r.committed]:
            recs.remove(rec)
            self.d.resources.release(rec.alloc)
        if not recs:
            self.groups.pop(pg_id, None)

    def holds(self, pg_id: str) -> bool:
        return pg_id in self.groups

    def settled(self, pg_id: str) -> bool:
        """Whether this node holds bundles of the group and all of them are committed."""
        recs = self.groups.get(pg_id)
        return bool(recs) and all(r.committed for r in recs)

    def indices(self, pg_id: str) -> set[int]:
        """The group's bundles this node holds (prepared or committed)."""
        return {i for rec in self.groups.get(pg_id, ()) for i, _ in rec.bundles}

    def release(self, pg_id: str, why: str) -> None:
        """Give back everything of the group ``pg_id`` on this node (see the module doc)."""
        recs = self.groups.pop(pg_id, None)
        names = self.added.pop(pg_id, set())
        d = self.d
        if names:
            for w in list(d.workers.values()):
                if w.alloc is not None and names & set(w.alloc.resources):
                    d._kill_worker(w)
            d.resources.remove_resources(list(names))
        for rec in recs or ():
            d.resources.release(rec.alloc)
        d.fail_requests_of_pg(pg_id, why)

    def release_all(self, why: str) -> None:
        for pg_id in list(self.groups):
            self.release(pg_id, why)
        self.d._schedule()
