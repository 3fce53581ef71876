"""``quanta.util``: scheduling strategies here; ActorPool, Queue and others come from plugins
(``quanta_util_exports``) and are looked up the first time they are used."""

from __future__ import annotations

from typing import Any

from quanta.util import scheduling_strategies as scheduling_strategies
from quanta.util.placement_group import PlacementGroup as PlacementGroup
from quanta.util.placement_group import get_current_placement_group as get_current_placement_group
from quanta.util.placement_group import get_placement_group as get_placement_group
from quanta.util.placement_group import placement_group as placement_group
from quanta.util.placement_group import placement_group_table as placement_group_table
from quanta.util.placement_group import remove_placement_group as remove_placement_group


def list_named_actors(all_namespaces: bool = False) -> list:
    """Names of the live named actors: in this job's namespace (a list of names), or in every
    namespace (a list of ``{"name": ..., "namespace": ...}`` dicts), as Ray returns them."""
    from quanta._private.api import _cw

    cw = _cw()
    found = cw.call_daemon("list_named_actors", None if all_namespaces else
                           cw.current_namespace())
    return found if all_namespaces else [a["name"] for a in found]


_PROVIDERS = {"ActorPool": "quanta-util-pool", "queue": "quanta-util-queue",
              "Queue": "quanta-util-queue"}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    from quanta.plugins.manager import util_exports

    exports = util_exports()
    if name in exports:
        return exports[name]
    if name in _PROVIDERS:
        raise ImportError(
            f"quanta.util.{name} is provided by the {_PROVIDERS[name]} package, which is not "
            f"installed: pip install {_PROVIDERS[name]}")
    raise AttributeError(f"module 'quanta.util' has no attribute {name!r}")
