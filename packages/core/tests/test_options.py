"""Validation of @remote(...) / .options(...) and of init()."""

from __future__ import annotations

import pytest
import quanta as ray
from quanta.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def f(x=1):
    return x


# --------------------------------------------------------------------------------------
# task options: checked at the call site, no node needed
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opts, exc, words",
    [
        ({"num_cpu": 1}, ValueError, "num_cpu"),
        ({"bogus_option": 1}, ValueError, "bogus_option"),
        ({"num_cpus": "two"}, TypeError, "num_cpus"),
        ({"num_cpus": -1}, ValueError, "num_cpus"),
        ({"num_gpus": 1.5}, ValueError, "num_gpus"),
        ({"num_gpus": -2}, ValueError, "num_gpus"),
        ({"max_retries": "x"}, TypeError, "max_retries"),
        ({"max_retries": -5}, ValueError, "max_retries"),
        ({"num_returns": "many"}, TypeError, "num_returns"),
        ({"num_returns": -1}, ValueError, "num_returns"),
        ({"retry_exceptions": "yes"}, TypeError, "retry_exceptions"),
        ({"retry_exceptions": [int]}, TypeError, "retry_exceptions"),
        ({"scheduling_strategy": "BOGUS"}, ValueError, "scheduling_strategy"),
        ({"resources": {"CPU": 1}}, ValueError, "CPU"),
        ({"resources": {"foo": -1}}, ValueError, "foo"),
        ({"name": 5}, TypeError, "name"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else None,
)
def test_invalid_options(opts, exc, words):
    with pytest.raises(exc, match=words):
        ray.remote(**opts)(f)
    rf = ray.remote(f)
    with pytest.raises(exc, match=words):
        rf.options(**opts)


@pytest.mark.parametrize(
    "opts",
    [
        {"num_cpus": 0},
        {"num_cpus": 0.5},
        {"num_cpus": 4},
        {"num_gpus": 0.25},
        {"num_gpus": 2},
        {"max_retries": -1},
        {"max_retries": 0},
        {"num_returns": 0},
        {"num_returns": 2},
        {"num_returns": "streaming"},
        {"retry_exceptions": True},
        {"retry_exceptions": [ValueError, KeyError]},
        {"scheduling_strategy": "SPREAD"},
        {"scheduling_strategy": "DEFAULT"},
        {"resources": {"custom": 0.5}},
        {"name": "my-task"},
        {"memory": 1024},
    ],
    ids=lambda v: str(v)[:40],
)
def test_valid_options_accepted(opts):
    ray.remote(**opts)(f)
    ray.remote(f).options(**opts)


def test_remote_decorator_forms():
    with pytest.raises(TypeError):
        ray.remote(f, g=1)
    with pytest.raises(TypeError):
        ray.remote(1, 2)
    assert hasattr(ray.remote(f), "remote")
    assert hasattr(ray.remote(num_cpus=1)(f), "remote")


def test_options_chain_and_do_not_mutate(quanta_node):
    @ray.remote(num_returns=2)
    def two():
        return 1, 2

    a, b = two.remote()
    assert ray.get([a, b]) == [1, 2]
    single = two.options(num_returns=1)
    assert ray.get(single.remote()) == (1, 2)
    x, y = single.options(num_returns=2).remote()
    assert ray.get([x, y]) == [1, 2]
    assert len(two.remote()) == 2  # the decorated function keeps its own options


def test_node_affinity_strategy(quanta_node):
    node_id = ray.get_runtime_context().get_node_id()
    strat = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)

    @ray.remote
    def rf(x):
        return x

    assert ray.get(rf.options(scheduling_strategy=strat).remote(3)) == 3
    assert ray.get(rf.options(scheduling_strategy="SPREAD").remote(4)) == 4


# --------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------
def test_init_twice_raises_unless_ignore_reinit(start_quanta):
    info = start_quanta()
    with pytest.raises(RuntimeError):
        ray.init(num_cpus=2)
    again = ray.init(num_cpus=2, ignore_reinit_error=True)
    assert again["NodeID"] == info["NodeID"]
    assert ray.is_initialized()


def test_init_unknown_keyword(start_quanta):
    assert not ray.is_initialized()
    with pytest.raises(TypeError, match="unknown_kw"):
        ray.init(unknown_kw=1)
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"num_cpus": "two"}, TypeError),
        ({"num_cpus": -1}, ValueError),
        ({"num_gpus": -1}, ValueError),
        ({"resources": {"CPU": 4}}, ValueError),
        ({"resources": ["a"]}, TypeError),
        ({"namespace": 5}, TypeError),
        ({"object_store_memory": "big"}, TypeError),
    ],
)
def test_init_bad_arguments(start_quanta, kwargs, exc):
    with pytest.raises(exc):
        ray.init(**kwargs)
    assert not ray.is_initialized()


def test_init_namespace(start_quanta):
    start_quanta(namespace="my-ns")
    assert ray.get_runtime_context().namespace == "my-ns"


def test_shutdown_then_init_again(start_quanta):
    first = start_quanta()
    ray.shutdown()
    assert not ray.is_initialized()
    ray.shutdown()  # idempotent
    second = start_quanta()
    assert second["NodeID"] != first["NodeID"]

    @ray.remote
    def g(x):
        return x

    assert ray.get(g.remote(9)) == 9
