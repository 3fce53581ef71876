"""Where a placement group's bundles go: the placement strategies over the cluster's nodes.

Pure functions; the head's placement group manager feeds them each node's free resources
(this node's own table, the others as the cluster view last heard) and reserves what they
choose with a two-phase reserve (``placement_groups.py``).

* ``STRICT_PACK``: every bundle on one node.
* ``PACK``: one node if any can take them all, else as few nodes as a greedy pass finds
  (each bundle goes to a node the group already uses when it fits there).
* ``SPREAD``: each bundle on a node the group does not use yet when one fits, else anywhere.
* ``STRICT_SPREAD``: each bundle on its own node.

Among nodes that qualify, the one left least used by the choice wins (its most used
requested resource, as a share of its total), the first listed on a tie: the caller lists
its own node first, so a one-node cluster always places locally.

Bundles already placed (``placed``: a group whose node died keeps its other bundles) count as
the group's nodes for the rules: lost bundles of a ``STRICT_PACK`` group go back to the node
holding the rest, those of a ``STRICT_SPREAD`` group to nodes holding none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from quanta._private.resources import ResourceSet


@dataclass
class NodeSlot:
    """A node as placement sees it: its id, what it has free, and everything it has."""

    node_id: str
    available: ResourceSet
    total: ResourceSet


def _used_share(need: ResourceSet, free: ResourceSet, total: ResourceSet) -> float:
    """The highest share of ``total`` in use, among ``need``'s resources, once ``need`` is
    taken from ``free``."""
    worst = 0.0
    for name in need:
        t = total.units(name)
        if t:
            worst = max(worst, 1 - (free.units(name) - need.units(name)) / t)
    return worst


def _best(need: ResourceSet, slots: list[NodeSlot], free: dict[str, ResourceSet],
          allowed: set[str] | None = None) -> NodeSlot | None:
    best: tuple[float, int, NodeSlot] | None = None
    for i, slot in enumerate(slots):
        if allowed is not None and slot.node_id not in allowed:
            continue
        if not need.fits_in(free[slot.node_id]):
            continue
        cand = (_used_share(need, free[slot.node_id], slot.total), i, slot)
        if best is None or cand[:2] < best[:2]:
            best = cand
    return best[2] if best is not None else None


def place_bundles(bundles: dict[int, ResourceSet], strategy: str, slots: list[NodeSlot],
                  placed: dict[int, str] | None = None) -> dict[int, str] | None:
    """Bundle index -> node id for every bundle of ``bundles`` (the ones to place), or None
    when ``strategy`` cannot place them all on ``slots`` now."""
    placed = placed or {}
    free = {s.node_id: s.available for s in slots}
    group_nodes = set(placed.values())
    out: dict[int, str] = {}

    def take(index: int, slot: NodeSlot) -> None:
        free[slot.node_id] = free[slot.node_id] - bundles[index]
        out[index] = slot.node_id
        group_nodes.add(slot.node_id)

    if strategy in ("STRICT_PACK", "PACK"):
        total = ResourceSet()
        for need in bundles.values():
            total = total + need
        home = _best(total, slots, free, group_nodes or None)
        if home is None and strategy == "PACK" and group_nodes:
            home = _best(total, slots, free)
        if home is not None:
            for index in bundles:
                take(index, home)
            return out
        if strategy == "STRICT_PACK":
            return None
        for index in sorted(bundles, key=lambda i: -sum(bundles[i]._units.values())):
            slot = _best(bundles[index], slots, free, group_nodes or None) \
                or _best(bundles[index], slots, free)
            if slot is None:
                return None
            take(index, slot)
        return out
    if strategy in ("SPREAD", "STRICT_SPREAD"):
        for index in sorted(bundles):
            unused = {s.node_id for s in slots} - group_nodes
            slot = _best(bundles[index], slots, free, unused)
            if slot is None and strategy == "SPREAD":
                slot = _best(bundles[index], slots, free)
            if slot is None:
                return None
            take(index, slot)
        return out
    raise ValueError(f"unknown placement strategy {strategy!r}")


def infeasible_reason(bundles: dict[int, ResourceSet], strategy: str, slots: list[NodeSlot],
                      placed: dict[int, str] | None = None) -> str:
    """Why ``bundles`` can never be placed with ``strategy`` on these nodes even when all of
    them are idle ("" when they could be)."""
    idle = [NodeSlot(s.node_id, s.total, s.total) for s in slots]
    if place_bundles(bundles, strategy, idle, placed) is not None:
        return ""
    largest = max((s.total for s in slots), key=lambda t: t.units("CPU"), default=ResourceSet())
    if strategy == "STRICT_SPREAD":
        return (f"STRICT_SPREAD needs {len(bundles) + len(set((placed or {}).values()))} "
                f"nodes (one per bundle) that can each hold a bundle, but the cluster has "
                f"{len(slots)} node(s) and not enough of them can.")
    total = ResourceSet()
    for need in bundles.values():
        total = total + need
    if strategy == "STRICT_PACK" or len(bundles) == 1:
        return f"The bundles need {total!r} together but the largest node has {largest!r}."
    for index in sorted(bundles):
        if not any(bundles[index].fits_in(s.total) for s in slots):
            return (f"Bundle {index} needs {bundles[index]!r} but the largest node has "
                    f"{largest!r}.")
    return (f"The bundles need {total!r} together, more than the cluster's {len(slots)} "
            f"node(s) can hold with {strategy} (the largest node has {largest!r}).")
