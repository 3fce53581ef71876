"""The ActorPool API, method by method, against real actors (Ray's semantics)."""

from __future__ import annotations

import time

import pytest
import quanta
from quanta.util import ActorPool


@quanta.remote
class Doubler:
    def double(self, v):
        return 2 * v

    def slow_double(self, v):
        time.sleep(v[1])
        return 2 * v[0]


def double(a, v):
    return a.double.remote(v)


def slow(a, v):
    return a.slow_double.remote(v)


def test_published_under_quanta_util():
    import quanta_util_pool
    from quanta_util_pool.actor_pool import ActorPool as Direct

    assert ActorPool is Direct is quanta_util_pool.ActorPool
    assert quanta.util.actor_pool.ActorPool is Direct


def test_map_keeps_order(quanta_node):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert list(pool.map(double, [1, 2, 3, 4])) == [2, 4, 6, 8]
    # results come in submission order even when later items finish first
    values = [(i, 0.3 if i == 0 else 0.0) for i in range(6)]
    assert list(pool.map(slow, values)) == [0, 2, 4, 6, 8, 10]
    assert not pool.has_next()


def test_map_accepts_any_iterable_and_empty(quanta_node):
    pool = ActorPool([Doubler.remote()])
    assert list(pool.map(double, (v for v in range(5)))) == [0, 2, 4, 6, 8]
    assert list(pool.map(double, [])) == []


def test_map_unordered_yields_as_they_finish(quanta_node):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert sorted(pool.map_unordered(double, [1, 2, 3, 4])) == [2, 4, 6, 8]
    # the slow item on one actor does not hold back the others
    out = list(pool.map_unordered(slow, [(0, 1.0), (1, 0), (2, 0), (3, 0)]))
    assert sorted(out) == [0, 2, 4, 6]
    assert out[-1] == 0


def test_map_discards_earlier_results(quanta_node):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(double, 100)
    first = pool.map(double, [1, 2, 3])
    second = pool.map(double, [10, 20])  # discards what is left of `first` (as Ray does)
    assert list(second) == [20, 40]
    assert list(first) == []  # its items were discarded: the iterator ends
    assert not pool.has_next()


def test_submit_and_get_next(quanta_node):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(double, 1)
    pool.submit(double, 2)
    pool.submit(double, 3)  # waits for a free actor
    assert pool.has_next()
    assert [pool.get_next(), pool.get_next(), pool.get_next()] == [2, 4, 6]
    assert not pool.has_next()
    with pytest.raises(StopIteration, match="No more results"):
        pool.get_next()


def test_get_next_unordered(quanta_node):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(slow, (1, 1.0))
    pool.submit(slow, (2, 0.0))
    assert pool.get_next_unordered() == 4  # the fast one first
    assert pool.get_next_unordered() == 2
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_after_get_next_unordered(quanta_node):
    # Ray raises ValueError here; the pool returns the oldest result not yet returned
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    pool.submit(slow, (1, 0.5))
    pool.submit(slow, (2, 0.0))
    pool.submit(slow, (3, 0.0))
    assert pool.get_next_unordered() == 4
    assert pool.get_next() == 2
    assert pool.get_next() == 6


def test_has_free_pop_idle_push(quanta_node):
    a1, a2 = Doubler.remote(), Doubler.remote()
    pool = ActorPool([a1])
    assert pool.has_free()
    pool.submit(double, 1)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    assert pool.get_next() == 2
    assert pool.has_free()
    assert pool.pop_idle() == a1
    assert not pool.has_free()
    assert pool.pop_idle() is None
    pool.push(a1)
    pool.push(a2)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a1)
    assert list(pool.map(double, range(6))) == [0, 2, 4, 6, 8, 10]
    assert {pool.pop_idle(), pool.pop_idle()} == {a1, a2}
    assert pool.pop_idle() is None


def test_push_busy_actor_is_refused(quanta_node):
    a1 = Doubler.remote()
    pool = ActorPool([a1])
    pool.submit(slow, (1, 0.3))
    with pytest.raises(ValueError):
        pool.push(a1)
    assert pool.get_next() == 2


def test_push_runs_waiting_items(quanta_node):
    pool = ActorPool([])
    pool.submit(double, 1)
    pool.submit(double, 2)
    assert pool.has_next() and not pool.has_free()
    pool.push(Doubler.remote())
    assert [pool.get_next(), pool.get_next()] == [2, 4]


def test_empty_pool_get_next_raises_for_the_item(quanta_node):
    pool = ActorPool([])
    pool.submit(double, 1)
    with pytest.raises(RuntimeError, match="no actor left"):
        pool.get_next()
    assert not pool.has_next()


def test_submit_error_of_fn_propagates(quanta_node):
    pool = ActorPool([Doubler.remote()])

    def bad(a, v):
        raise KeyError(v)

    with pytest.raises(KeyError):
        pool.submit(bad, 1)
    assert not pool.has_next()
    assert pool.has_free()  # the actor was given back
    pool.submit(double, 2)
    assert pool.get_next() == 4


def test_repr_and_validation(quanta_node):
    with pytest.raises(ValueError):
        ActorPool([], max_concurrency_per_actor=0)
    with pytest.raises(ValueError):
        ActorPool([], max_concurrency_per_actor=True)
    pool = ActorPool([Doubler.remote()])
    assert "ActorPool(actors=1" in repr(pool)


@quanta.remote
class Stamper:
    def run(self, v):
        time.sleep(v[1])
        return v[0], time.time()


def test_slow_item_does_not_idle_other_actors(quanta_node):
    """While get_next waits for a slow first item, the other actor keeps taking items (Ray's
    pool leaves it idle until the slow result is returned)."""
    pool = ActorPool([Stamper.remote(), Stamper.remote()])
    values = [(0, 1.5)] + [(i, 0.05) for i in range(1, 11)]
    out = list(pool.map(lambda a, v: a.run.remote(v), values))
    assert [v for v, _ in out] == list(range(11))
    slow_end = out[0][1]
    assert all(end < slow_end for _, end in out[1:])
