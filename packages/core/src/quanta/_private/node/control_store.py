"""The control store: the cluster's durable tables (nodes, jobs, exported functions, internal
KV), hosted by the head node's daemon on top of a :class:`Storage` backend.

Functions are exported once per content hash; workers fetch them on first use. KV keys live in
namespaces; values are bytes.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from quanta._private.node.storage import Storage

FUNCTIONS = "functions"
KV = "kv"
JOBS = "jobs"
NODES = "nodes"


class ControlStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._functions: dict[bytes, bytes] = {}

    # --- functions ------------------------------------------------------------------
    def export_function(self, fn_id: bytes, blob: bytes) -> None:
        if fn_id in self._functions:
            return
        self._functions[fn_id] = blob
        self.storage.put(FUNCTIONS, fn_id, blob)

    def get_function(self, fn_id: bytes) -> bytes:
        blob = self._functions.get(fn_id)
        if blob is None:
            blob = self.storage.get(FUNCTIONS, fn_id)
            if blob is None:
                raise KeyError(f"function {fn_id.hex()} was never exported to this cluster")
            self._functions[fn_id] = blob
        return blob

    # --- internal KV ------------------------------------------------------------------
    @staticmethod
    def _kv_key(namespace: str | None, key: bytes) -> bytes:
        return (namespace or "").encode() + b"\0" + key

    def kv_put(self, namespace: str | None, key: bytes, value: bytes, overwrite: bool) -> bool:
        k = self._kv_key(namespace, key)
        if not overwrite and self.storage.get(KV, k) is not None:
            return False
        self.storage.put(KV, k, value)
        return True

    def kv_get(self, namespace: str | None, key: bytes) -> bytes | None:
        return self.storage.get(KV, self._kv_key(namespace, key))

    def kv_del(self, namespace: str | None, key: bytes) -> bool:
        return self.storage.delete(KV, self._kv_key(namespace, key))

    def kv_keys(self, namespace: str | None, prefix: bytes) -> list[bytes]:
        head = self._kv_key(namespace, b"")
        return [k[len(head):] for k, _ in self.storage.items(KV)
                if k.startswith(head + prefix)]

    # --- jobs and nodes ----------------------------------------------------------------
    def add_job(self, job_id: str, info: dict[str, Any]) -> None:
        info = dict(info, start_time=time.time(), is_dead=False)
        self.storage.put(JOBS, job_id.encode(), pickle.dumps(info))

    def finish_job(self, job_id: str) -> None:
        raw = self.storage.get(JOBS, job_id.encode())
        if raw is not None:
            info = pickle.loads(raw)
            info.update(is_dead=True, end_time=time.time())
            self.storage.put(JOBS, job_id.encode(), pickle.dumps(info))

    def finish_stale_jobs(self) -> None:
        """Mark the jobs of an earlier run on this storage finished: their drivers are gone."""
        for key, raw in self.storage.items(JOBS):
            info = pickle.loads(raw)
            if not info.get("is_dead"):
                info.update(is_dead=True, end_time=time.time())
                self.storage.put(JOBS, key, pickle.dumps(info))

    def jobs(self) -> list[dict[str, Any]]:
        return [pickle.loads(v) for _, v in self.storage.items(JOBS)]

    def put_node(self, node_id: str, info: dict[str, Any]) -> None:
        self.storage.put(NODES, node_id.encode(), pickle.dumps(info))

    def nodes(self) -> list[dict[str, Any]]:
        return [pickle.loads(v) for _, v in self.storage.items(NODES)]
