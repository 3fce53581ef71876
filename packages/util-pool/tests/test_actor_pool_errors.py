"""Errors are raised for their own item and iteration goes on; several returns per call."""

from __future__ import annotations

import pytest
import quanta
from quanta.exceptions import RayTaskError
from quanta.util import ActorPool


class Boom(Exception):
    pass


@quanta.remote
class Worker:
    def f(self, v):
        if v % 3 == 1:
            raise Boom(f"bad {v}")
        return v

    @quanta.method(num_returns=2)
    def two(self, v):
        if v < 0:
            raise Boom("negative")
        return v, v * 10

    def g(self, v):
        return -v


def call(a, v):
    return a.f.remote(v)


def drain(it):
    """Results and errors of an iterator that keeps going after an error."""
    out = []
    while True:
        try:
            out.append(next(it))
        except StopIteration:
            return out
        except Boom as e:
            out.append(e)


def test_get_next_raises_for_the_item_then_continues(quanta_node):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    for v in range(5):
        pool.submit(call, v)
    assert pool.get_next() == 0
    with pytest.raises(Boom, match="bad 1") as info:
        pool.get_next()
    assert isinstance(info.value, RayTaskError)
    assert pool.get_next() == 2
    assert pool.get_next() == 3
    with pytest.raises(Boom):
        pool.get_next()
    assert not pool.has_next()


def test_map_iterator_continues_after_an_error(quanta_node):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    out = drain(pool.map(call, range(7)))
    assert [x if not isinstance(x, Exception) else "E" for x in out] == [
        0, "E", 2, 3, "E", 5, 6]
    # the pool is still usable: both actors are back
    assert pool.has_free()
    assert list(pool.map(call, [0, 2, 3])) == [0, 2, 3]


def test_map_unordered_iterator_continues_after_an_error(quanta_node):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    out = drain(pool.map_unordered(call, range(7)))
    assert sorted(x for x in out if not isinstance(x, Exception)) == [0, 2, 3, 5, 6]
    assert sum(isinstance(x, Boom) for x in out) == 2


def test_get_next_unordered_raises_for_the_item(quanta_node):
    pool = ActorPool([Worker.remote()])
    pool.submit(call, 1)
    pool.submit(call, 2)
    with pytest.raises(Boom):
        pool.get_next_unordered()
    assert pool.get_next_unordered() == 2


def test_fn_errors_fail_their_item_in_map(quanta_node):
    pool = ActorPool([Worker.remote()])

    def fn(a, v):
        if v == 1:
            raise Boom("fn failed")
        if v == 2:
            return 42  # not a ref
        return a.f.remote(v)

    it = pool.map(fn, [0, 1, 2, 3])
    assert next(it) == 0
    with pytest.raises(Boom, match="fn failed"):
        next(it)
    with pytest.raises(TypeError, match="must return an ObjectRef"):
        next(it)
    assert next(it) == 3
    with pytest.raises(StopIteration):
        next(it)


def test_many_items_failing_in_fn_do_not_recurse(quanta_node):
    pool = ActorPool([Worker.remote()])

    def fn(a, v):
        raise Boom(v)

    it = pool.map(fn, range(3000))
    assert len(drain(it)) == 3000


def test_multiple_returns(quanta_node):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    assert list(pool.map(lambda a, v: a.two.remote(v), [1, 2, 3])) == [
        [1, 10], [2, 20], [3, 30]]
    pool.submit(lambda a, v: a.two.remote(v), 4)
    assert pool.get_next_unordered() == [4, 40]
    # an error in a multi-return call is raised for its item
    it = pool.map(lambda a, v: a.two.remote(v), [5, -1, 6])
    assert drain(it)[0::2] == [[5, 50], [6, 60]]


def test_list_of_refs_from_several_methods(quanta_node):
    pool = ActorPool([Worker.remote()])
    out = list(pool.map(lambda a, v: [a.f.remote(v), a.g.remote(v)], [0, 2, 3]))
    assert out == [[0, 0], [2, -2], [3, -3]]
    assert pool.has_free()
