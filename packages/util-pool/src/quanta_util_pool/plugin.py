"""The ``util-pool`` plugin (entry point group ``quanta``): publishes ``quanta.util.ActorPool``.

Implements one hook, ``quanta_util_exports``. It runs lazily, the first time a process looks up
``quanta.util.ActorPool`` (or ``quanta.util.actor_pool``), and only imports what it publishes.
"""

from __future__ import annotations

from quanta.plugins import hookimpl


@hookimpl
def quanta_util_exports() -> dict[str, object]:
    from quanta_util_pool import actor_pool

    # ``actor_pool`` mirrors Ray's ``ray.util.actor_pool`` module for attribute access
    # (``quanta.util.actor_pool.ActorPool``).
    return {"ActorPool": actor_pool.ActorPool, "actor_pool": actor_pool}
