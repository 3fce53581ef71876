"""Tasks: submission, arguments, dependencies, nesting, resources, returns, workers, context."""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest
import quanta as ray


# --------------------------------------------------------------------------------------
# basics, arguments
# --------------------------------------------------------------------------------------
@ray.remote
def add(a, b=0, *, c=0):
    return a + b + c


@ray.remote
def identity(x):
    return x


def test_basic_task(quanta_node):
    ref = add.remote(1, 2)
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == 3
    assert ray.get([add.remote(i, i) for i in range(10)]) == [2 * i for i in range(10)]


def test_args_and_kwargs(quanta_node):
    assert ray.get(add.remote(1)) == 1
    assert ray.get(add.remote(1, b=2)) == 3
    assert ray.get(add.remote(1, 2, c=4)) == 7
    assert ray.get(add.remote(a=5, b=6, c=7)) == 18
    assert ray.get(identity.remote({"k": [1, 2, (3, 4)]})) == {"k": [1, 2, (3, 4)]}
    assert ray.get(identity.remote(None)) is None


def test_remote_function_cannot_be_called_directly(quanta_node):
    with pytest.raises(TypeError, match="remote"):
        add(1, 2)


def test_top_level_ref_args_are_resolved(quanta_node):
    @ray.remote
    def kind(x, y=None):
        return type(x).__name__, type(y).__name__, x + (y or 0)

    a = ray.put(10)
    b = add.remote(1, 2)
    assert ray.get(kind.remote(a, y=b)) == ("int", "int", 13)


def test_nested_refs_stay_refs(quanta_node):
    @ray.remote
    def inspect_nested(lst, dct):
        assert all(isinstance(r, ray.ObjectRef) for r in lst)
        assert isinstance(dct["r"], ray.ObjectRef)
        return [ray.get(r) for r in lst], ray.get(dct["r"])

    refs = [ray.put(i) for i in range(3)]
    assert ray.get(inspect_nested.remote(refs, {"r": add.remote(5, 5)})) == ([0, 1, 2], 10)


def test_chain_of_dependent_tasks(quanta_node):
    ref = ray.put(0)
    for _ in range(50):
        ref = add.remote(ref, 1)
    assert ray.get(ref) == 50


def test_diamond_dependencies(quanta_node):
    root = add.remote(1, 1)
    left = add.remote(root, 10)
    right = add.remote(root, 100)
    assert ray.get(add.remote(left, right)) == 2 + 10 + 2 + 100


@ray.remote
def submit_child(x):
    return add.remote(x, 1)


@ray.remote
def nested_get(x, depth):
    if depth == 0:
        return x
    return ray.get(nested_get.remote(x + 1, depth - 1))


def test_task_submits_task_and_returns_its_ref(quanta_node):
    inner = ray.get(submit_child.remote(41))
    assert isinstance(inner, ray.ObjectRef)
    assert ray.get(inner) == 42


def test_nested_get_inside_tasks(quanta_node):
    # depth 4 on 2 CPUs: the blocked parents must release their CPU or this deadlocks
    assert ray.get(nested_get.remote(0, 4), timeout=30) == 4


@ray.remote
def quick_sort_distributed(collection, threshold):
    if len(collection) <= threshold:
        return sorted(collection)
    pivot = collection.pop()
    lesser = [x for x in collection if x <= pivot]
    greater = [x for x in collection if x > pivot]
    lesser = quick_sort_distributed.remote(lesser, threshold)
    greater = quick_sort_distributed.remote(greater, threshold)
    return ray.get(lesser) + [pivot] + ray.get(greater)


@pytest.mark.timeout(60)
def test_recursive_quicksort_no_deadlock(quanta_node):
    rng = random.Random(0)
    data = [rng.randint(0, 1_000_000) for _ in range(2000)]
    result = ray.get(quick_sort_distributed.remote(list(data), 200), timeout=50)
    assert result == sorted(data)


def _plain_helper(x):
    return x * 3


@ray.remote
def uses_module_helper(x):
    return _plain_helper(x)


def test_task_calls_plain_function_of_its_module(quanta_node):
    # _plain_helper is pickled by reference (test_tasks._plain_helper); Ray gives workers the
    # driver's sys.path so they can import the driver's modules, as pytest's test modules.
    assert ray.get(uses_module_helper.remote(5)) == 15


# --------------------------------------------------------------------------------------
# resources and concurrency
# --------------------------------------------------------------------------------------
@ray.remote
def interval(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def _overlaps(intervals):
    intervals = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(intervals, intervals[1:]))


@pytest.mark.timeout(30)
def test_cpus_bound_concurrency(quanta_node):
    ray.get(interval.remote(0))  # worker start-up is not what this measures
    t0 = time.monotonic()
    ray.get([interval.remote(1.0) for _ in range(4)])
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed <= 3.5, elapsed


@pytest.mark.timeout(30)
def test_two_cpu_tasks_run_one_at_a_time(quanta_node):
    spans = ray.get([interval.options(num_cpus=2).remote(0.4) for _ in range(3)])
    assert not _overlaps(spans), spans


@pytest.mark.timeout(30)
def test_one_cpu_tasks_run_in_parallel(quanta_node):
    spans = ray.get([interval.remote(1.0) for _ in range(2)])
    assert _overlaps(spans), spans


