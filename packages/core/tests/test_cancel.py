"""cancel(): running, force, queued, finished, recursive and non-recursive."""

from __future__ import annotations

import os
import time

import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(40)


@ray.remote
def sleeper(started_path=None):
    if started_path:
        open(started_path, "w").close()
    time.sleep(10e6)


@ray.remote
def quick(x):
    return x


def _started(helpers, path):
    assert helpers.wait_until(lambda: os.path.exists(path), 20), "task never started"


def _assert_cancelled_quickly(ref, limit=5.0):
    t0 = time.monotonic()
    with pytest.raises(qexc.TaskCancelledError):
        ray.get(ref, timeout=limit + 10)
    assert time.monotonic() - t0 < limit


def test_cancel_running_task(quanta_node, tmp_path, helpers):
    started = str(tmp_path / "started")
    ref = sleeper.remote(started)
    _started(helpers, started)
    ray.cancel(ref)
    _assert_cancelled_quickly(ref)
    # the node is usable afterwards, with both CPUs
    assert ray.get([quick.remote(i) for i in range(4)]) == [0, 1, 2, 3]
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 10)


def test_cancel_immediately_after_submit(quanta_node):
    ref = sleeper.remote()
    ray.cancel(ref)
    _assert_cancelled_quickly(ref)


def test_force_cancel_running_task(quanta_node, tmp_path, helpers):
    started = str(tmp_path / "started")
    ref = sleeper.options(max_retries=3).remote(started)
    _started(helpers, started)
    ray.cancel(ref, force=True)
    _assert_cancelled_quickly(ref)
    # a force-cancelled task is not retried as a crashed one
    os.remove(started)
    time.sleep(0.5)
    assert not os.path.exists(started)
    assert ray.get([quick.remote(i) for i in range(4)]) == [0, 1, 2, 3]


def test_cancel_queued_task(quanta_node, tmp_path, helpers):
    paths = [str(tmp_path / f"blocker{i}") for i in range(2)]
    blockers = [sleeper.remote(p) for p in paths]
    for p in paths:
        _started(helpers, p)
    queued_marker = str(tmp_path / "queued-ran")
    queued = sleeper.remote(queued_marker)  # both CPUs are busy: this one waits
    ray.cancel(queued)
    _assert_cancelled_quickly(queued)
    for b in blockers:
        ray.cancel(b)
    for b in blockers:
        _assert_cancelled_quickly(b)
    assert not os.path.exists(queued_marker), "the cancelled queued task ran anyway"
    ready, not_ready = ray.wait([queued] + blockers, num_returns=3, timeout=5)
    assert len(ready) == 3 and not not_ready


def test_cancel_finished_task_is_noop(quanta_node):
    ref = quick.remote(5)
    assert ray.get(ref) == 5
    ray.cancel(ref)
    ray.cancel(ref, force=True)
    assert ray.get(ref) == 5


def test_cancel_argument_type(quanta_node):
    with pytest.raises(TypeError):
        ray.cancel("not a ref")


def _write_atomically(path, text):
    """Readers that see the file see its whole text."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


@ray.remote
def child_task(started, marker):
    with open(started + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(started + ".tmp", started)
    try:
        time.sleep(3)
    except BaseException:
        _write_atomically(marker, "cancelled")
        raise
    _write_atomically(marker, "finished")
    return "child done"


@ray.remote
def parent_task(started, marker):
    return ray.get(child_task.remote(started, marker))


def test_recursive_cancel_cancels_child(quanta_node, tmp_path, helpers):
    started, marker = str(tmp_path / "child-started"), str(tmp_path / "child-marker")
    parent = parent_task.remote(started, marker)
    _started(helpers, started)
    ray.cancel(parent)  # recursive=True is the default
    _assert_cancelled_quickly(parent)
    assert helpers.wait_until(lambda: os.path.exists(marker), 10)
    with open(marker) as f:
        assert f.read() == "cancelled"


def test_force_recursive_cancel_cancels_child(quanta_node, tmp_path, helpers):
    started, marker = str(tmp_path / "child-started"), str(tmp_path / "child-marker")
    parent = parent_task.remote(started, marker)
    _started(helpers, started)
    with open(started) as f:
        child_pid = int(f.read())
    ray.cancel(parent, force=True, recursive=True)
    _assert_cancelled_quickly(parent)
    # force-cancelling the child kills its worker process
    assert helpers.wait_until(lambda: not helpers.pid_alive(child_pid), 10)
    assert not os.path.exists(marker)


def test_non_recursive_cancel_leaves_child(quanta_node, tmp_path, helpers):
    started, marker = str(tmp_path / "child-started"), str(tmp_path / "child-marker")
    parent = parent_task.remote(started, marker)
    _started(helpers, started)
    ray.cancel(parent, recursive=False)
    _assert_cancelled_quickly(parent)
    assert helpers.wait_until(lambda: os.path.exists(marker), 15)
    time.sleep(0.1)  # the marker is written then closed; let the write land
    with open(marker) as f:
        assert f.read() == "finished"
