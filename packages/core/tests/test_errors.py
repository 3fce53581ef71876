"""Errors: task exceptions, propagation, retries, worker crashes, timeouts, bad arguments,
infeasible tasks."""

from __future__ import annotations

import os
import threading
import time

import pytest
import quanta as ray
from quanta import exceptions as qexc


def attempts(path) -> int:
    try:
        with open(path) as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


@ray.remote
def fails_with_value_error(msg):
    raise ValueError(msg)


@ray.remote
def add_one(x):
    return x + 1


# A task that records each attempt in a file (one byte per attempt) and then behaves as
# ``plan[attempt_index]`` says: "ok", "value", "type", "crash" (os._exit(1)).
@ray.remote
def counted(path, plan):
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        n = len(f.read())
    action = plan[min(n, len(plan)) - 1]
    if action == "value":
        raise ValueError(f"attempt {n}")
    if action == "type":
        raise TypeError(f"attempt {n}")
    if action == "crash":
        os._exit(1)
    return n


# --------------------------------------------------------------------------------------
# task exceptions
# --------------------------------------------------------------------------------------
def test_task_exception_is_both_ray_error_and_user_class(quanta_node):
    ref = fails_with_value_error.remote("boom 123")
    with pytest.raises(qexc.RayTaskError) as info:
        ray.get(ref)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, qexc.RayError)
    text = str(err)
    assert "boom 123" in text
    assert "fails_with_value_error" in text  # the remote traceback names the function
    assert "Traceback" in text
    with pytest.raises(ValueError, match="boom 123"):
        ray.get(ref)


def test_custom_exception_class_and_attributes(quanta_node):
    class MyError(Exception):
        def __init__(self, code):
            super().__init__(f"code {code}")
            self.code = code

    @ray.remote
    def raise_custom():
        raise MyError(7)

    with pytest.raises(MyError) as info:
        ray.get(raise_custom.remote())
    assert isinstance(info.value, qexc.RayTaskError)
    assert info.value.code == 7
    assert isinstance(info.value.cause, MyError)


def test_error_in_list_get(quanta_node):
    refs = [add_one.remote(1), fails_with_value_error.remote("in list"), add_one.remote(2)]
    with pytest.raises(ValueError, match="in list"):
        ray.get(refs)


def test_errors_flow_through_dependent_tasks(quanta_node):
    bad = fails_with_value_error.remote("upstream")
    downstream = add_one.remote(add_one.remote(bad))
    with pytest.raises(qexc.RayTaskError) as info:
        ray.get(downstream)
    assert isinstance(info.value, ValueError)
    assert "upstream" in str(info.value)


def test_error_from_nested_task_propagates(quanta_node):
    @ray.remote
    def parent():
        return ray.get(fails_with_value_error.remote("from child"))

    with pytest.raises(ValueError, match="from child"):
        ray.get(parent.remote())


# --------------------------------------------------------------------------------------
# retries
# --------------------------------------------------------------------------------------
def test_application_errors_not_retried_by_default(quanta_node, tmp_path):
    path = tmp_path / "count"
    with pytest.raises(ValueError):
        ray.get(counted.remote(str(path), ["value", "ok"]))
    assert attempts(path) == 1


def test_retry_exceptions_true_retries_until_success(quanta_node, tmp_path):
    path = tmp_path / "count"
    ref = counted.options(retry_exceptions=True, max_retries=3).remote(
        str(path), ["value", "type", "ok"]
    )
    assert ray.get(ref) == 3
    assert attempts(path) == 3


def test_max_retries_bounds_exception_retries(quanta_node, tmp_path):
    path = tmp_path / "count"
    ref = counted.options(retry_exceptions=True, max_retries=2).remote(str(path), ["value"])
    with pytest.raises(ValueError, match="attempt 3"):
        ray.get(ref)
    assert attempts(path) == 3  # the first try and two retries


def test_max_retries_zero_no_retry(quanta_node, tmp_path):
    path = tmp_path / "count"
    ref = counted.options(retry_exceptions=True, max_retries=0).remote(str(path), ["value"])
    with pytest.raises(ValueError):
        ray.get(ref)
    assert attempts(path) == 1


