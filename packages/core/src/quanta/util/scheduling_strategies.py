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
    """Run in a bundle of a placement group (index -1: any of its bundles)."""

    def __init__(self, placement_group: Any, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None) -> None:
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


def check_strategy(strategy: Any) -> Any:
    """Normalise a ``scheduling_strategy`` option: the string the scheduler uses, or a
    validated PlacementGroupSchedulingStrategy (see :func:`apply_strategy`)."""
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
        node_id = strategy.node_id
        if not node_id or not all(c in "0123456789abcdefABCDEF" for c in node_id):
            raise ValueError("NodeAffinitySchedulingStrategy(node_id=...) must be a node's hex "
                             f"id (as nodes() or get_runtime_context().get_node_id() give it), "
                             f"got {node_id!r}")
        return f"NODE:{node_id.lower()}:{int(strategy.soft)}"
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        from quanta.util.placement_group import PlacementGroup

        pg = strategy.placement_group
        if not isinstance(pg, PlacementGroup):
            raise TypeError("PlacementGroupSchedulingStrategy(placement_group=...) must be a "
                            f"PlacementGroup, got {type(pg).__name__}")
        idx = strategy.placement_group_bundle_index
        if type(idx) is not int or not -1 <= idx < pg.bundle_count:
            raise ValueError(
                f"placement_group_bundle_index must be -1 (any bundle) or 0..."
                f"{pg.bundle_count - 1}, got {idx!r}")
        return strategy
    raise TypeError(f"scheduling_strategy of type {type(strategy).__name__} is not supported")


def group_context(strategy: Any) -> tuple | None:
    """What a task or actor scheduled with ``strategy`` carries of its placement group:
    ``(pg id hex, bundles, group strategy, capture child tasks)``, None outside any group."""
    if not isinstance(strategy, PlacementGroupSchedulingStrategy):
        return None
    pg = strategy.placement_group
    return (pg.id.hex(), pg.bundle_specs, pg.strategy,
            bool(strategy.placement_group_capture_child_tasks))


def inherited_strategy(opts: dict[str, Any], cw: Any) -> Any:
    """The strategy of a task or actor made with ``opts``: its own, or, when it names none
    and the task or actor making it runs in a placement group that captures its children,
    that group (any bundle, capturing too), as in Ray."""
    strategy = opts.get("scheduling_strategy")
    group = getattr(cw, "current_pg", None)
    if strategy is not None or group is None or not group[3]:
        return strategy
    from quanta.util.placement_group import PlacementGroup

    return PlacementGroupSchedulingStrategy(PlacementGroup(group[0], group[1], group[2]), -1,
                                            True)


def apply_strategy(resources: dict[str, float], strategy: Any) -> tuple[dict[str, float], str]:
    """(resource request, scheduler strategy string) for a checked strategy: a placement
    group strategy turns the request into one on the group's bundle resources."""
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        from quanta._private.node.placement_groups import pg_request

        pg = strategy.placement_group
        return pg_request(resources, pg.id.hex(), strategy.placement_group_bundle_index), \
            "DEFAULT"
    return resources, strategy or "DEFAULT"
