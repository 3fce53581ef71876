"""Several calls per actor (max_concurrency), several threads using one pool, timeouts, and
waiting in quanta.wait rather than polling."""

from __future__ import annotations

import threading
import time

import pytest
import quanta
from quanta.util import ActorPool


@quanta.remote
class Napper:
    def nap(self, v):
        time.sleep(v[1])
        return v[0]

    def ident(self, v):
        return v


@quanta.remote
class AsyncNapper:
    async def nap(self, v):
        import asyncio

        await asyncio.sleep(v[1])
        return v[0]


def nap(a, v):
    return a.nap.remote(v)


def timed(fn):
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def needs_meta(handle):
    if "max_concurrency" not in getattr(handle, "_meta", {}):
        pytest.skip("this quanta-core does not record max_concurrency in actor handles")


def test_one_call_per_plain_actor(quanta_node):
    actors = [Napper.remote() for _ in range(2)]
    quanta.get([a.ident.remote(0) for a in actors])
    pool = ActorPool(actors)
    out, elapsed = timed(lambda: list(pool.map(nap, [(i, 0.4) for i in range(6)])))
    assert out == list(range(6))
    assert elapsed >= 1.15  # three rounds of two


def test_max_concurrency_read_from_handles(quanta_node):
    actors = [Napper.options(max_concurrency=3).remote() for _ in range(2)]
    needs_meta(actors[0])
    quanta.get([a.ident.remote(0) for a in actors])
    pool = ActorPool(actors)
    out, elapsed = timed(lambda: list(pool.map(nap, [(i, 0.4) for i in range(6)])))
    assert out == list(range(6))
    assert elapsed < 1.1  # one round of six (0.4 s), not three (1.2 s)
    # at most 3 per actor: 12 items take two rounds
    out, elapsed = timed(lambda: list(pool.map(nap, [(i, 0.4) for i in range(12)])))
    assert out == list(range(12))
    assert 0.75 <= elapsed < 1.9


def test_max_concurrency_per_actor_overrides(quanta_node):
    actors = [Napper.options(max_concurrency=3).remote() for _ in range(2)]
    quanta.get([a.ident.remote(0) for a in actors])
    pool = ActorPool(actors, max_concurrency_per_actor=1)  # Ray's behaviour
    out, elapsed = timed(lambda: list(pool.map(nap, [(i, 0.4) for i in range(6)])))
    assert out == list(range(6))
    assert elapsed >= 1.15
    pool = ActorPool(actors, max_concurrency_per_actor=3)
    out, elapsed = timed(lambda: list(pool.map(nap, [(i, 0.4) for i in range(6)])))
    assert out == list(range(6))
    assert elapsed < 1.1


def test_async_actor_slots(quanta_node):
    a = AsyncNapper.options(max_concurrency=8).remote()
    pool = ActorPool([a], max_concurrency_per_actor=8)
    out, elapsed = timed(lambda: sorted(pool.map_unordered(nap, [(i, 0.5) for i in range(8)])))
    assert out == list(range(8))
    assert elapsed < 1.5  # 8 at once, not 4 s


def test_async_actor_default_concurrency(quanta_node):
    a = AsyncNapper.remote()  # async: many calls at once by default (Ray: 1000)
    needs_meta(a)
    pool = ActorPool([a])
    out, elapsed = timed(lambda: list(pool.map(nap, [(i, 0.5) for i in range(20)])))
    assert out == list(range(20))
    assert elapsed < 2.0  # 20 at once, not 10 s


def test_many_calls_in_flight(quanta_node):
    """Hundreds of calls in flight: every result comes back, in order and unordered."""
    a = AsyncNapper.options(max_concurrency=500).remote()
    b = AsyncNapper.options(max_concurrency=500).remote()
    pool = ActorPool([a, b], max_concurrency_per_actor=500)
    values = [(i, 0.001 * (i % 5)) for i in range(3000)]
    assert list(pool.map(nap, values)) == list(range(3000))
    assert sorted(pool.map_unordered(nap, values)) == list(range(3000))


def test_push_with_max_concurrency(quanta_node):
    pool = ActorPool([])
    a = Napper.options(max_concurrency=2).remote()
    pool.push(a, max_concurrency=2)
    pool.submit(nap, (1, 0.3))
    assert pool.has_free()
    pool.submit(nap, (2, 0.3))
    assert not pool.has_free()
    assert pool.pop_idle() is None
    assert [pool.get_next(), pool.get_next()] == [1, 2]
    assert pool.pop_idle() == a


def test_actor_listed_twice_gets_two_slots(quanta_node):
    a = Napper.options(max_concurrency=2).remote()
    quanta.get(a.ident.remote(0))
    pool = ActorPool([a, a], max_concurrency_per_actor=1)  # 1 slot per listing: 2
    out, elapsed = timed(lambda: list(pool.map(nap, [(i, 0.4) for i in range(4)])))
    assert out == [0, 1, 2, 3]
    assert 0.75 <= elapsed < 1.15  # two rounds of two, not four, not one