def test_retry_exceptions_list_only_retries_listed(quanta_node, tmp_path):
    listed = tmp_path / "listed"
    ref = counted.options(retry_exceptions=[ValueError], max_retries=3).remote(
        str(listed), ["value", "value", "ok"]
    )
    assert ray.get(ref) == 3
    assert attempts(listed) == 3

    unlisted = tmp_path / "unlisted"
    ref = counted.options(retry_exceptions=[ValueError], max_retries=3).remote(
        str(unlisted), ["type", "ok"]
    )
    with pytest.raises(TypeError, match="attempt 1"):
        ray.get(ref)
    assert attempts(unlisted) == 1

    mixed = tmp_path / "mixed"
    ref = counted.options(retry_exceptions=[ValueError], max_retries=3).remote(
        str(mixed), ["value", "type", "ok"]
    )
    with pytest.raises(TypeError, match="attempt 2"):
        ray.get(ref)
    assert attempts(mixed) == 2


@pytest.mark.timeout(60)
def test_worker_crash_is_retried(quanta_node, tmp_path):
    path = tmp_path / "count"
    ref = counted.options(max_retries=3).remote(str(path), ["crash", "crash", "ok"])
    assert ray.get(ref, timeout=40) == 3
    assert attempts(path) == 3


@pytest.mark.timeout(60)
def test_worker_crash_retries_exhausted(quanta_node, tmp_path):
    path = tmp_path / "count"
    ref = counted.options(max_retries=2).remote(str(path), ["crash"])
    with pytest.raises(qexc.WorkerCrashedError):
        ray.get(ref, timeout=40)
    assert attempts(path) == 3
    # the node keeps working afterwards
    assert ray.get(add_one.remote(1)) == 2


@pytest.mark.timeout(60)
def test_worker_crash_default_max_retries_is_3(quanta_node, tmp_path):
    path = tmp_path / "count"
    with pytest.raises(qexc.WorkerCrashedError):
        ray.get(counted.remote(str(path), ["crash"]), timeout=40)
    assert attempts(path) == 4


@pytest.mark.timeout(60)
def test_worker_crash_no_retry(quanta_node, tmp_path):
    path = tmp_path / "count"
    with pytest.raises(qexc.WorkerCrashedError):
        ray.get(counted.options(max_retries=0).remote(str(path), ["crash", "ok"]), timeout=40)
    assert attempts(path) == 1


# --------------------------------------------------------------------------------------
# get/put misuse and timeouts
# --------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_get_timeout(quanta_node):
    @ray.remote
    def sleepy():
        time.sleep(20)

    ref = sleepy.remote()
    t0 = time.monotonic()
    with pytest.raises(qexc.GetTimeoutError):
        ray.get(ref, timeout=0.1)
    assert time.monotonic() - t0 < 2
    with pytest.raises(TimeoutError):  # Ray's GetTimeoutError is also a TimeoutError
        ray.get([ref], timeout=0.1)
    ray.cancel(ref, force=True)


def test_get_non_ref_raises_type_error(quanta_node):
    for bad in (1, "ref", None, [1, 2], {"a": 1}):
        with pytest.raises(TypeError):
            ray.get(bad)
    with pytest.raises(TypeError):
        ray.get([ray.put(1), 2])


def test_unserializable_arg_raises_type_error_at_call_site(quanta_node):
    lock = threading.Lock()
    with pytest.raises(TypeError):
        add_one.remote(lock)
    with pytest.raises(TypeError):
        add_one.remote(x=[lock])
    with pytest.raises(TypeError):
        ray.put(lock)
    assert ray.get(add_one.remote(1)) == 2  # nothing broken


def test_unserializable_return_value_raises_at_get(quanta_node):
    @ray.remote
    def returns_lock():
        return threading.Lock()

    with pytest.raises(qexc.RayError):
        ray.get(returns_lock.remote(), timeout=20)


# --------------------------------------------------------------------------------------
# infeasible
# --------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "opts",
    [{"num_cpus": 8}, {"resources": {"foo": 1}}, {"num_gpus": 1}],
    ids=["cpus", "custom", "gpus"],
)
def test_infeasible_task_raises_unschedulable(quanta_node, opts):
    t0 = time.monotonic()
    ref = add_one.options(**opts).remote(1)
    with pytest.raises(qexc.TaskUnschedulableError):
        ray.get(ref, timeout=20)
    assert time.monotonic() - t0 < 10
    # a feasible task still runs
    assert ray.get(add_one.remote(1)) == 2
