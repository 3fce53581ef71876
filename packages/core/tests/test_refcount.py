"""Reference counting: borrowed and nested refs keep values alive; worker-owned objects."""

from __future__ import annotations

import gc
import os
import signal
import time

import numpy as np
import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(40)

N = 1024 * 1024  # float64 elements: 8 MB, stored in shared memory


@ray.remote
def passthrough(lst, delay=0.0):
    time.sleep(delay)
    return lst


@ray.remote
def total(arr):
    return float(arr.sum())


@pytest.mark.parametrize("size", ["small", "large"])
def test_nested_ref_returned_by_task_outlives_driver_ref(quanta_node, size):
    value = "tiny" if size == "small" else np.ones(N)
    ref = ray.put(value)
    out = passthrough.remote([ref])
    ray.wait([out])
    del ref
    gc.collect()
    lst = ray.get(out)
    assert isinstance(lst, list) and isinstance(lst[0], ray.ObjectRef)
    got = ray.get(lst[0])
    if size == "small":
        assert got == "tiny"
    else:
        assert float(got.sum()) == N


def test_nested_ref_dropped_while_task_runs(quanta_node):
    ref = ray.put(np.arange(N, dtype=np.float64))
    out = passthrough.remote([ref], 0.5)
    del ref
    gc.collect()
    (inner,) = ray.get(out)
    assert float(ray.get(inner)[-1]) == N - 1


def test_arg_ref_pinned_while_task_pending(quanta_node):
    ref = ray.put(np.ones(N))

    @ray.remote
    def late_sum(delay, arr):
        time.sleep(delay)
        return float(arr.sum())

    out = late_sum.remote(0.5, ref)
    del ref
    gc.collect()
    assert ray.get(out) == float(N)


def test_nested_refs_freed_when_all_dropped(quanta_node, helpers):
    base = helpers.store_stats()["used_bytes"]
    ref = ray.put(np.ones(N))
    out = passthrough.remote([ref])
    lst = ray.get(out)
    del ref
    assert float(ray.get(lst[0]).sum()) == N
    assert helpers.store_stats()["used_bytes"] >= base + 8 * N
    del lst, out
    gc.collect()
    assert helpers.wait_until(lambda: helpers.store_stats()["used_bytes"] <= base, 10), (
        helpers.store_stats()
    )


@pytest.mark.parametrize("size", ["small", "large"])
def test_worker_owned_object_gettable_by_driver(quanta_node, size):
    @ray.remote
    def make(size):
        value = "from worker" if size == "small" else np.full(N, 3.0)
        return ray.put(value)

    inner = ray.get(make.remote(size))
    assert isinstance(inner, ray.ObjectRef)
    got = ray.get(inner)
    if size == "small":
        assert got == "from worker"
    else:
        assert float(got[0]) == 3.0 and got.shape == (N,)
    # a worker-owned ref can be passed on to another task
    if size == "large":
        assert ray.get(total.remote(inner)) == 3.0 * N


def test_worker_owned_nested_in_list(quanta_node):
    @ray.remote
    def make_many(n):
        return [ray.put(i * i) for i in range(n)]

    refs = ray.get(make_many.remote(5))
    assert ray.get(refs) == [0, 1, 4, 9, 16]


def test_ref_survives_chain_of_borrowers(quanta_node):
    @ray.remote
    def hop(lst, n):
        if n == 0:
            return lst
        return ray.get(hop.remote(lst, n - 1))

    ref = ray.put("deep")
    out = hop.remote([ref], 3)
    del ref
    gc.collect()
    (inner,) = ray.get(out)
    assert ray.get(inner) == "deep"


def test_owner_died(quanta_node, helpers):
    @ray.remote(max_retries=0)
    def make():
        return os.getpid(), ray.put("owned by a worker that will die")

    pid, inner = ray.get(make.remote())
    os.kill(pid, signal.SIGKILL)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)
    with pytest.raises(qexc.OwnerDiedError):
        ray.get(inner, timeout=20)


# ---- refs pickled outside Quanta (out-of-band serialization) ------------------------------
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("dumps", ["pickle", "cloudpickle"])
def test_ref_pickled_out_of_band_outlives_its_refs(quanta_node, helpers, size, dumps):
    """As Ray: a ref pickled outside Quanta pins its object for the rest of the job, so the
    owner can unpickle and get it after every ref to it was dropped."""
    import pickle

    import cloudpickle

    value = "tiny" if size == "small" else np.full(N, 2.0)
    before = helpers.store_stats()["num_objects"]
    ref = ray.put(value)
    blob = (pickle if dumps == "pickle" else cloudpickle).dumps(ref)
    del ref
    gc.collect()
    time.sleep(0.2)  # any free would have reached the node by now
    if size == "large":
        assert helpers.store_stats()["num_objects"] == before + 1
    again = pickle.loads(blob)
    got = ray.get(again, timeout=10)
    assert got == "tiny" if size == "small" else float(got.sum()) == 2.0 * N


def test_ref_pickled_out_of_band_by_a_borrower(quanta_node):
    """A worker that pickles a borrowed ref keeps its borrow: the owner keeps the object."""
    import pickle

    @ray.remote
    def dump(lst):
        return pickle.dumps(lst[0])

    ref = ray.put("lent")
    blob = ray.get(dump.remote([ref]))
    del ref
    gc.collect()
    time.sleep(0.5)  # the worker's borrow, had it been given back, would be back by now
    assert ray.get(pickle.loads(blob), timeout=10) == "lent"


@pytest.mark.parametrize("size", ["small", "large"])
def test_freed_ref_unpickled_in_its_owner_raises_at_once(quanta_node, size):
    """A ref whose object its owner already freed (pickled without a pin: here by Quanta's own
    serializer, as an argument would be) raises at once on get instead of hanging."""
    import pickle

    from quanta._private import serialization

    ref = ray.put("tiny" if size == "small" else np.ones(N))
    payload = serialization.serialize([ref]).payload  # in band: no pin
    hexid = ref.hex()
    del ref
    gc.collect()
    time.sleep(0.2)
    (again,) = pickle.loads(payload)
    start = time.monotonic()
    with pytest.raises(qexc.ReferenceCountingAssertionError, match=f"{hexid}.*freed"):
        ray.get(again, timeout=10)
    assert time.monotonic() - start < 2
    with pytest.raises(qexc.ReferenceCountingAssertionError):
        ray.get([again], timeout=10)
