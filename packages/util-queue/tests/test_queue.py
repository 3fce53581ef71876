"""quanta.util.queue.Queue on a real node: every method, FIFO order, blocking and back-pressure,
timeouts, batches, async variants, use from tasks and actors, shutdown, and no busy waiting."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest
import quanta
from quanta_util_queue import Empty, Full, Queue

# --------------------------------------------------------------------------------------------
# the basics, from the driver
# --------------------------------------------------------------------------------------------


def test_put_get_fifo(quanta_node):
    q = Queue()
    items = [0, "one", 2.0, None, (3, 4), {"five": 5}, b"six"]
    for item in items:
        q.put(item)
    assert [q.get() for _ in items] == items
    for i in range(200):
        q.put_nowait(i)
    assert [q.get_nowait() for _ in range(200)] == list(range(200))


def test_size_empty_full_len(quanta_node):
    q = Queue(maxsize=2)
    assert q.maxsize == 2
    assert (q.size(), q.qsize(), len(q), q.empty(), q.full()) == (0, 0, 0, True, False)
    q.put("a")
    assert (q.size(), q.qsize(), len(q), q.empty(), q.full()) == (1, 1, 1, False, False)
    q.put("b")
    assert (q.size(), q.qsize(), len(q), q.empty(), q.full()) == (2, 2, 2, False, True)
    assert q.get() == "a"
    assert (q.size(), q.full()) == (1, False)


def test_unbounded_queue_is_never_full(quanta_node):
    for maxsize in (0, -1):  # <= 0 is unbounded, as in queue.Queue and asyncio.Queue
        q = Queue(maxsize=maxsize)
        assert q.maxsize == 0
        q.put_nowait_batch(range(1000))
        q.put(1000, block=False)
        assert (q.size(), q.full()) == (1001, False)


def test_nowait_and_block_false(quanta_node):
    q = Queue(maxsize=1)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(Empty):
        q.get(block=False, timeout=10)  # timeout is ignored when not blocking
    q.put_nowait(1)
    with pytest.raises(Full):
        q.put_nowait(2)
    with pytest.raises(Full):
        q.put(2, block=False)
    t0 = time.monotonic()
    with pytest.raises(Full):
        q.put(2, block=False, timeout=10)
    assert time.monotonic() - t0 < 5
    assert q.get(block=False) == 1
    assert q.size() == 0


def test_items_of_any_size(quanta_node):
    q = Queue()
    big = bytes(range(256)) * 8192  # 2 MiB: goes through the object store
    q.put(big)
    q.put(list(range(10_000)))
    assert q.get() == big
    assert q.get() == list(range(10_000))


def test_object_refs_as_items(quanta_node):
    @quanta.remote
    def f(x):
        return x * 2

    q = Queue()
    # as in Ray, a ref passed as the item is an argument of the actor call, resolved to its
    # value; a ref inside the item stays a ref
    q.put(f.remote(21))
    q.put([f.remote(1)])
    assert q.get() == 42
    (ref,) = q.get()
    assert quanta.get(ref) == 2


def test_repr(quanta_node):
    q = Queue(maxsize=3)
    assert repr(q).startswith("Queue(maxsize=3, Actor(")
    q.shutdown()
    assert repr(q) == "Queue(maxsize=3, shut down)"


# --------------------------------------------------------------------------------------------
# timeouts
# --------------------------------------------------------------------------------------------


def test_get_timeout_raises_empty(quanta_node):
    q = Queue()
    t0 = time.monotonic()
    with pytest.raises(Empty, match="timed out after 0.3 s"):
        q.get(timeout=0.3)
    assert 0.28 <= time.monotonic() - t0 < 5
    with pytest.raises(Empty):
        q.get(timeout=0)
    with pytest.raises(Empty):
        q.get(block=True, timeout=0.01)
    q.put(1)
    assert q.get(timeout=0) == 1  # an item that is there is returned even with timeout=0


def test_put_timeout_raises_full(quanta_node):
    q = Queue(maxsize=1)
    q.put(1)
    t0 = time.monotonic()
    with pytest.raises(Full, match="timed out after 0.3 s"):
        q.put(2, timeout=0.3)
    assert 0.28 <= time.monotonic() - t0 < 5
    with pytest.raises(Full):
        q.put(2, timeout=0)
    assert q.size() == 1 and q.get() == 1  # the timed-out puts added nothing
    q.put(3, timeout=0)
    assert q.get() == 3


def test_get_with_timeout_gets_an_item_that_arrives_in_time(quanta_node):
    q = Queue()

    @quanta.remote
    def put_later(q, delay, item):
        time.sleep(delay)
        q.put(item)

    ref = put_later.remote(q, 0.3, "late")
    assert q.get(timeout=30) == "late"
    quanta.get(ref)


def test_timed_out_get_does_not_swallow_a_later_item(quanta_node):
    q = Queue()
    for _ in range(3):
        with pytest.raises(Empty):
            q.get(timeout=0.05)
    q.put("x")
    assert q.size() == 1
    assert q.get_nowait() == "x"


def test_racing_timeouts_neither_lose_nor_invent_items(quanta_node):
    """Gets and puts whose short timeouts keep expiring around the moment the other side acts:
    every item that a put reported as added comes out exactly once."""
    q = Queue(maxsize=2)

    @quanta.remote
    def producer(q, n):
        added = []
        for i in range(n):
            try:
                q.put(i, timeout=0.002)
                added.append(i)
            except Full:
                pass
        return added

    @quanta.remote
    def consumer(q, deadline):
        got = []
        while time.time() < deadline:
            try:
                got.append(q.get(timeout=0.002))
            except Empty:
                pass
        return got

    deadline = time.time() + 4
    c = consumer.remote(q, deadline)
    added = quanta.get(producer.remote(q, 1500), timeout=60)
    got = quanta.get(c, timeout=60)
    rest = q.get_nowait_batch(q.size())
    assert sorted(got + rest) == added
    assert got + rest == sorted(got + rest)  # and in order


# --------------------------------------------------------------------------------------------
# invalid arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("maxsize", ["3", 1.5, None, True, [1]])
def test_maxsize_must_be_an_int(maxsize):
    with pytest.raises(TypeError, match="'maxsize' must be an int"):
        Queue(maxsize=maxsize)


def test_actor_options_must_be_a_dict():
    with pytest.raises(TypeError, match="'actor_options' must be a dict"):
        Queue(actor_options=[("num_cpus", 1)])


def test_invalid_arguments_raise_at_the_call_site(quanta_node):
    q = Queue(maxsize=1)
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-0.5)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=float("nan"))
    with pytest.raises(TypeError, match="'timeout' must be None or a number"):
        q.get(timeout="1")
    with pytest.raises(TypeError, match="'timeout' must be None or a number"):
        q.put(1, timeout=True)
    with pytest.raises(ValueError, match="non-negative"):
        q.get_nowait_batch(-1)
    with pytest.raises(TypeError, match="'num_items' must be an int"):
        q.get_nowait_batch(1.0)
    with pytest.raises(TypeError, match="'items' must be an iterable"):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError, match="'items' must be an iterable"):
        q.put_nowait_batch("abc")
    with pytest.raises(ValueError, match="non-negative"):
        q.shutdown(grace_period_s=-1)
    with pytest.raises(ValueError, match="non-negative"):
        asyncio.run(q.get_async(timeout=-1))
    with pytest.raises(ValueError, match="non-negative"):
        asyncio.run(q.put_async(1, timeout=-1))
    # nothing was sent, and the queue still works
    assert q.size() == 0
    q.put(1)
    assert q.get() == 1


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------


def test_batches_keep_order(quanta_node):
    q = Queue()
    q.put_nowait_batch([1, 2, 3])
    q.put_nowait_batch((4, 5))
    q.put_nowait_batch(i for i in range(6, 9))  # any iterable
    q.put_nowait_batch([])
    assert q.size() == 8
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(5) == [1, 2, 3, 4, 5]
    assert q.get() == 6
    assert q.get_nowait_batch(2) == [7, 8]
    assert q.empty()


def test_put_nowait_batch_that_does_not_fit_adds_nothing(quanta_node):
    q = Queue(maxsize=5)
    q.put_nowait_batch(["a", "b", "c"])
    with pytest.raises(Full, match="cannot add 3 items to a queue holding 3 with maxsize 5"):
        q.put_nowait_batch(["d", "e", "f"])
    assert q.size() == 3
    q.put_nowait_batch(["d", "e"])  # exactly fills it
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait_batch(["g"])
    assert q.get_nowait_batch(5) == ["a", "b", "c", "d", "e"]


def test_get_nowait_batch_of_too_many_takes_nothing(quanta_node):
    q = Queue()
    q.put_nowait_batch([1, 2])
    with pytest.raises(Empty, match="cannot get 3 items from a queue holding 2"):
        q.get_nowait_batch(3)
    assert q.size() == 2
    assert q.get_nowait_batch(2) == [1, 2]
    with pytest.raises(Empty):
        q.get_nowait_batch(1)


def test_batch_put_wakes_blocked_consumers(quanta_node):
    q = Queue()

    @quanta.remote
    def consume(q, n):
        return [q.get(timeout=30) for _ in range(n)]

    ref = consume.remote(q, 4)
    time.sleep(0.2)
    q.put_nowait_batch([1, 2, 3, 4])
    assert quanta.get(ref) == [1, 2, 3, 4]


# --------------------------------------------------------------------------------------------
# blocking and back-pressure, across processes
# --------------------------------------------------------------------------------------------


def test_blocking_get_woken_by_a_put_from_a_task(quanta_node):
    q = Queue()

    @quanta.remote
    def producer(q):
        time.sleep(0.3)
        q.put("hello")
        return "done"

    ref = producer.remote(q)
    t0 = time.monotonic()
    assert q.get() == "hello"  # no timeout: waits until the task puts
    assert time.monotonic() - t0 >= 0.2
    assert quanta.get(ref) == "done"


def test_back_pressure_on_a_full_queue(quanta_node, helpers):
    q = Queue(maxsize=2)

    @quanta.remote
    def producer(q, n):
        for i in range(n):
            q.put(i)
        return n

    ref = producer.remote(q, 6)
    assert helpers.wait_until(q.full, 30)
    ready, _ = quanta.wait([ref], timeout=0.5)
    assert not ready, "the producer should be blocked on the full queue"
    assert q.size() == 2
    assert q.get() == 0  # room for one more: the producer moves by one item, then blocks again
    ready, _ = quanta.wait([ref], timeout=0.3)
    assert not ready
    assert q.size() == 2
    assert [q.get(timeout=30) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert quanta.get(ref, timeout=30) == 6
    assert q.empty()


def test_producer_and_consumer_tasks(quanta_node):
    q = Queue(maxsize=10)

    @quanta.remote
    def producer(q, n):
        for i in range(n):
            q.put(i)

    @quanta.remote
    def consumer(q, n):
        return [q.get() for _ in range(n)]

    c = consumer.remote(q, 500)
    p = producer.remote(q, 500)
    assert quanta.get(c, timeout=60) == list(range(500))
    quanta.get(p)


def test_several_producers_one_consumer(quanta_node):
    q = Queue(maxsize=4)

    @quanta.remote
    def producer(q, tag, n):
        for i in range(n):
            q.put((tag, i))

    refs = [producer.remote(q, tag, 50) for tag in ("a", "b")]
    got = [q.get(timeout=30) for _ in range(100)]
    quanta.get(refs)
    assert sorted(got) == sorted([(t, i) for t in ("a", "b") for i in range(50)])
    for tag in ("a", "b"):  # each producer's items stay in its order
        assert [i for t, i in got if t == tag] == list(range(50))


def test_blocked_consumers_are_served_in_order(quanta_node):
    q = Queue()
    refs = []
    for _ in range(3):
        refs.append(q.actor.get.remote(None))  # three parked gets, sent in this order
        time.sleep(0.05)
    q.put_nowait_batch(["first", "second", "third"])
    assert quanta.get(refs, timeout=30) == ["first", "second", "third"]


def test_many_blocked_consumers_do_not_block_producers(quanta_node):
    """More parked gets than an async actor's default max_concurrency (1000) must not stop the
    puts that serve them."""
    q = Queue()
    n = 1100
    refs = [q.actor.get.remote(None) for _ in range(n)]
    time.sleep(0.2)
    q.put_nowait_batch(range(n))
    assert sorted(quanta.get(refs, timeout=60)) == list(range(n))


# --------------------------------------------------------------------------------------------
# from tasks and actors
# --------------------------------------------------------------------------------------------


def test_use_from_tasks_and_actors(quanta_node):
    q = Queue()

    @quanta.remote
    class Consumer:
        def __init__(self, q):
            self.q = q

        def take(self, n):
            return [self.q.get(timeout=30) for _ in range(n)]

        def give(self, items):
            self.q.put_nowait_batch(items)

    @quanta.remote
    def produce(q, items):
        for item in items:
            q.put(item)
        return q.size()

    consumer = Consumer.remote(q)
    assert quanta.get(produce.remote(q, ["a", "b", "c"])) == 3
    assert quanta.get(consumer.take.remote(2)) == ["a", "b"]
    quanta.get(consumer.give.remote(["d", "e"]))
    assert q.get_nowait_batch(3) == ["c", "d", "e"]


def test_queue_created_in_a_task(quanta_node):
    @quanta.remote
    def work():
        q = Queue(maxsize=3)

        @quanta.remote
        def inner(q):
            q.put_nowait_batch([1, 2, 3])
            return q.full()

        full = quanta.get(inner.remote(q))
        items = q.get_nowait_batch(3)
        q.shutdown()
        return full, items

    assert quanta.get(work.remote(), timeout=60) == (True, [1, 2, 3])


def test_queue_created_in_an_actor_and_used_by_the_driver(quanta_node):
    @quanta.remote
    class Owner:
        def __init__(self):
            self.q = Queue()

        def queue(self):
            return self.q

        def fill(self, n):
            for i in range(n):
                self.q.put(i)

    owner = Owner.remote()
    q = quanta.get(owner.queue.remote())
    quanta.get(owner.fill.remote(3))
    assert [q.get(timeout=30) for _ in range(3)] == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# async variants
# --------------------------------------------------------------------------------------------


def test_async_variants_from_an_async_actor(quanta_node):
    q = Queue(maxsize=2)

    @quanta.remote
    class AsyncUser:
        def __init__(self, q):
            self.q = q

        async def put(self, item, block=True, timeout=None):
            try:
                await self.q.put_async(item, block=block, timeout=timeout)
            except Full as e:
                return f"Full: {e}"
            return "ok"

        async def get(self, block=True, timeout=None):
            try:
                return await self.q.get_async(block=block, timeout=timeout)
            except Empty as e:
                return f"Empty: {e}"

        async def get_many(self, n):
            return [await self.q.get_async(timeout=30) for _ in range(n)]

    user = AsyncUser.remote(q)
    assert quanta.get(user.put.remote(1)) == "ok"
    assert quanta.get(user.put.remote(2, timeout=0.1)) == "ok"
    assert quanta.get(user.put.remote(3, block=False)).startswith("Full: ")
    assert quanta.get(user.put.remote(3, timeout=0.2)).startswith("Full: put_async() timed out")
    assert quanta.get(user.get.remote()) == 1
    assert quanta.get(user.get.remote(block=False)) == 2
    assert quanta.get(user.get.remote(block=False)).startswith("Empty: ")
    assert quanta.get(user.get.remote(timeout=0.2)).startswith("Empty: get_async() timed out")

    # a parked get_async is woken by a put from the driver
    ref = user.get_many.remote(3)
    ready, _ = quanta.wait([ref], timeout=0.3)
    assert not ready
    for i in range(3):
        q.put(i)
    assert quanta.get(ref, timeout=30) == [0, 1, 2]


def test_async_back_pressure_in_an_async_actor(quanta_node, helpers):
    q = Queue(maxsize=1)

    @quanta.remote
    class AsyncProducer:
        async def produce(self, q, n):
            for i in range(n):
                await q.put_async(i)
            return n

    producer = AsyncProducer.remote()
    ref = producer.produce.remote(q, 4)
    assert helpers.wait_until(q.full, 30)
    ready, _ = quanta.wait([ref], timeout=0.3)
    assert not ready
    assert [q.get(timeout=30) for _ in range(4)] == [0, 1, 2, 3]
    assert quanta.get(ref, timeout=30) == 4


def test_async_variants_from_the_driver(quanta_node):
    q = Queue()

    async def main():
        await q.put_async("x")
        await q.put_async("y", block=False)
        first = await q.get_async()
        second = await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.05)
        return first, second

    assert asyncio.run(main()) == ("x", "y")


# --------------------------------------------------------------------------------------------
# shutdown
# --------------------------------------------------------------------------------------------


def _all_calls(q):
    return {
        "size": lambda: q.size(),
        "qsize": lambda: q.qsize(),
        "len": lambda: len(q),
        "empty": lambda: q.empty(),
        "full": lambda: q.full(),
        "put": lambda: q.put(1),
        "put timeout": lambda: q.put(1, timeout=1),
        "put_nowait": lambda: q.put_nowait(1),
        "put_nowait_batch": lambda: q.put_nowait_batch([1]),
        "get": lambda: q.get(),
        "get timeout": lambda: q.get(timeout=1),
        "get_nowait": lambda: q.get_nowait(),
        "get_nowait_batch": lambda: q.get_nowait_batch(1),
        "put_async": lambda: asyncio.run(q.put_async(1)),
        "get_async": lambda: asyncio.run(q.get_async()),
    }


@pytest.mark.parametrize("force", [False, True])
def test_every_method_raises_after_shutdown(quanta_node, force):
    q = Queue()
    q.put(1)
    q.shutdown(force=force)
    assert q.actor is None
    for name, call in _all_calls(q).items():
        with pytest.raises(RuntimeError, match="the queue was shut down"):
            call()
            pytest.fail(f"{name} did not raise")
    q.shutdown()  # again: nothing happens
    q.shutdown(force=True)


@pytest.mark.parametrize("force", [False, True])
def test_copies_of_the_queue_raise_after_shutdown(quanta_node, force):
    q = Queue()

    @quanta.remote
    def try_all(q):
        from quanta_util_queue.queue import Queue as Q  # noqa: F401 - the worker imports it

        out = {}
        for name, call in _all_calls(q).items():
            try:
                call()
                out[name] = "no error"
            except RuntimeError as e:
                out[name] = str(e)
        q.shutdown()  # a copy shutting down a queue that is gone: nothing happens
        return out

    q.shutdown(force=force)
    for name, message in quanta.get(try_all.remote(q), timeout=60).items():
        assert "the queue was shut down" in message, (name, message)


@pytest.mark.parametrize("force", [False, True])
def test_shutdown_wakes_blocked_callers(quanta_node, force):
    q = Queue(maxsize=1)
    q.put("x")

    @quanta.remote
    def blocked(q, op):
        try:
            if op == "get":
                q.get()
            else:
                q.put("y")
        except RuntimeError as e:
            return str(e)
        return "returned"

    empty = Queue()
    refs = [blocked.remote(empty, "get"), blocked.remote(q, "put")]
    ready, _ = quanta.wait(refs, num_returns=2, timeout=0.5)
    assert not ready
    empty.shutdown(force=force)
    q.shutdown(force=force)
    for message in quanta.get(refs, timeout=30):
        assert "the queue was shut down" in message


def test_graceful_shutdown_answers_blocked_callers_first(quanta_node):
    """Without force, the blocked callers get "the queue was shut down" from the actor itself
    (not an actor-death error)."""
    q = Queue()
    ref = q.actor.get.remote(None)
    time.sleep(0.2)
    q.shutdown()
    from quanta_util_queue.queue import _CLOSED

    assert quanta.get(ref, timeout=30) is _CLOSED


def test_queue_actor_killed_from_outside(quanta_node):
    q = Queue()
    quanta.kill(q.actor)
    with pytest.raises(RuntimeError, match="its actor died") as info:
        q.size()
    assert isinstance(info.value.__cause__, quanta.exceptions.RayActorError)
    q.shutdown()  # nothing left to end: no error
    with pytest.raises(RuntimeError, match="the queue was shut down"):
        q.put(1)


def test_shutdown_frees_the_actor_resources(quanta_node, helpers):
    assert quanta.available_resources().get("CPU") == 2
    q = Queue(actor_options={"num_cpus": 1})
    q.put(1)
    assert quanta.available_resources().get("CPU") == 1
    q.shutdown()
    assert helpers.wait_until(lambda: quanta.available_resources().get("CPU") == 2, 10)


def test_shutdown_with_a_zero_grace_period(quanta_node):
    q = Queue()
    q.shutdown(grace_period_s=0)
    with pytest.raises(RuntimeError, match="the queue was shut down"):
        q.size()


def test_actor_options_are_passed_on(quanta_node):
    q = Queue(actor_options={"name": "jobs", "namespace": "queues"})
    q.put("work")
    handle = quanta.get_actor("jobs", namespace="queues")
    assert handle == q.actor
    assert q.get() == "work"
    q.shutdown()


# --------------------------------------------------------------------------------------------
# interrupted callers, and no busy waiting
# --------------------------------------------------------------------------------------------


def test_cancelled_get_call_leaves_the_item(quanta_node):
    """A parked get that is cancelled does not take the next item."""
    q = Queue()
    ref = q.actor.get.remote(None)
    time.sleep(0.2)
    quanta.cancel(ref)
    with pytest.raises(quanta.exceptions.TaskCancelledError):
        quanta.get(ref, timeout=30)
    q.put("kept")
    assert q.get(timeout=30) == "kept"


@pytest.mark.parametrize("recursive", [True, False])
def test_cancelled_consumer_task_leaves_the_item(quanta_node, recursive):
    """A task blocked in get() that is cancelled cancels its call on the queue actor (with
    recursive=False only the queue does that; with True the runtime does it too)."""
    q, started = Queue(), Queue()

    @quanta.remote
    def consumer(q, started):
        started.put("about to block")
        return q.get()

    ref = consumer.remote(q, started)
    assert started.get(timeout=30) == "about to block"
    time.sleep(0.3)  # parked in get()
    ready, _ = quanta.wait([ref], timeout=0)
    assert not ready
    quanta.cancel(ref, recursive=recursive)
    with pytest.raises(quanta.exceptions.TaskCancelledError):
        quanta.get(ref, timeout=30)
    q.put("kept")
    assert q.get(timeout=5) == "kept"


def test_ctrl_c_in_the_driver_leaves_the_item(tmp_path):
    """Ctrl-C while the driver waits in get(): the parked call is cancelled, so the next item
    is not handed to a get that nobody waits for any more. (A separate driver process, so that
    the SIGINT does not reach pytest.)"""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import os, signal, threading
        import quanta
        from quanta_util_queue import Queue

        quanta.init(num_cpus=2)
        q = Queue()
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            q.get()
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted")
        q.put("kept")
        print(q.get(timeout=10))
        quanta.shutdown()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["interrupted", "kept"], proc.stdout + proc.stderr


def test_blocked_consumer_burns_no_cpu(quanta_node, helpers):
    """While a task waits in get() on an empty queue, the queue actor, the consumer's worker,
    the daemon and the driver stay idle: nothing polls."""
    from quanta._private import api

    q, started = Queue(), Queue()

    @quanta.remote
    def consumer(q, started):
        started.put("about to block")
        return q.get()

    ref = consumer.remote(q, started)
    assert started.get(timeout=30) == "about to block"
    time.sleep(0.3)  # the consumer's get reaches the queue actor and parks
    ready, _ = quanta.wait([ref], timeout=0)
    assert not ready
    daemon = api._session.proc.pid
    pids = sorted(helpers.descendants(daemon) | {daemon})
    before = {p: helpers.cpu_seconds(p) for p in pids}
    t0 = time.monotonic()
    time.sleep(1.0)
    wall = time.monotonic() - t0
    used = {p: helpers.cpu_seconds(p) - before[p] for p in pids}
    q.put("done")
    assert quanta.get(ref, timeout=30) == "done"
    # A polling loop would use most of a CPU; idle processes use next to nothing. The bound is
    # loose so that a busy machine cannot make the test fail.
    assert max(used.values()) < 0.15 * wall, used
    assert sum(used.values()) < 0.3 * wall, used
