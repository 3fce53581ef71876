"""Objects: put/get, zero-copy numpy from shared memory, store accounting, freeing, spilling
and wait()."""

from __future__ import annotations

import time

import numpy as np
import pytest
import quanta as ray

MB = 1024 * 1024
TEN_MB = 10 * MB


def big_array(nbytes=TEN_MB, fill=None):
    n = nbytes // 8
    if fill is None:
        return np.arange(n, dtype=np.float64)
    return np.full(n, fill, dtype=np.float64)


@ray.remote
def first(arr):
    return float(arr[0])


@ray.remote
def total(arr):
    return float(arr.sum())


@ray.remote
def sleep_return(seconds, value):
    time.sleep(seconds)
    return value


# --------------------------------------------------------------------------------------
# put / get
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        2**70,
        3.5,
        "text",
        b"bytes",
        None,
        True,
        [1, [2, 3]],
        {"a": (1, 2)},
        {1, 2},
        "x" * 200_000,
        list(range(50_000)),
    ],
    ids=lambda v: type(v).__name__ + str(len(repr(v))),
)
def test_put_get_roundtrip(quanta_node, value):
    ref = ray.put(value)
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == value
    assert ray.get(ref) == value  # twice


def test_get_list_and_timeout_on_ready(quanta_node):
    refs = [ray.put(i) for i in range(5)]
    assert ray.get(refs) == list(range(5))
    assert ray.get(refs, timeout=5) == list(range(5))
    assert ray.get(tuple(refs)) == list(range(5))
    assert ray.get([]) == []


def test_put_of_ref_is_refused(quanta_node):
    # Ray: "Calling 'put' on an ObjectRef is not allowed"
    with pytest.raises(TypeError):
        ray.put(ray.put(1))


def test_large_numpy_zero_copy_and_read_only(quanta_node):
    arr = big_array()
    ref = ray.put(arr)
    a = ray.get(ref)
    b = ray.get(ref)
    assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == arr.shape
    np.testing.assert_array_equal(a, arr)
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1.0
    assert np.shares_memory(a, b), "two gets of one ref should map the same shared memory"
    assert not np.shares_memory(a, arr)  # put copies into the store


