"""Generator tasks: refs stream to the caller while the task still runs."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(40)


@ray.remote
def count_to(n):
    for i in range(n):
        yield i


@ray.remote
def yield_then_wait(go_path):
    yield "first"
    deadline = time.monotonic() + 30
    while not os.path.exists(go_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    yield "second"


def test_generator_returns_ref_generator(quanta_node):
    gen = count_to.remote(3)
    assert isinstance(gen, ray.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 1, 2]


def test_iteration_ends(quanta_node):
    gen = count_to.remote(5)
    assert [ray.get(r) for r in gen] == [0, 1, 2, 3, 4]
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)
    assert list(count_to.remote(0)) == []


def test_items_stream_before_task_finishes(quanta_node, tmp_path):
    go = tmp_path / "go"
    gen = yield_then_wait.remote(str(go))
    t0 = time.monotonic()
    first = next(gen)
    assert ray.get(first, timeout=10) == "first"
    assert time.monotonic() - t0 < 5
    # the task cannot have finished: it waits for "go", which only now exists
    go.touch()
    assert ray.get(next(gen)) == "second"
    with pytest.raises(StopIteration):
        next(gen)


def test_sleeping_generator_first_item_fast(quanta_node):
    @ray.remote
    def slow_tail():
        yield 1
        time.sleep(5)
        yield 2

    gen = slow_tail.remote()
    t0 = time.monotonic()
    assert ray.get(next(gen)) == 1
    assert time.monotonic() - t0 < 3


def test_exception_mid_generator(quanta_node):
    @ray.remote
    def fails_after_two():
        yield 0
        yield 1
        raise ValueError("generator broke")

    gen = fails_after_two.remote()
    assert ray.get(next(gen)) == 0
    assert ray.get(next(gen)) == 1
    bad = next(gen)
    with pytest.raises(qexc.RayTaskError) as info:
        ray.get(bad)
    assert isinstance(info.value, ValueError)
    assert "generator broke" in str(info.value)
    with pytest.raises(StopIteration):
        next(gen)


def test_exception_before_first_yield(quanta_node):
    @ray.remote
    def fails_at_once():
        raise KeyError("nothing yielded")
        yield  # pragma: no cover

    gen = fails_at_once.remote()
    with pytest.raises(KeyError):
        ray.get(next(gen))


def test_explicit_streaming_num_returns(quanta_node):
    @ray.remote(num_returns="streaming")
    def explicit(n):
        for i in range(n):
            yield i * 10

    gen = explicit.remote(4)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(r) for r in gen] == [0, 10, 20, 30]
    gen2 = count_to.options(num_returns="streaming").remote(2)
    assert [ray.get(r) for r in gen2] == [0, 1]


def test_many_and_large_items(quanta_node):
    assert [ray.get(r) for r in count_to.remote(500)] == list(range(500))

    @ray.remote
    def arrays(n):
        for i in range(n):
            yield np.full(512 * 1024, i, dtype=np.float64)  # 4 MB each

    for i, ref in enumerate(arrays.remote(4)):
        a = ray.get(ref)
        assert a.shape == (512 * 1024,) and float(a[0]) == i and float(a[-1]) == i


def test_generator_items_as_task_args(quanta_node):
    @ray.remote
    def double(x):
        return 2 * x

    refs = [double.remote(r) for r in count_to.remote(5)]
    assert ray.get(refs) == [0, 2, 4, 6, 8]


def test_get_of_generator_is_type_error(quanta_node):
    gen = count_to.remote(1)
    with pytest.raises(TypeError):
        ray.get(gen)
    assert [ray.get(r) for r in gen] == [0]


def test_generator_inside_task(quanta_node):
    @ray.remote
    def consume(n):
        return sum(ray.get(r) for r in count_to.remote(n))

    assert ray.get(consume.remote(10)) == 45
