"""quanta-util-pool: :class:`ActorPool` for Quanta, published as ``quanta.util.ActorPool``.

Importing this package is cheap (the plugin manager imports it in every process that loads
plugins); :mod:`quanta_util_pool.actor_pool` is imported on first use of ``ActorPool``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quanta_util_pool._version import __version__ as __version__

if TYPE_CHECKING:
    from quanta_util_pool.actor_pool import ActorPool as ActorPool

__all__ = ["ActorPool", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "ActorPool":
        from quanta_util_pool.actor_pool import ActorPool

        return ActorPool
    raise AttributeError(f"module 'quanta_util_pool' has no attribute {name!r}")
