"""``quanta.util``: scheduling strategies here; ActorPool, Queue and others come from plugins
(``quanta_util_exports``) and are looked up the first time they are used."""

from __future__ import annotations

import sys
import types
from importlib.machinery import ModuleSpec
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
    found = cw.call_actor_manager("list_named_actors", None if all_namespaces else
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
            f"installed (or its plugin is disabled or blocked, see QUANTA_DISABLE_PLUGIN_"
            f"AUTOLOAD and QUANTA_BLOCK_PLUGINS): pip install {_PROVIDERS[name]}")
    raise AttributeError(f"module 'quanta.util' has no attribute {name!r}")


class _PublishedModuleFinder:
    """Lets ``import quanta.util.<name>`` (and ``from quanta.util.<name> import X``) find a
    module that a plugin publishes through ``quanta_util_exports``, as Ray users write
    ``from ray.util.queue import Queue``. A name listed in ``_PROVIDERS`` whose package is
    missing raises ``ModuleNotFoundError`` naming the package to install."""

    _PREFIX = "quanta.util."

    @classmethod
    def _published(cls, fullname: str) -> Any:
        name = fullname[len(cls._PREFIX):]
        if not fullname.startswith(cls._PREFIX) or "." in name:
            return None
        from quanta.plugins.manager import util_exports

        obj = util_exports().get(name)
        if isinstance(obj, types.ModuleType):
            return obj
        if obj is None and name in _PROVIDERS:
            raise ModuleNotFoundError(
                f"{fullname} is provided by the {_PROVIDERS[name]} package, which is not "
                f"installed (or its plugin is disabled or blocked): pip install "
                f"{_PROVIDERS[name]}", name=fullname)
        return None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith(self._PREFIX):
            return None
        return None if self._published(fullname) is None else ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> Any:
        module = self._published(spec.name)
        spec.loader_state = module.__spec__  # the import system overwrites __spec__
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = module.__spec__.loader_state


sys.meta_path.append(_PublishedModuleFinder())
