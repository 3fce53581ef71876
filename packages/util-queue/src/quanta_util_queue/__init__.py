"""quanta-util-queue: Ray's ``ray.util.queue`` for Quanta, published as ``quanta.util.queue``.

Install it and use ``quanta.util.queue.Queue`` (or ``from quanta_util_queue import Queue``);
the contract is in :mod:`quanta_util_queue.queue`. The plugin that publishes the module under
``quanta.util`` is :mod:`quanta_util_queue.plugin` (entry point ``util-queue`` in group
``quanta``).

``Queue``, ``Empty`` and ``Full`` are imported from :mod:`quanta_util_queue.queue` on first use,
so that loading the plugin (every process that builds its plugin manager does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quanta_util_queue._version import __version__ as __version__

if TYPE_CHECKING:
    from quanta_util_queue.queue import Empty as Empty
    from quanta_util_queue.queue import Full as Full
    from quanta_util_queue.queue import Queue as Queue

__all__ = ["Empty", "Full", "Queue", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Empty", "Full", "Queue"):
        from quanta_util_queue import queue

        return getattr(queue, name)
    raise AttributeError(f"module 'quanta_util_queue' has no attribute {name!r}")
