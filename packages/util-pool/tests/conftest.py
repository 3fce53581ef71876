"""Fixtures: a real Quanta node per test (``quanta.init(num_cpus=2)``), and a check after
``quanta.shutdown()`` that it left nothing behind: no process of the session (the daemon,
its workers and zygotes), no ``/dev/shm/quanta-*`` object store and no session directory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import quanta


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred`` until true or ``timeout`` passes. Only for what no API can wait on
    (processes exiting, files being removed)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return bool(pred())
        time.sleep(interval)
    return True


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid``."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            for k in kids:
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


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
