"""Which core worker this process uses. One per process: the driver's after ``init()``, or the
worker's own inside a worker process. Kept in a tiny module so that ObjectRef unpickling can
find it without importing the whole runtime."""

from __future__ import annotations

import threading
from typing import Any

_core_worker: Any = None


def set_core_worker(cw: Any) -> None:
    global _core_worker
    _core_worker = cw


def current_core_worker_or_none() -> Any:
    return _core_worker


def current_core_worker() -> Any:
    """The process's core worker; raises RuntimeError if ``init()`` was not called."""
    if _core_worker is None:
        raise RuntimeError(
            "Quanta is not initialized: call quanta.init() first (or ray.init() when imported "
            "as ray)."
        )
    return _core_worker


decoding = threading.local()
"""Per-thread state of the value being decoded (see ``core_worker._Source``): ``refs`` is the
list collecting the refs rebuilt in the current decode batch, None outside one."""
