"""Fixtures: a real Quanta node per test (``quanta.init(num_cpus=2)``), and a check after
``quanta.shutdown()`` that it left nothing behind: no process of the session (the daemon,
its workers and zygotes), no ``/dev/shm/quanta-*`` object store and no session directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import quanta
from quanta._private.testing import descendants, pid_alive, wait_until


def session_processes(session_dir: str) -> set[int]:
    """Live processes whose command line names the session (daemon, workers, zygotes), even
    if they were re-parented away from the daemon."""
    found = set()
    needle = session_dir.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if needle in f.read() and pid_alive(int(name)):
                    found.add(int(name))
        except OSError:
            continue
    return found


@pytest.fixture
def quanta_node() -> Iterator[dict[str, Any]]:
    """``quanta.init(num_cpus=2)``; after the test, ``quanta.shutdown()`` and the leak check."""
    from quanta._private import api

    if quanta.is_initialized():
        quanta.shutdown()
    info = quanta.init(num_cpus=2)
    session = api._session
    daemon = session.proc
    store_dir = session.node["ObjectStoreDir"]
    session_dir = session.node["SessionDir"]
    assert os.path.basename(store_dir).startswith("quanta-")
    try:
        yield info
    finally:
        pids = descendants(daemon.pid) | {daemon.pid}
        if quanta.is_initialized():
            quanta.shutdown()
        problems = []
        try:
            daemon.wait(10)
        except Exception:  # noqa: BLE001
            problems.append(f"daemon {daemon.pid} still running after shutdown()")
        if not wait_until(lambda: not any(pid_alive(p) for p in pids), 10):
            problems.append(f"processes left: {sorted(p for p in pids if pid_alive(p))}")
        if not wait_until(lambda: not session_processes(session_dir), 10):
            problems.append(f"session processes left: {sorted(session_processes(session_dir))}")
        if not wait_until(lambda: not os.path.exists(store_dir), 5):
            problems.append(f"object store {store_dir} left in /dev/shm")
        if not wait_until(lambda: not os.path.exists(session_dir), 5):
            problems.append(f"session directory {session_dir} left")
        assert not problems, "; ".join(problems)


@pytest.fixture
def helpers() -> Any:
    import types

    return types.SimpleNamespace(wait_until=wait_until, pid_alive=pid_alive)
