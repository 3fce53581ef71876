"""Placement groups under Ray's names: reserve bundles of resources atomically, then schedule
tasks and actors into them with ``PlacementGroupSchedulingStrategy``.

The control store keeps the groups (``_private/node/placement_groups.py`` has the contract):
creation returns at once, ``ready()``/``wait()`` tell when the bundles are reserved, and a
group that cannot fit stays pending (``quanta status`` lists it as infeasible).
"""

from __future__ import annotations

import os
from typing import Any

from quanta._private import messages as m
from quanta._private.ids import HexID
from quanta.object_ref import ObjectRef

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroupID(HexID):
    """A placement group's id: ``hex()`` and ``binary()``."""

    __slots__ = ()


class PlacementGroup:
    """A handle to a placement group. Picklable; pass it to tasks and actors."""

    def __init__(self, pg_id: str, bundles: list[dict[str, float]], strategy: str = "PACK"):
        self._pg_id = pg_id
        self._bundles = [dict(b) for b in bundles]
        self._strategy = strategy

    @property
    def id(self) -> PlacementGroupID:
        return PlacementGroupID(self._pg_id)

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        return len(self._bundles)

    @property
    def strategy(self) -> str:
        return self._strategy

    def ready(self) -> ObjectRef:
        """A ref that resolves to this group once all its bundles are reserved (raises if the
        group is removed first)."""
        from quanta._private.api import _cw

        return _cw().placement_group_ready(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Block until the group is reserved (True) or ``timeout_seconds`` pass (False)."""
        if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, (int, float)) \
                or timeout_seconds < 0:
            raise ValueError(f"timeout_seconds must be a number >= 0, got {timeout_seconds!r}")
        from quanta._private.api import _cw

        return _cw().wait_placement_group(self._pg_id, timeout_seconds)

    def __reduce__(self):
        return (PlacementGroup, (self._pg_id, self._bundles, self._strategy))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other._pg_id == self._pg_id

    def __hash__(self) -> int:
        return hash(self._pg_id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self._pg_id}, {self._strategy}, {self._bundles})"


def _check_bundles(bundles: Any) -> list[dict[str, float]]:
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError(f"bundles must be a non-empty list of dicts, got {bundles!r}")
    out = []
    for i, b in enumerate(bundles):
        if not isinstance(b, dict) or not b:
            raise ValueError(f"bundles[{i}] must be a non-empty dict of resource name to "
                             f"amount, got {b!r}")
        clean = {}
        for name, amount in b.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"bundles[{i}]: resource names must be non-empty strs, "
                                f"got {name!r}")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"bundles[{i}][{name!r}] must be a number >= 0, got "
                                 f"{amount!r}")
            if amount:
                clean[name] = float(amount)
        if not clean:
            raise ValueError(f"bundles[{i}] asks for no resources at all ({b!r}); every "
                             "bundle must reserve something.")
        out.append(clean)
    return out


def placement_group(bundles: list[dict[str, float]], strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None, _max_cpu_fraction_per_node: float = 1.0,
                    _soft_target_node_id: str | None = None,
                    bundle_label_selector: Any = None) -> PlacementGroup:
    """Reserve ``bundles`` (a list of resource dicts) with ``strategy`` (PACK, SPREAD,
    STRICT_PACK or STRICT_SPREAD). Returns at once; ``ready()``/``wait()`` tell when done."""
    clean = _check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    from quanta._private.api import _cw

    cw = _cw()
    pg_id = os.urandom(14).hex()
    info = {"pg_id": pg_id, "bundles": clean, "strategy": strategy, "name": name,
            "namespace": cw.current_namespace(), "detached": lifetime == "detached",
            "job_id": cw.job_id}
    if name or cw.actor_home is not None:
        # a taken name must raise here, at the call site; on a cluster member the group must
        # be known to the head before this node's daemon asks it where the group is
        cw.call_actor_manager("create_placement_group", info)
    else:  # nothing can fail: one message, ordered before any later call on this group
        cw.send_actor_manager((m.NOTIFY, "create_placement_group", (info,)))
    return PlacementGroup(pg_id, clean, strategy)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Release the group's bundles; tasks and actors running in it are killed."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group() expects a PlacementGroup, got "
                        f"{type(placement_group).__name__}")
    from quanta._private.api import _cw

    _cw().send_actor_manager((m.NOTIFY, "remove_placement_group", (placement_group._pg_id,)))


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live placement group called ``placement_group_name`` in this job's namespace."""
    if not isinstance(placement_group_name, str) or not placement_group_name:
        raise ValueError(f"placement_group_name must be a non-empty str, got "
                         f"{placement_group_name!r}")
    from quanta._private.api import _cw

    cw = _cw()
    info = cw.call_actor_manager("get_named_placement_group", placement_group_name,
                          cw.current_namespace())
    bundles = [info["bundles"][i] for i in sorted(info["bundles"])]
    return PlacementGroup(info["placement_group_id"], bundles, info["strategy"])


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """Every group's state (or one group's), keyed by id as Ray returns it."""
    from quanta._private.api import _cw

    pg_id = None if placement_group is None else placement_group._pg_id
    return _cw().call_actor_manager("placement_group_table", pg_id)


def get_current_placement_group() -> PlacementGroup | None:
    """The placement group the current task or actor was scheduled in (its
    ``PlacementGroupSchedulingStrategy``, or its parent's when captured); None outside any
    group, and in a driver."""
    from quanta._private.api import _cw

    group = _cw().current_pg
    return None if group is None else PlacementGroup(group[0], group[1], group[2])
