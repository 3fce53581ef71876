"""``get_runtime_context()``: ids of the current job, node, task and worker."""

from __future__ import annotations

from typing import Any

from quanta._private.worker_state import current_core_worker


class RuntimeContext:
    """What the current process knows of where it runs. Ray's getter names."""

    def __init__(self, cw: Any) -> None:
        self._cw = cw

    def get_job_id(self) -> str:
        return self._cw.job_id

    def get_node_id(self) -> str:
        return self._cw.node_id

    def get_task_id(self) -> str | None:
        tid = self._cw.current_task_id
        return None if tid is None else tid.hex()

    def get_worker_id(self) -> str:
        return self._cw.worker_id

    def get_actor_id(self) -> str | None:
        return None

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    @property
    def worker_id(self) -> str:
        return self.get_worker_id()

    @property
    def gcs_address(self) -> str:
        return self._cw.daemon_address

    @property
    def namespace(self) -> str:
        return getattr(self._cw, "namespace", "")

    def get_assigned_resources(self) -> dict[str, float]:
        return dict(getattr(self._cw, "assigned_resources", {}) or {})

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        from quanta._private.api import get_gpu_ids

        return {"GPU": [str(g) for g in get_gpu_ids()]}

    def get(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "node_id": self.node_id, "task_id": self.task_id,
                "worker_id": self.worker_id, "namespace": self.namespace}


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(current_core_worker())