def test_large_numpy_returned_from_task(quanta_node):
    @ray.remote
    def make(n):
        return np.arange(n, dtype=np.float64)

    ref = make.remote(TEN_MB // 8)
    a = ray.get(ref)
    np.testing.assert_array_equal(a, big_array())
    assert not a.flags.writeable
    assert np.shares_memory(a, ray.get(ref))


def test_large_arg_by_value(quanta_node):
    arr = big_array()
    assert ray.get(total.remote(arr)) == float(arr.sum())
    assert ray.get(first.remote(arr[5:])) == 5.0


@pytest.mark.timeout(60)
def test_large_put_shared_by_1000_tasks_is_stored_once(quanta_node, helpers):
    base = helpers.store_stats()
    arr = big_array()
    ref = ray.put(arr)
    after_put = helpers.store_stats()
    assert after_put["num_objects"] == base["num_objects"] + 1
    grown = after_put["used_bytes"] - base["used_bytes"]
    assert TEN_MB <= grown < 2 * TEN_MB, grown
    results = ray.get([first.remote(ref) for _ in range(1000)])
    assert results == [0.0] * 1000
    assert ray.get(total.remote(ref)) == float(arr.sum())
    after_tasks = helpers.store_stats()
    assert after_tasks["num_objects"] == after_put["num_objects"], after_tasks
    assert after_tasks["used_bytes"] - base["used_bytes"] < 2 * TEN_MB, after_tasks


def test_free_on_ref_deletion(quanta_node, helpers):
    base = helpers.store_stats()
    refs = [ray.put(big_array(fill=i)) for i in range(3)]
    stats = helpers.store_stats()
    assert stats["num_objects"] == base["num_objects"] + 3
    assert stats["used_bytes"] >= base["used_bytes"] + 3 * TEN_MB
    del refs
    assert helpers.wait_until(
        lambda: helpers.store_stats()["used_bytes"] <= base["used_bytes"], 10
    ), helpers.store_stats()
    assert helpers.store_stats()["num_objects"] == base["num_objects"]


def test_free_task_return_on_ref_deletion(quanta_node, helpers):
    @ray.remote
    def make():
        return np.arange(TEN_MB // 8, dtype=np.float64)

    base = helpers.store_stats()
    ref = make.remote()
    assert ray.get(total.remote(ref)) == float(big_array().sum())
    assert helpers.store_stats()["used_bytes"] >= base["used_bytes"] + TEN_MB
    del ref
    assert helpers.wait_until(
        lambda: helpers.store_stats()["used_bytes"] <= base["used_bytes"], 10
    ), helpers.store_stats()


def test_value_alive_while_get_result_alive(quanta_node, helpers):
    """Deleting the ref while a zero-copy view of it is alive must not break the view."""
    ref = ray.put(big_array())
    view = ray.get(ref)
    del ref
    time.sleep(0.2)  # give an (incorrect) eager free the chance to happen
    assert float(view[-1]) == float(TEN_MB // 8 - 1)
    assert float(view.sum()) == float(big_array().sum())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quanta_node", [{"object_store_memory": 100 * MB}], indirect=True)
def test_spilling(quanta_node, helpers):
    refs = [ray.put(big_array(40 * MB, fill=i)) for i in range(5)]
    for i, ref in enumerate(refs):
        a = ray.get(ref)
        assert a.shape == (40 * MB // 8,)
        assert float(a[0]) == i and float(a[-1]) == i and float(a.sum()) == i * a.size
        del a
    # tasks can read spilled objects too
    assert ray.get([first.remote(r) for r in refs]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    stats = helpers.store_stats()
    assert stats["num_spills_total"] > 0, stats
    assert stats["used_bytes"] <= 100 * MB, stats


# --------------------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_wait_num_returns(quanta_node):
    fast = sleep_return.remote(0, "fast")
    slow = sleep_return.remote(5, "slow")
    ready, not_ready = ray.wait([slow, fast], num_returns=1)
    assert ready == [fast] and not_ready == [slow]
    ray.cancel(slow, force=True)


@pytest.mark.timeout(30)
def test_wait_timeout_returns_partial(quanta_node):
    fast = [sleep_return.remote(0, i) for i in range(2)]
    ray.get(fast)
    slow = sleep_return.remote(10, "slow")
    refs = [fast[0], slow, fast[1]]
    t0 = time.monotonic()
    ready, not_ready = ray.wait(refs, num_returns=3, timeout=0.5)
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 3, elapsed
    assert ready == [fast[0], fast[1]]
    assert not_ready == [slow]
    t0 = time.monotonic()
    ready, not_ready = ray.wait([slow], timeout=0)
    assert time.monotonic() - t0 < 1
    assert ready == [] and not_ready == [slow]
    ray.cancel(slow, force=True)


def test_wait_preserves_order(quanta_node):
    refs = [ray.put(i) for i in range(10)]
    ready, not_ready = ray.wait(refs, num_returns=10)
    assert ready == refs and not_ready == []
    ready, not_ready = ray.wait(refs, num_returns=4)
    assert len(ready) == 4 and len(not_ready) == 6
    # Ray: "if A precedes B in the input list and both are in the ready list, A precedes B
    # in the ready list; the same holds for the remaining list"
    assert [refs.index(r) for r in ready] == sorted(refs.index(r) for r in ready)
    assert [refs.index(r) for r in not_ready] == sorted(refs.index(r) for r in not_ready)
    assert set(ready) | set(not_ready) == set(refs)
    ready, not_ready = ray.wait(refs, num_returns=10, fetch_local=False)
    assert ready == refs


def test_wait_argument_errors(quanta_node):
    a = ray.put(1)
    with pytest.raises(ValueError):
        ray.wait([a, a])
    with pytest.raises(ValueError):
        ray.wait([a], num_returns=2)
    with pytest.raises(TypeError):
        ray.wait(a)
    with pytest.raises(TypeError):
        ray.wait([a, 1])