def test_max_concurrency_from_handle_metadata(quanta_node):
    """A handle whose metadata records max_concurrency gets that many slots (duck-typed)."""
    real = Napper.remote()

    class Handle:  # what a runtime recording max_concurrency in the handle looks like
        _meta = {"max_concurrency": 3}

    h = Handle()
    pool = ActorPool([h])
    for i in range(3):
        assert pool.has_free()
        pool.submit(lambda actor, v: real.ident.remote(v), i)
    assert not pool.has_free()
    assert [pool.get_next() for _ in range(3)] == [0, 1, 2]
    assert pool.pop_idle() is h


def test_threads_get_next_never_steal(quanta_node):
    pool = ActorPool([Napper.remote() for _ in range(3)])
    n = 300
    for i in range(n):
        pool.submit(lambda a, v: a.ident.remote(v), i)
    got: dict[int, list[int]] = {}
    errors = []

    def consumer(k):
        mine = got.setdefault(k, [])
        try:
            while True:
                try:
                    mine.append(pool.get_next())
                except StopIteration:
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=consumer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    everything = [v for vs in got.values() for v in vs]
    assert sorted(everything) == list(range(n))  # each result exactly once
    for vs in got.values():  # each caller got the results it claimed, oldest first
        assert vs == sorted(vs)


def test_threads_submit_and_get(quanta_node):
    pool = ActorPool([Napper.remote() for _ in range(2)])
    per_thread = 60
    results: dict[int, list[int]] = {}
    errors = []

    def worker(k):
        try:
            mine = results.setdefault(k, [])
            for i in range(per_thread):
                pool.submit(nap, (k * 1000 + i, 0.0 if i % 7 else 0.01))
                if i % 3 == 2:
                    for _ in range(3):
                        mine.append(pool.get_next_unordered())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    everything = sorted(v for vs in results.values() for v in vs)
    assert everything == sorted(k * 1000 + i for k in range(4) for i in range(per_thread))
    assert not pool.has_next()
    assert pool.has_free()


def test_get_next_timeout(quanta_node):
    pool = ActorPool([Napper.remote()])
    pool.submit(nap, (1, 1.0))
    pool.submit(nap, (2, 0.0))
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        _, elapsed = timed(lambda: pool.get_next(timeout=0.1))
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0)
    assert pool.has_next()
    assert pool.get_next() == 1  # still the next one
    assert pool.get_next(timeout=5) == 2


def test_get_next_timeout_is_prompt(quanta_node):
    pool = ActorPool([Napper.remote()])
    pool.submit(nap, (1, 2.0))
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.2)
    assert time.monotonic() - start < 1.5


def test_get_next_ignore_if_timedout(quanta_node):
    pool = ActorPool([Napper.remote()])
    pool.submit(nap, (1, 0.8))
    pool.submit(nap, (2, 0.0))
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.1, ignore_if_timedout=True)
    # the ignored call still holds the actor until it finishes (Ray gives it back at once)
    assert not pool.has_free()
    assert pool.get_next() == 2
    assert not pool.has_next()
    assert pool.has_free()


def test_get_next_unordered_timeout(quanta_node):
    pool = ActorPool([Napper.remote(), Napper.remote()])
    pool.submit(nap, (1, 1.0))
    pool.submit(nap, (2, 1.0))
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next_unordered(timeout=0.1)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0.1, ignore_if_timedout=True)
    assert pool.get_next_unordered(timeout=10) == 2  # the oldest one was dropped
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_timeout_on_waiting_item(quanta_node):
    """The item has no actor yet: the timeout still applies, and ignoring it means it never
    runs."""
    pool = ActorPool([Napper.remote()])
    pool.submit(nap, (1, 0.6))
    pool.submit(nap, (2, 0.0))
    assert pool.get_next(timeout=5) == 1
    assert pool.get_next(timeout=5) == 2
    pool.submit(nap, (3, 0.6))
    pool.submit(nap, (4, 0.0))
    pool.submit(nap, (5, 0.0))
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.1, ignore_if_timedout=True)  # drops 3 (running)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)  # drops 4 (waiting)
    assert pool.get_next() == 5
    assert not pool.has_next()


def test_waits_in_quanta_wait_not_polling(quanta_node, monkeypatch):
    from quanta_util_pool import actor_pool

    calls = []
    real_wait = actor_pool._wait

    def counting_wait(refs, **kwargs):
        calls.append(kwargs.get("timeout"))
        return real_wait(refs, **kwargs)

    monkeypatch.setattr(actor_pool, "_wait", counting_wait)
    pool = ActorPool([Napper.remote(), Napper.remote()])
    pool.submit(nap, (1, 1.0))
    pool.submit(nap, (2, 1.2))
    assert pool.get_next_unordered() == 1
    assert pool.get_next_unordered() == 2
    assert len(calls) <= 4, calls  # one blocking wait per result, not a loop
    assert calls[0] is None
    calls.clear()
    pool.submit(nap, (3, 0.8))
    assert pool.get_next_unordered(timeout=5) == 3
    assert len(calls) <= 2, calls
