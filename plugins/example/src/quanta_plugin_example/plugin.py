"""The example plugin's hooks: the module that the ``quanta`` entry point names.

Quanta imports this module the first time a process needs its plugin manager, and registers it
under the entry point's key (``example``). Every ``quanta_*`` function here must be a hook of
``quanta.plugins.hookspecs`` (a misspelt one is an error at registration), so helpers get other
names. Keep the module cheap to import: import what a hook returns inside the hook.
"""

from __future__ import annotations

from quanta.plugins import hookimpl

__all__ = ["quanta_util_exports"]


@hookimpl
def quanta_util_exports() -> dict[str, object]:
    """Publish ``quanta.util.as_completed`` and ``quanta.util.map_unordered``."""
    from quanta_plugin_example._iterate import as_completed, map_unordered

    return {"as_completed": as_completed, "map_unordered": map_unordered}