@pytest.mark.timeout(30)
@pytest.mark.parametrize("quanta_node", [{"resources": {"custom": 1}}], indirect=True)
def test_custom_resources(quanta_node):
    assert ray.cluster_resources()["custom"] == 1.0
    assert ray.nodes()[0]["Resources"]["custom"] == 1.0
    # one unit of "custom": tasks that need all of it cannot overlap
    spans = ray.get([interval.options(resources={"custom": 1}).remote(0.4) for _ in range(3)])
    assert not _overlaps(spans), spans
    # half a unit each: two fit at once
    spans = ray.get([interval.options(resources={"custom": 0.5}).remote(1.0) for _ in range(2)])
    assert _overlaps(spans), spans


@pytest.mark.parametrize("quanta_node", [{"num_gpus": 2}], indirect=True)
def test_gpu_ids(quanta_node):
    @ray.remote(num_gpus=1)
    def gpu_task():
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    @ray.remote
    def cpu_task():
        return ray.get_gpu_ids()

    assert ray.cluster_resources()["GPU"] == 2.0
    assert ray.get_gpu_ids() == []  # the driver has none assigned
    ids, visible = ray.get(gpu_task.remote())
    assert len(ids) == 1 and ids[0] in (0, 1)
    assert visible == str(ids[0])
    assert ray.get(cpu_task.remote()) == []
    both = ray.get(gpu_task.options(num_gpus=2).remote())[0]
    assert sorted(both) == [0, 1]


# --------------------------------------------------------------------------------------
# returns
# --------------------------------------------------------------------------------------
def test_num_returns_3(quanta_node):
    @ray.remote(num_returns=3)
    def three():
        return 1, "two", [3]

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [1, "two", [3]]
    assert ray.get(refs[1]) == "two"


def test_options_num_returns_2(quanta_node):
    @ray.remote
    def pair(a):
        return a, a * 2

    one = pair.remote(3)
    assert ray.get(one) == (3, 6)
    a, b = pair.options(num_returns=2).remote(4)
    assert ray.get(a) == 4 and ray.get(b) == 8
    # options() does not change the function itself
    assert ray.get(pair.remote(5)) == (5, 10)


def test_num_returns_0(quanta_node, tmp_path, helpers):
    marker = tmp_path / "ran"

    @ray.remote(num_returns=0)
    def side_effect(path):
        with open(path, "w") as f:
            f.write("ok")

    assert side_effect.remote(str(marker)) is None
    # nothing to get(): the effect is the only sign the task ran
    assert helpers.wait_until(lambda: marker.exists() and marker.read_text() == "ok", 10)


# --------------------------------------------------------------------------------------
# workers, context, cluster info
# --------------------------------------------------------------------------------------
@ray.remote
def getpid():
    return os.getpid()


def test_workers_are_reused(quanta_node):
    pids = [ray.get(getpid.remote()) for _ in range(20)]
    assert os.getpid() not in pids
    pid, count = Counter(pids).most_common(1)[0]
    assert count >= 15, pids
    # a concurrent batch needs only a few workers on a 2-CPU node
    batch = set(ray.get([getpid.remote() for _ in range(20)]))
    assert len(batch) <= 4, batch


def test_runtime_context_driver_and_task(quanta_node):
    ctx = ray.get_runtime_context()
    job_id, node_id, worker_id = ctx.get_job_id(), ctx.get_node_id(), ctx.get_worker_id()
    assert job_id and node_id and worker_id
    assert node_id == ray.nodes()[0]["NodeID"]
    assert isinstance(ctx.gcs_address, str) and ctx.gcs_address

    @ray.remote
    def context():
        c = ray.get_runtime_context()
        return c.get_job_id(), c.get_node_id(), c.get_task_id(), c.get_worker_id()

    t_job, t_node, t_task, t_worker = ray.get(context.remote())
    assert t_job == job_id
    assert t_node == node_id
    assert t_task is not None and isinstance(t_task, str)
    assert t_worker != worker_id
    other_task = ray.get(context.remote())[2]
    assert other_task is not None and other_task != t_task


def test_nodes_and_resources(quanta_node, tmp_path, helpers):
    nodes = ray.nodes()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True
    assert node["Resources"]["CPU"] == 2.0
    assert node["NodeID"] == quanta_node["NodeID"]
    total = ray.cluster_resources()
    assert total["CPU"] == 2.0
    assert "GPU" not in total or total["GPU"] == 0
    assert total["memory"] > 0 and total["object_store_memory"] > 0
    assert ray.available_resources()["CPU"] == 2.0

    started, go = tmp_path / "started", tmp_path / "go"

    @ray.remote
    def hold(started, go):
        open(started, "w").close()
        while not os.path.exists(go):
            time.sleep(0.02)
        return "done"

    ref = hold.remote(str(started), str(go))
    assert helpers.wait_until(started.exists, 20)
    assert ray.available_resources().get("CPU", 0.0) == 1.0
    go.touch()
    assert ray.get(ref) == "done"
    # the worker's lease is given back (asynchronously) once idle
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 10)
    assert ray.cluster_resources()["CPU"] == 2.0
