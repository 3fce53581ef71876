"""Fixtures that start a real Quanta node (daemon + workers) per test and check that
``shutdown()`` leaves nothing behind: no daemon, no worker processes, no /dev/shm store,
no session directory."""

from __future__ import annotations

import os
from typing import Any

import pytest
import quanta
from quanta._private import api
from quanta._private.testing import descendants, pid_alive, wait_until

# --------------------------------------------------------------------------------------
# helpers shared by the tests (tests get them from the ``helpers`` fixture)
# --------------------------------------------------------------------------------------






def store_stats() -> dict[str, int]:
    from quanta._private.worker_state import current_core_worker

    return current_core_worker().call_daemon("store_stats")


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
class _Started:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.proc = session.proc
        self.daemon_pid = session.proc.pid
        self.store_dir = session.node["ObjectStoreDir"]
        self.session_dir = session.node["SessionDir"]
        self.pids: set[int] = set()


def _check_clean(started: list[_Started]) -> None:
    problems = []
    for s in started:
        try:
            s.proc.wait(10)
        except Exception:  # noqa: BLE001
            problems.append(f"daemon pid {s.daemon_pid} still running after shutdown")
        if not wait_until(lambda s=s: not any(pid_alive(p) for p in s.pids), 5):
            problems.append(
                f"processes still alive after shutdown: {sorted(p for p in s.pids if pid_alive(p))}"
            )
        if os.path.exists(s.store_dir):
            problems.append(f"object store dir {s.store_dir} remains after shutdown")
        if os.path.exists(s.session_dir):
            problems.append(f"session dir {s.session_dir} remains after shutdown")
    assert not problems, "; ".join(problems)


@pytest.fixture
def start_quanta():
    """Factory: ``start_quanta(**init_kwargs)`` runs ``quanta.init`` (num_cpus=2 unless
    given) and returns its node info. Teardown shuts down and checks nothing remains."""
    if quanta.is_initialized():  # a previous test left a session behind
        quanta.shutdown()
    started: list[_Started] = []

    def start(**kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("num_cpus", 2)
        info = quanta.init(**kwargs)
        if api._session is not None and (not started or started[-1].session is not api._session):
            started.append(_Started(api._session))
        return info

    yield start

    if api._session is not None:
        for s in started:
            if s.session is api._session:
                s.pids |= descendants(s.daemon_pid)
        quanta.shutdown()
    _check_clean(started)


@pytest.fixture
def quanta_node(request, start_quanta):
    """A node with ``num_cpus=2``; parametrize indirectly with a dict of init kwargs to
    change it, e.g. ``@pytest.mark.parametrize("quanta_node", [{"resources": {"a": 1}}],
    indirect=True)``."""
    kwargs = dict(getattr(request, "param", None) or {})
    return start_quanta(**kwargs)


@pytest.fixture
def helpers():
    """The helper functions above, for tests: ``helpers.wait_until(...)`` etc."""
    import types

    return types.SimpleNamespace(
        wait_until=wait_until, pid_alive=pid_alive, descendants=descendants, store_stats=store_stats
    )


@pytest.fixture
def make_cluster():
    """``make_cluster(head_args, *member_args)`` starts a ``Cluster`` (a head and members on
    this machine) and returns it with its members; at the end of the test every cluster made
    is shut down and checked to leave no process or session directory behind."""
    from quanta._private import cluster
    from quanta.cluster_utils import Cluster

    made: list[Cluster] = []
    sessions: list[str] = []

    def make(head_args: dict[str, Any], *member_args: dict[str, Any]):
        c = Cluster(initialize_head=True, head_node_args=head_args)
        made.append(c)
        sessions.append(c.head_node.session_dir)
        members = [c.add_node(**args) for args in member_args]
        sessions.extend(n.session_dir for n in members)
        return c, members

    try:
        yield make
    finally:
        for c in made:
            c.shutdown()
    assert not [s for s in sessions if cluster.session_pids(s)], "node processes left running"
    assert not [s for s in sessions if os.path.exists(s)]


@pytest.fixture
def nodes(make_cluster):
    """A head with 1 CPU (the driver's node), node ``a`` with 1 CPU and a ``special``
    resource, node ``b`` with 1 CPU; a driver connected to the head."""
    c, (a, b) = make_cluster({"num_cpus": 1}, {"num_cpus": 1, "resources": {"special": 1}},
                             {"num_cpus": 1})
    c.connect(namespace="x")
    return c, a, b
