"""Entry point of a worker process (forked by the node daemon's zygote)."""

from __future__ import annotations

import os

from quanta._private import worker_state
from quanta._private.core_worker import CoreWorker
from quanta._private.executor import Executor


def run_worker(*, worker_id: str, session_dir: str, daemon_address: str, node_id: str,
               store_dir: str) -> None:
    """Connect to the daemon, register, then run pushed tasks until the daemon goes away."""
    cw = CoreWorker(
        mode="worker",
        session_dir=session_dir,
        daemon_address=daemon_address,
        node_id=node_id,
        job_id="",
        worker_id=worker_id,
        store_dir=store_dir,
    )
    worker_state.set_core_worker(cw)
    executor = Executor(cw)
    address = cw.call_daemon("register_worker", worker_id, cw.address, os.getpid())
    if address != cw.address:  # a node of a cluster: reached through its TCP port
        cw.join_cluster(address)
        cw.actor_home = cw.call_daemon("actor_home")
    executor.run_forever()
