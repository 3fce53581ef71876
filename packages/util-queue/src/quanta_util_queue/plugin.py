"""The ``util-queue`` plugin: publishes ``quanta.util.queue`` (the module, with ``Queue``,
``Empty`` and ``Full``) and ``quanta.util.Queue`` through the ``quanta_util_exports`` hook."""

from __future__ import annotations

from quanta.plugins import hookimpl


@hookimpl
def quanta_util_exports() -> dict[str, object]:
    from quanta_util_queue import queue

    return {"queue": queue, "Queue": queue.Queue}
