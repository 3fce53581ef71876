"""Recycling of shared-memory object files: a freed object's file is reused by the next large
put only if nobody ever mapped or received it, so a value anyone still holds never changes."""

import gc

import numpy as np
import pytest
import quanta as ray
from quanta._private.worker_state import current_core_worker

MB = 1 << 20


def _pool():
    return list(current_core_worker()._pool)


def test_unexposed_file_is_recycled_and_new_value_is_intact(quanta_node):
    ref = ray.put(np.full(4 * MB, 1, dtype=np.uint8))
    del ref
    gc.collect()
    _wait_for(lambda: len(_pool()) == 1)
    second = np.full(4 * MB, 2, dtype=np.uint8)
    ref2 = ray.put(second)
    assert _pool() == []  # the recycled file was taken
    got = ray.get(ref2)
    assert (got == 2).all() and got.nbytes == 4 * MB


def test_a_value_held_by_get_is_never_overwritten(quanta_node):
    ref = ray.put(np.full(4 * MB, 7, dtype=np.uint8))
    held = ray.get(ref)  # a zero-copy view of the object's file
    del ref
    gc.collect()
    for _ in range(3):
        ray.get(ray.put(np.full(4 * MB, 9, dtype=np.uint8)))
    # Had the file been recycled, the puts above would have overwritten these pages.
    assert (held == 7).all()


def test_a_value_passed_to_a_task_is_never_recycled(quanta_node):
    @ray.remote
    def keep_first(a):
        return int(a[0])

    arr = ray.put(np.full(4 * MB, 5, dtype=np.uint8))
    assert ray.get(keep_first.remote(arr)) == 5
    del arr
    gc.collect()
    ray.get(ray.put(np.zeros(8, dtype=np.uint8)))  # give the reactor a turn
    assert _pool() == []


@pytest.mark.parametrize("n", [3])
def test_pool_is_bounded(quanta_node, n):
    refs = [ray.put(np.full(2 * MB, i, dtype=np.uint8)) for i in range(n)]
    del refs
    gc.collect()
    _wait_for(lambda: len(_pool()) >= 2)
    assert len(_pool()) == 2


def _wait_for(pred, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
