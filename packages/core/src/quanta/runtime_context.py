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
        """The current actor's id (hex), or None outside an actor."""
        return self._cw.actor_id

    def get_placement_group_id(self) -> str | None:
        """The id (hex) of the placement group the current task or actor was scheduled in,
        or None."""
        group = getattr(self._cw, "current_pg", None)
        return None if group is None else group[0]

    def get_actor_name(self) -> str | None:
        meta = getattr(self._cw, "actor_name", None)
        return meta or None

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """True inside an actor that was restarted after its process died."""
        return self._cw.actor_id is not None and self._cw.actor_incarnation > 0

    @property
    def current_actor(self) -> Any:
        """A handle to the current actor (inside an actor only)."""
        if self._cw.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor.")
        from quanta.actor import ActorHandle

        cw = self._cw
        owner = getattr(cw, "actor_handle_owner", None)
        ref = None
        if owner:  # a counted handle, like any other: returning it keeps the actor alive
            ref = cw.borrow_handle_ref({"actor_id": cw.actor_id, "handle_owner": owner})
        return ActorHandle(cw.actor_id, cw.actor_meta, ref)

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
        return self._cw.current_namespace()

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
