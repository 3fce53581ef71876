"""Scheduling strategies, under Ray's names."""

from __future__ import annotations

from typing import Any


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id``; if ``soft``, anywhere when that node cannot."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False) -> None:
        if not isinstance(node_id, str):
            raise TypeError(f"node_id must be a hex str, got {type(node_id).__name__}")
        self.node_id = node_id
        self.soft = bool(soft)


class PlacementGroupSchedulingStrategy:
    """Run in a bundle of a placement group (placement groups arrive with multi-node)."""

    def __init__(self, placement_group: Any, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None) -> None:
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


def check_strategy(strategy: Any) -> str:
    """Normalise a ``scheduling_strategy`` option to the string the scheduler uses."""
    if strategy is None:
        return "DEFAULT"
    if isinstance(strategy, str):
        if strategy.upper() in ("DEFAULT", "SPREAD"):
            return strategy.upper()
        raise ValueError(
            f"scheduling_strategy must be 'DEFAULT', 'SPREAD', a "
            f"NodeAffinitySchedulingStrategy or a PlacementGroupSchedulingStrategy, "
            f"got {strategy!r}")
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return "DEFAULT"  # one node: every affinity is satisfied locally for now
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        raise ValueError("PlacementGroupSchedulingStrategy is not supported yet "
                         "(placement groups arrive with multi-node clusters)")
    raise TypeError(f"scheduling_strategy of type {type(strategy).__name__} is not supported")
