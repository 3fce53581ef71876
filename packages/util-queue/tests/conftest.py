"""A real Quanta node per test (``quanta.init(num_cpus=2)``), shut down afterwards, with a check
that the shutdown left nothing behind: no daemon, no worker (the queue actors included), no
/dev/shm/quanta-* store and no session directory of that node.

Only this test process's own nodes are checked, so that other Quanta sessions running on the
machine at the same time cannot make these tests fail.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from typing import Any

import pytest
import quanta
from quanta._private import api
from quanta._private.testing import descendants, pid_alive, wait_until

_our_stores: set[str] = set()  # the /dev/shm stores of the nodes these tests started








def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # fields[0] is the state (field 3 of stat); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def quanta_node() -> Iterator[dict[str, Any]]:
    """``quanta.init(num_cpus=2)``; afterwards ``quanta.shutdown()`` and a check that the
    node's processes, /dev/shm store and session directory are all gone."""
    if quanta.is_initialized():
        quanta.shutdown()
    info = quanta.init(num_cpus=2)
    session = api._session
    assert session is not None and session.proc is not None
    daemon_pid = session.proc.pid
    store_dir = session.node["ObjectStoreDir"]
    session_dir = session.node["SessionDir"]
    assert store_dir.startswith("/dev/shm/quanta-"), store_dir
    _our_stores.add(store_dir)
    yield info
    pids = descendants(daemon_pid) | {daemon_pid}
    quanta.shutdown()
    problems = []
    try:
        session.proc.wait(10)
    except Exception:  # noqa: BLE001
        problems.append(f"node daemon {daemon_pid} still runs after shutdown()")
    if not wait_until(lambda: not any(pid_alive(p) for p in pids), 5):
        problems.append("processes still alive after shutdown(): "
                        f"{sorted(p for p in pids if pid_alive(p))}")
    for path in (store_dir, session_dir):
        if os.path.exists(path):
            problems.append(f"{path} remains after shutdown()")
    assert not problems, "; ".join(problems)


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_at_exit() -> Iterator[None]:
    """At the end of the run: no process started under pytest and none of our nodes'
    /dev/shm/quanta-* stores remains."""
    yield
    if quanta.is_initialized():
        quanta.shutdown()
    me = os.getpid()
    assert wait_until(lambda: not descendants(me), 5), (
        f"processes left under pytest: {sorted(descendants(me))}")
    left = sorted(set(glob.glob("/dev/shm/quanta-*")) & _our_stores)
    assert not left, f"object stores left behind: {left}"


@pytest.fixture
def helpers() -> Any:
    import types

    return types.SimpleNamespace(wait_until=wait_until, pid_alive=pid_alive,
                                 descendants=descendants, cpu_seconds=cpu_seconds)
