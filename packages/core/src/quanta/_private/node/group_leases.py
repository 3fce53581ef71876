"""Lease requests that draw on a placement group: sent to the node holding the bundle.

A task scheduled into a placement group asks for the group's resources (``CPU_group_1_<pg>``,
see ``placement_groups.pg_request``), which exist only on the nodes holding its bundles. The
daemon that receives such a request routes it:

* to itself, queued as any other request, when this node holds the bundle (prepared or
  committed: a commit may still be on its way from the head);
* to the node holding it, by answering ``LEASE_SPILL`` (the submitter asks that node);
* into a parked list while the group's bundles are not placed (it is pending, or being
  rescheduled after a node died), sent on when they are;
* back to the submitter as a failure when the group was removed.

Where the bundles are comes from the placement group manager: in-process on the daemon that
owns the control store, else asked of the head (``locate_placement_group``, answered once the
group is placed) and cached. A cached location that turns out wrong (its node died, or no
longer holds the group) is dropped and asked again. A request for any bundle (index -1) stays
here when this node holds one and can run it now, else goes to a holding node the cluster view
says has room, else to a holding node anyway. Reactor thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quanta._private import messages as m
from quanta._private.node.placement_groups import REMOVED, bundle_index_of
from quanta._private.resources import ResourceSet
from quanta._private.transport import ConnectionClosed

if TYPE_CHECKING:
    from quanta._private.node.daemon import LeaseRequest, NodeDaemon


def removed_text(pg_id: str) -> str:
    return (f"The placement group {pg_id} was removed (or never existed), so nothing can be "
            "scheduled in it.")


class GroupLeases:
    def __init__(self, daemon: NodeDaemon) -> None:
        self.d = daemon
        self.cache: dict[str, tuple[str, list[str | None]]] = {}  # members: pg -> location
        self.parked: dict[str, list[LeaseRequest]] = {}
        self.asking: set[str] = set()

    @property
    def _authority(self) -> bool:
        """Whether this daemon owns the placement group table (a head or a lone node)."""
        return self.d.head_link is None

    def where(self, pg_id: str) -> tuple[str, list[str | None]] | None:
        """(state, node id per bundle), or None when it must be asked of the head."""
        if self._authority:
            return self.d.pgs.where(pg_id)
        return self.cache.get(pg_id)

    def submit(self, lr: LeaseRequest, pg_id: str) -> None:
        d = self.d
        index = bundle_index_of(lr.resources)
        if d.bundles.holds(pg_id) and (
                index < 0 and d.resources.can_fit(lr.resources)
                or index >= 0 and index in d.bundles.indices(pg_id)):
            self._queue(lr, pg_id)
            return
        where = self.where(pg_id)
        if where is None:
            self._await_location(lr, pg_id)
            return
        state, nodes = where
        if state == REMOVED or not nodes:
            lr.fail(removed_text(pg_id))
            return
        target = self.pick(lr.resources, nodes, index)
        address = None if target in (None, d.node_id) else d.view.address_of(target)
        if target == d.node_id and d.bundles.holds(pg_id):
            self._queue(lr, pg_id)
        elif address is not None:
            try:
                lr.conn.send((m.LEASE_SPILL, lr.req, target, address, lr.key_list))
            except ConnectionClosed:
                pass
        else:  # not placed now (pending, or its node died), or a stale location
            self._await_location(lr, pg_id)

    def _await_location(self, lr: LeaseRequest, pg_id: str) -> None:
        """Park ``lr`` until the group's location changes; a member asks the head afresh."""
        self._park(lr, pg_id)
        if not self._authority:
            self.cache.pop(pg_id, None)
            self._ask(pg_id)

    def _queue(self, lr: LeaseRequest, pg_id: str) -> None:
        """Queue ``lr`` here, or fail it when the group's bundles here can never fit it."""
        d = self.d
        if d.bundles.settled(pg_id) and not d.resources.feasible(lr.resources):
            have = {k: v for k, v in d.resources.total.to_dict().items() if pg_id in k}
            lr.fail(f"No node can ever run this task: it requires {lr.resources!r} "
                    f"but its placement group's bundles on node {d.node_id} have "
                    f"{have!r}. Lower the request or make the bundle bigger.")
            return
        d.queue_lease(lr)

    def pick(self, request: ResourceSet, nodes: list[str | None], index: int) -> str | None:
        """The node to run ``request`` on among the group's (``nodes``: node id per bundle),
        None while the bundle it needs is not placed."""
        if index >= 0:
            return nodes[index] if index < len(nodes) else None
        holders = [n for n in dict.fromkeys(nodes) if n is not None]
        if not holders:
            return None
        d = self.d
        if d.node_id in holders and d.resources.can_fit(request):
            return d.node_id
        for node_id in holders:
            node = d.view.nodes.get(node_id)
            if node is not None and request.fits_in(node.available):
                return node_id
        return d.node_id if d.node_id in holders else holders[0]

    def _park(self, lr: LeaseRequest, pg_id: str) -> None:
        self.parked.setdefault(pg_id, []).append(lr)
        lr.tell_queued()

    def _ask(self, pg_id: str) -> None:
        """Ask the head where the group is (a member daemon); parked requests go on then."""
        d = self.d
        if self._authority or pg_id in self.asking:
            return
        if d.head_node_address is None:
            return  # not joined yet: asked again when the next request comes

        def answered(ok: bool, result: Any) -> None:
            self.asking.discard(pg_id)
            if ok:
                self.cache[pg_id] = (result[0], list(result[1]))
            self.group_changed(pg_id)

        self.asking.add(pg_id)
        if not d.links.call_node(d.head_node_address, "locate_placement_group", (pg_id,),
                                 answered):
            self.asking.discard(pg_id)

    def group_changed(self, pg_id: str) -> None:
        """The group's bundles were placed or it was removed: send its parked requests on
        (and place the actors that wait for it)."""
        parked = self.parked.pop(pg_id, ())
        for lr in parked:
            if not lr.conn.closed:
                self.submit(lr, pg_id)
        if parked or self.d.actors.pending:
            self.d._schedule()

    def forget(self, pg_id: str) -> None:
        """This node released the group: a cached location may be stale."""
        self.cache.pop(pg_id, None)

    def cancel(self, conn: Any, req: int) -> LeaseRequest | None:
        """Drop the parked request ``req`` of ``conn``; returns it (None if not parked)."""
        for pg_id, lrs in self.parked.items():
            for lr in lrs:
                if lr.conn is conn and lr.req == req:
                    lrs.remove(lr)
                    if not lrs:
                        del self.parked[pg_id]
                    return lr
        return None

    def drop_client(self, conn: Any) -> None:
        for pg_id, lrs in list(self.parked.items()):
            keep = [lr for lr in lrs if lr.conn is not conn]
            if keep:
                self.parked[pg_id] = keep
            else:
                del self.parked[pg_id]
