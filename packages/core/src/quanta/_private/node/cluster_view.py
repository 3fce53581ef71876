"""Which node runs a lease: a node daemon's view of the cluster's resources and its choice.

Every node daemon of a cluster keeps a :class:`ClusterView`: the other alive nodes with their
total and available resources as the head last reported them (members get the view in every
heartbeat answer, the head reads its membership table). When a lease request arrives, the
daemon asks :meth:`ClusterView.choose` whether to grant it here or to tell the submitter to
ask another node's daemon ("spill back").

Strategies (the scheduler's strings, see ``scheduling_strategies.check_strategy``):

* ``"DEFAULT"`` (Ray's hybrid policy): stay on this node while its most used requested
  resource is under half used and the request fits now; otherwise the node (this one
  included) that fits it now with the lowest such utilization; when none fits now, this node
  if it could ever run it (the request waits here), else the least used node that could.
* ``"SPREAD"``: round-robin over the nodes that fit the request now (over those that could
  ever fit it when none does now).
* ``"NODE:<node id>:<soft>"`` (``NodeAffinitySchedulingStrategy``): that node if it is alive
  and could ever fit the request; otherwise, when soft, as ``DEFAULT``, when hard an error.

The view of another node is at most a heartbeat period old, so a choice deducts the request
from that node's available resources until the next report: a burst of requests spreads out
instead of all landing on the node that looked free. A node that a submitter could not reach
is left out for a while (:meth:`ClusterView.mark_unreachable`) even if a report still lists
it. Not thread-safe: the daemon's reactor owns it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from quanta._private.resources import NodeResources, ResourceSet

UNREACHABLE_S = 5.0
"""How long a node that could not be reached is left out of choices."""


class Infeasible(Exception):
    """No node can run the request (the message says why)."""


class NodeView:
    """Another node as this daemon last heard of it."""

    __slots__ = ("node_id", "address", "node_ip", "total", "available")

    def __init__(self, node_id: str, address: str, node_ip: str, total: ResourceSet,
                 available: ResourceSet) -> None:
        self.node_id = node_id
        self.node_ip = node_ip
        self.address = address
        self.total = total
        self.available = available


def parse_node_strategy(strategy: str) -> tuple[str, bool] | None:
    """(node id, soft) of a ``"NODE:<id>:<0|1>"`` strategy string, None for others."""
    if not strategy.startswith("NODE:"):
        return None
    _, node_id, soft = strategy.split(":")
    return node_id, soft == "1"


def _utilization(request: ResourceSet, total: ResourceSet, available: ResourceSet) -> float:
    """How used a node is in the resources ``request`` names (CPU for an empty request): the
    highest used share among them."""
    names = list(request) or ["CPU"]
    worst = 0.0
    for name in names:
        t = total.units(name)
        if t:
            worst = max(worst, (t - available.units(name)) / t)
    return worst


class ClusterView:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.nodes: dict[str, NodeView] = {}
        self._unreachable: dict[str, float] = {}  # node id -> monotonic time it is tried again
        self._turn = 0

    def update(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the view with ``records`` (membership records of the alive nodes)."""
        now = time.monotonic()
        for node_id, until in list(self._unreachable.items()):
            if until <= now:
                del self._unreachable[node_id]
        nodes = {}
        for rec in records:
            node_id = rec["node_id"]
            if node_id == self.node_id or node_id in self._unreachable:
                continue
            if not rec.get("node_address"):
                continue  # a node from before cross-node work: nothing can reach it
            try:
                nodes[node_id] = NodeView(node_id, rec["node_address"], rec.get("node_ip", ""),
                                          ResourceSet(rec.get("total") or {}),
                                          ResourceSet(rec.get("available") or {}))
            except (TypeError, ValueError):
                continue
        self.nodes = nodes

    def mark_unreachable(self, node_id: str) -> None:
        self._unreachable[node_id] = time.monotonic() + UNREACHABLE_S
        self.nodes.pop(node_id, None)

    def address_of(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        return node.address if node is not None else None

    def totals(self) -> ResourceSet:
        """The other alive nodes' resources, summed."""
        out = ResourceSet()
        for node in self.nodes.values():
            out = out + node.total
        return out

    def available(self) -> ResourceSet:
        out = ResourceSet()
        for node in self.nodes.values():
            out = out + node.available
        return out

    def largest(self, local: NodeResources) -> ResourceSet:
        """The resources of the biggest node (by CPU), for error messages."""
        best = local.total
        for node in self.nodes.values():
            if node.total.units("CPU") > best.units("CPU"):
                best = node.total
        return best

    # -- the choice --------------------------------------------------------------------------
    def choose(self, request: ResourceSet, strategy: str,
               local: NodeResources) -> NodeView | None:
        """The node to run ``request`` on: None for this one, else another node's view (the
        request is deducted from it). Raises Infeasible when no node can ever run it."""
        affinity = parse_node_strategy(strategy)
        if affinity is not None:
            node_id, soft = affinity
            if node_id == self.node_id and (local.feasible(request) or not soft):
                if not local.feasible(request):
                    raise Infeasible(self._infeasible_text(request, local, node_id))
                return None
            node = self.nodes.get(node_id)
            if node is not None and request.fits_in(node.total):
                return self.take(node, request)
            if not soft:
                if node is None and node_id != self.node_id:
                    raise Infeasible(
                        f"NodeAffinitySchedulingStrategy(node_id={node_id!r}, soft=False): "
                        "no alive node of the cluster has that id (it died, or never "
                        "existed); pass soft=True to run elsewhere in that case.")
                raise Infeasible(self._infeasible_text(request, local, node_id))
            strategy = "DEFAULT"
        if not self.nodes:
            if not local.feasible(request):
                raise Infeasible(self._infeasible_text(request, local))
            return None
        if strategy == "SPREAD":
            return self._spread(request, local)
        return self._hybrid(request, local)

    def _hybrid(self, request: ResourceSet, local: NodeResources) -> NodeView | None:
        here_now = local.can_fit(request)
        here_use = _utilization(request, local.total, local.available)
        if here_now and here_use < 0.5:
            return None
        best: tuple[float, int, NodeView | None] | None = None
        if here_now:
            best = (here_use, 0, None)
        for node in self.nodes.values():
            if request.fits_in(node.available):
                cand = (_utilization(request, node.total, node.available), 1, node)
                if best is None or cand[:2] < best[:2]:
                    best = cand
        if best is not None:
            return best[2] if best[2] is None else self.take(best[2], request)
        if local.feasible(request):
            return None
        able = [n for n in self.nodes.values() if request.fits_in(n.total)]
        if not able:
            raise Infeasible(self._infeasible_text(request, local))
        node = min(able, key=lambda n: _utilization(request, n.total, n.available))
        return self.take(node, request)

    def _spread(self, request: ResourceSet, local: NodeResources) -> NodeView | None:
        able: list[NodeView | None] = [None] if local.feasible(request) else []
        able += sorted((n for n in self.nodes.values() if request.fits_in(n.total)),
                       key=lambda n: n.node_id)
        if not able:
            raise Infeasible(self._infeasible_text(request, local))
        now = [n for n in able if (local.can_fit(request) if n is None
                                   else request.fits_in(n.available))]
        pool = now or able
        self._turn += 1
        node = pool[self._turn % len(pool)]
        return node if node is None else self.take(node, request)

    @staticmethod
    def take(node: NodeView, request: ResourceSet) -> NodeView:
        """Deduct ``request`` from what ``node`` has free until its next report."""
        units = dict(node.available._units)
        for name, u in request._units.items():
            units[name] = max(0, units.get(name, 0) - u)
        node.available = ResourceSet._from_units(units)
        return node

    def _infeasible_text(self, request: ResourceSet, local: NodeResources,
                         node_id: str | None = None) -> str:
        if node_id is not None:
            return (f"No node can ever run it: it requires {request!r} but the node "
                    f"{node_id} its NodeAffinitySchedulingStrategy names (soft=False) does "
                    "not have them. Lower the request or pass soft=True.")
        return (f"No node can ever run it: it requires {request!r} but the largest node in "
                f"the cluster has {self.largest(local)!r}. Lower the resource request or add "
                "a node that has them.")
