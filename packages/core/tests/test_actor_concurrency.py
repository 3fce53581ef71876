"""Concurrency inside an actor: async actors, threaded actors (max_concurrency), concurrency
groups, option validation, streaming (generator) methods and cancelling actor calls."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(60)


def _all_overlap(spans):
    """True when every interval shares one instant with every other."""
    return max(s for s, _ in spans) < min(e for _, e in spans)


def _none_overlap(spans):
    spans = sorted(spans)
    return all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))


def _overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


def _assert_cancelled_quickly(ref, limit=5.0):
    t0 = time.monotonic()
    with pytest.raises(qexc.TaskCancelledError):
        ray.get(ref, timeout=limit + 10)
    assert time.monotonic() - t0 < limit


@ray.remote
def wait_for_file_then(path, value):
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


# --------------------------------------------------------------------------------------
# async actors
# --------------------------------------------------------------------------------------
@ray.remote
class AsyncActor:
    def __init__(self):
        self.events = []
        self.cancelled = []

    async def span(self, seconds):
        start = time.time()
        await asyncio.sleep(seconds)
        return start, time.time()

    async def echo(self, x):
        return x

    async def await_ref(self, refs):
        self.events.append("waiting")
        value = await refs[0]
        self.events.append("got")
        return value

    async def spin(self):
        try:
            while True:
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.append("spin")
            raise

    async def sleep_long(self, started):
        open(started, "w").close()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.append("sleep_long")
            raise
        return "finished"

    async def get_events(self):
        return list(self.events), list(self.cancelled)

    def sync_method(self, x):
        return x * 2

    async def fail(self):
        raise KeyError("async boom")


def test_async_methods(quanta_node):
    a = AsyncActor.remote()
    assert ray.get(a.echo.remote(5)) == 5
    assert ray.get(a.sync_method.remote(4)) == 8  # plain methods work in an async actor
    with pytest.raises(KeyError, match="async boom"):
        ray.get(a.fail.remote())
    assert ray.get(a.echo.remote("still alive")) == "still alive"


def test_async_calls_run_concurrently(quanta_node):
    a = AsyncActor.remote()
    ray.get(a.echo.remote(0))
    spans = ray.get([a.span.remote(0.5) for _ in range(10)], timeout=30)
    assert _all_overlap(spans), spans


def test_async_actor_max_concurrency_one_serialises(quanta_node):
    a = AsyncActor.options(max_concurrency=1).remote()
    spans = ray.get([a.span.remote(0.2) for _ in range(3)], timeout=30)
    assert _none_overlap(spans), spans


def test_async_actor_max_concurrency_limits(quanta_node):
    a = AsyncActor.options(max_concurrency=2).remote()
    spans = ray.get([a.span.remote(0.3) for _ in range(4)], timeout=30)
    for s in spans:  # at most 2 at any instant
        at_once = sum(1 for o in spans if o[0] <= s[0] < o[1])
        assert at_once <= 2, spans


def test_async_method_awaits_ref(quanta_node, tmp_path):
    go = tmp_path / "go"
    a = AsyncActor.remote()
    waiting = a.await_ref.remote([wait_for_file_then.remote(str(go), "value")])
    # while one call awaits a ref, others run
    assert ray.get(a.echo.remote("meanwhile"), timeout=10) == "meanwhile"
    assert ray.get(a.get_events.remote())[0] == ["waiting"]
    go.touch()
    assert ray.get(waiting, timeout=30) == "value"
    assert ray.get(a.get_events.remote())[0] == ["waiting", "got"]


def test_async_method_awaits_another_actor(quanta_node):
    @ray.remote
    class Front:
        def __init__(self, back):
            self.back = back

        async def ask(self, x):
            return await self.back.echo.remote(x)

    back = AsyncActor.remote()
    front = Front.remote(back)
    assert ray.get([front.ask.remote(i) for i in range(5)]) == list(range(5))


def test_forever_looping_method_does_not_block_others(quanta_node):
    a = AsyncActor.remote()
    spinner = a.spin.remote()
    assert ray.get([a.echo.remote(i) for i in range(5)], timeout=10) == list(range(5))
    assert not ray.wait([spinner], timeout=0.2)[0]
    ray.cancel(spinner)
    _assert_cancelled_quickly(spinner)
    assert ray.get(a.get_events.remote())[1] == ["spin"]


def test_async_actor_runtime_context_and_state(quanta_node):
    @ray.remote
    class Acc:
        def __init__(self):
            self.total = 0

        async def add(self, x):
            await asyncio.sleep(0.01)
            self.total += x
            return self.total

        async def actor_id(self):
            return ray.get_runtime_context().get_actor_id()

    acc = Acc.remote()
    ray.get([acc.add.remote(1) for _ in range(20)])
    assert ray.get(acc.add.remote(0)) == 20
    assert ray.get(acc.actor_id.remote()) == acc._actor_id.hex()


# --------------------------------------------------------------------------------------
# threaded actors
# --------------------------------------------------------------------------------------
@ray.remote
class Threaded:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0

    def span(self, seconds):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    def incr(self):
        with self.lock:
            self.count += 1
            return self.count

    def thread_name(self):
        return threading.current_thread().name


def test_threaded_actor_runs_calls_in_parallel(quanta_node):
    t = Threaded.options(max_concurrency=4).remote()
    ray.get(t.incr.remote())
    t0 = time.monotonic()
    spans = ray.get([t.span.remote(0.5) for _ in range(4)], timeout=30)
    elapsed = time.monotonic() - t0
    assert _all_overlap(spans), spans
    assert elapsed < 2.0, elapsed  # loose: one at a time would take 2 s


def test_threaded_actor_caps_concurrency(quanta_node):
    t = Threaded.options(max_concurrency=2).remote()
    spans = ray.get([t.span.remote(0.3) for _ in range(4)], timeout=30)
    for s in spans:
        at_once = sum(1 for o in spans if o[0] <= s[0] < o[1])
        assert at_once <= 2, spans


def test_sync_actor_runs_one_call_at_a_time(quanta_node):
    t = Threaded.remote()
    spans = ray.get([t.span.remote(0.2) for _ in range(3)], timeout=30)
    assert _none_overlap(spans), spans


def test_threaded_actor_state_is_shared(quanta_node):
    t = Threaded.options(max_concurrency=8).remote()
    ray.get([t.incr.remote() for _ in range(100)])
    assert ray.get(t.incr.remote()) == 101


# --------------------------------------------------------------------------------------
# concurrency groups
# --------------------------------------------------------------------------------------
@ray.remote(concurrency_groups={"io": 1, "compute": 2})
class Grouped:
    @ray.method(concurrency_group="io")
    def io(self, seconds):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    @ray.method(concurrency_group="compute")
    def compute(self, seconds):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    def default(self, seconds):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()


def test_group_of_one_serialises_while_other_group_runs(quanta_node):
    g = Grouped.remote()
    ray.get(g.default.remote(0))
    io = [g.io.remote(0.4) for _ in range(2)]
    compute = g.compute.remote(0.7)
    io_spans, compute_span = ray.get(io, timeout=30), ray.get(compute, timeout=30)
    assert _none_overlap(io_spans), io_spans  # "io" has one slot
    assert _overlaps(compute_span, io_spans[0]), (compute_span, io_spans)


def test_group_of_two_runs_two_at_once(quanta_node):
    g = Grouped.remote()
    spans = ray.get([g.compute.remote(0.4) for _ in range(2)], timeout=30)
    assert _all_overlap(spans), spans


def test_default_group_runs_beside_named_groups(quanta_node):
    g = Grouped.remote()
    spans = ray.get([g.default.remote(0.5), g.io.remote(0.5), g.compute.remote(0.5)],
                    timeout=30)
    assert _all_overlap(spans), spans
    # the default group has one slot when only concurrency_groups is given (Ray's default)
    spans = ray.get([g.default.remote(0.2) for _ in range(2)], timeout=30)
    assert _none_overlap(spans), spans


def test_concurrency_group_option_on_call(quanta_node):
    g = Grouped.remote()
    ray.get(g.default.remote(0))
    blocker = g.io.remote(1.0)  # fills the "io" group
    moved = g.io.options(concurrency_group="compute").remote(0.3)
    moved_span, blocker_span = ray.get(moved, timeout=30), ray.get(blocker, timeout=30)
    assert _overlaps(moved_span, blocker_span), (moved_span, blocker_span)


def test_concurrency_groups_on_options(quanta_node):
    @ray.remote
    class Plain:
        def span(self, seconds):
            start = time.time()
            time.sleep(seconds)
            return start, time.time()

    # Quanta refuses concurrency_groups in .options() with a clear error; if it ever accepts
    # them (as Ray does), they must work.
    try:
        p = Plain.options(concurrency_groups={"wide": 3}).remote()
    except ValueError as e:
        assert "concurrency_groups" in str(e)
        return
    spans = ray.get([p.span.options(concurrency_group="wide").remote(0.4) for _ in range(3)],
                    timeout=30)
    assert _all_overlap(spans), spans


def test_async_concurrency_groups(quanta_node):
    @ray.remote(concurrency_groups={"io": 1, "compute": 3})
    class AsyncGrouped:
        @ray.method(concurrency_group="io")
        async def io(self, seconds):
            start = time.time()
            await asyncio.sleep(seconds)
            return start, time.time()

        @ray.method(concurrency_group="compute")
        async def compute(self, seconds):
            start = time.time()
            await asyncio.sleep(seconds)
            return start, time.time()

    g = AsyncGrouped.remote()
    io = [g.io.remote(0.3) for _ in range(3)]
    compute = [g.compute.remote(0.5) for _ in range(3)]
    io_spans, compute_spans = ray.get(io, timeout=30), ray.get(compute, timeout=30)
    assert _none_overlap(io_spans), io_spans
    assert _all_overlap(compute_spans), compute_spans
    assert _overlaps(compute_spans[0], io_spans[0])


# --------------------------------------------------------------------------------------
# invalid options
# --------------------------------------------------------------------------------------
def test_unknown_actor_option():
    with pytest.raises(ValueError, match="bogus"):
        @ray.remote(bogus=1)
        class A:
            pass

    @ray.remote
    class B:
        def f(self):
            return 1

    with pytest.raises(ValueError, match="max_retries"):
        B.options(max_retries=3)  # a task option, not an actor one
    with pytest.raises(ValueError, match="num_returns"):
        B.options(num_returns=2)


@pytest.mark.parametrize("opts, error, match", [
    ({"max_restarts": "3"}, TypeError, "max_restarts"),
    ({"max_restarts": -2}, ValueError, "max_restarts"),
    ({"max_task_retries": 1.5}, TypeError, "max_task_retries"),
    ({"max_concurrency": 0}, ValueError, "max_concurrency"),
    ({"max_concurrency": "4"}, TypeError, "max_concurrency"),
    ({"num_cpus": -1}, ValueError, "num_cpus"),
    ({"num_gpus": "one"}, TypeError, "num_gpus"),
    ({"resources": ["a"]}, TypeError, "resources"),
    ({"name": 3}, TypeError, "name"),
    ({"name": ""}, ValueError, "name"),
    ({"namespace": 7}, TypeError, "namespace"),
    ({"lifetime": "forever"}, ValueError, "lifetime"),
    ({"get_if_exists": True}, ValueError, "name"),
    ({"get_if_exists": "yes", "name": "x"}, TypeError, "get_if_exists"),
    ({"concurrency_groups": ["io"]}, TypeError, "concurrency_groups"),
    ({"concurrency_groups": {"io": 0}}, ValueError, "io"),
])
def test_bad_actor_option_values(opts, error, match):
    @ray.remote
    class A:
        def f(self):
            return 1

    if "concurrency_groups" not in opts:  # .options() refuses concurrency_groups outright
        with pytest.raises(error, match=match):
            A.options(**opts)
    with pytest.raises(error, match=match):  # the same check in @remote(...)
        @ray.remote(**opts)
        class B:
            def f(self):
                return 1


def test_bad_method_options(quanta_node):
    with pytest.raises(ValueError, match="bogus"):
        ray.method(bogus=1)
    with pytest.raises(ValueError, match="num_returns"):
        ray.method(num_returns=-1)
    with pytest.raises(TypeError, match="concurrency_group"):
        ray.method(concurrency_group=5)

    @ray.remote
    class A:
        def f(self):
            return 1

    a = A.remote()
    with pytest.raises(ValueError, match="bogus"):
        a.f.options(bogus=1)
    with pytest.raises(TypeError, match="num_returns"):
        a.f.options(num_returns="many")
    with pytest.raises(TypeError, match="max_task_retries"):
        a.f.options(max_task_retries="x")
    assert ray.get(a.f.remote()) == 1


def test_method_in_unknown_concurrency_group(quanta_node):
    @ray.remote(concurrency_groups={"io": 1})
    class A:
        @ray.method(concurrency_group="nope")
        def f(self):
            return 1

    with pytest.raises(ValueError, match="nope"):
        A.remote()

    @ray.remote
    class NoGroups:
        @ray.method(concurrency_group="io")
        def f(self):
            return 1

    with pytest.raises(ValueError, match="io"):
        NoGroups.remote()


def test_call_in_unknown_concurrency_group(quanta_node):
    g = Grouped.remote()
    try:
        ref = g.default.options(concurrency_group="nope").remote(0)
    except ValueError as e:  # refused at the call site: best
        assert "nope" in str(e)
        return
    with pytest.raises(qexc.RayError, match="nope"):
        ray.get(ref, timeout=20)


# --------------------------------------------------------------------------------------
# streaming (generator) methods
# --------------------------------------------------------------------------------------
@ray.remote
class Streamer:
    def count(self, n):
        for i in range(n):
            yield i

    def wait_between(self, go):
        yield "first"
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield "second"

    def fail_after(self, n):
        for i in range(n):
            yield i
        raise ValueError("generator failed")

    def as_list(self, n):
        return list(range(n))

    @ray.method(num_returns="streaming")
    def declared(self, n):
        yield from range(n)

    def ping(self):
        return "pong"


def test_generator_method_streams_refs(quanta_node):
    s = Streamer.remote()
    gen = s.count.remote(4)
    assert isinstance(gen, ray.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 1, 2, 3]
    assert list(s.count.remote(0)) == []
    assert [ray.get(r) for r in s.declared.remote(3)] == [0, 1, 2]


def test_generator_items_arrive_before_method_ends(quanta_node, tmp_path):
    go = tmp_path / "go"
    s = Streamer.remote()
    gen = s.wait_between.remote(str(go))
    assert ray.get(next(gen), timeout=10) == "first"
    go.touch()
    assert ray.get(next(gen), timeout=10) == "second"
    with pytest.raises(StopIteration):
        next(gen)


def test_streaming_num_returns_on_call(quanta_node):
    s = Streamer.remote()
    gen = s.count.options(num_returns="streaming").remote(3)
    assert [ray.get(r) for r in gen] == [0, 1, 2]


def test_generator_method_error(quanta_node):
    s = Streamer.remote()
    gen = s.fail_after.remote(2)
    assert ray.get(next(gen)) == 0
    assert ray.get(next(gen)) == 1
    with pytest.raises(ValueError, match="generator failed"):
        ray.get(next(gen))
    assert ray.get(s.ping.remote()) == "pong"


def test_calls_after_generator_keep_order(quanta_node):
    s = Streamer.remote()
    gen = s.count.remote(50)
    after = s.ping.remote()
    assert [ray.get(r) for r in gen] == list(range(50))
    assert ray.get(after) == "pong"


def test_async_generator_method(quanta_node, tmp_path):
    @ray.remote
    class AsyncStreamer:
        async def count(self, n, delay):
            for i in range(n):
                await asyncio.sleep(delay)
                yield i

        async def echo(self, x):
            return x

    a = AsyncStreamer.remote()
    gen = a.count.remote(5, 0.01)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(r) for r in gen] == [0, 1, 2, 3, 4]
    # a slow stream does not block other calls of an async actor
    slow = a.count.remote(3, 1.0)
    assert ray.get(a.echo.remote("quick"), timeout=5) == "quick"
    assert [ray.get(r) for r in slow] == [0, 1, 2]


def test_async_for_over_actor_generator(quanta_node):
    @ray.remote
    class Consumer:
        async def total(self, streamer, n):
            acc = 0
            async for ref in streamer.count.remote(n):
                acc += await ref
            return acc

    s = Streamer.remote()
    assert ray.get(Consumer.remote().total.remote(s, 10), timeout=30) == 45


# --------------------------------------------------------------------------------------
# cancel
# --------------------------------------------------------------------------------------
@ray.remote
class Cancellable:
    def __init__(self):
        self.ran = []

    def block(self, started, go):
        open(started, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.ran.append("block")
        return "unblocked"

    def record(self, tag):
        self.ran.append(tag)
        return tag

    def sleep_long(self, started):
        open(started, "w").close()
        time.sleep(30)
        self.ran.append("slept")
        return "slept"

    def busy_loop(self, started):
        open(started, "w").close()
        deadline = time.monotonic() + 30
        n = 0
        while time.monotonic() < deadline:
            n += 1
        self.ran.append("looped")
        return n

    def get_ran(self):
        return list(self.ran)


def _wait_file(helpers, path):
    assert helpers.wait_until(lambda: os.path.exists(path), 20), "the call never started"


def test_cancel_queued_call_on_sync_actor(quanta_node, tmp_path, helpers):
    c = Cancellable.remote()
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    blocker = c.block.remote(started, go)
    _wait_file(helpers, started)
    queued = c.record.remote("cancelled-one")
    after = c.record.remote("after")
    ray.cancel(queued)
    _assert_cancelled_quickly(queued)
    open(go, "w").close()
    assert ray.get([blocker, after], timeout=20) == ["unblocked", "after"]
    assert ray.get(c.get_ran.remote()) == ["block", "after"]


def test_cancel_call_waiting_for_its_argument(quanta_node, tmp_path):
    go = tmp_path / "go"
    c = Cancellable.remote()
    ray.get(c.record.remote("first"))
    waiting = c.record.remote(wait_for_file_then.remote(str(go), "never"))
    later = c.record.remote("later")
    ray.cancel(waiting)
    _assert_cancelled_quickly(waiting)
    # the calls queued behind the cancelled one go on without it
    assert ray.get(later, timeout=10) == "later"
    go.touch()
    assert ray.get(c.get_ran.remote()) == ["first", "later"]


def test_cancel_running_call_on_sync_actor_interrupts_sleep(quanta_node, tmp_path, helpers):
    c = Cancellable.remote()
    started = str(tmp_path / "started")
    ref = c.sleep_long.remote(started)
    _wait_file(helpers, started)
    ray.cancel(ref)
    _assert_cancelled_quickly(ref)
    # the actor lives on, with its state
    assert ray.get(c.record.remote("alive"), timeout=10) == "alive"
    assert ray.get(c.get_ran.remote()) == ["alive"]


def test_cancel_running_async_call(quanta_node, tmp_path, helpers):
    a = AsyncActor.remote()
    started = str(tmp_path / "started")
    ref = a.sleep_long.remote(started)
    _wait_file(helpers, started)
    ray.cancel(ref)
    _assert_cancelled_quickly(ref)
    assert ray.get(a.get_events.remote())[1] == ["sleep_long"]
    assert ray.get(a.echo.remote("alive")) == "alive"


def test_cancel_queued_async_call(quanta_node, tmp_path, helpers):
    a = AsyncActor.options(max_concurrency=1).remote()
    started = str(tmp_path / "started")
    running = a.sleep_long.remote(started)
    _wait_file(helpers, started)
    queued = a.echo.remote("queued")
    time.sleep(0.3)  # the call reached the actor and waits for the one slot
    ray.cancel(queued)
    _assert_cancelled_quickly(queued)
    ray.cancel(running)
    _assert_cancelled_quickly(running)
    assert ray.get(a.echo.remote("alive"), timeout=10) == "alive"


def test_cancel_running_call_on_threaded_actor(quanta_node, tmp_path, helpers):
    c = Cancellable.options(max_concurrency=2).remote()
    started = str(tmp_path / "started")
    ref = c.busy_loop.remote(started)
    _wait_file(helpers, started)
    ray.cancel(ref)
    _assert_cancelled_quickly(ref)
    assert ray.get(c.record.remote("alive"), timeout=10) == "alive"
    assert "looped" not in ray.get(c.get_ran.remote())


def test_cancel_queued_call_on_threaded_actor(quanta_node, tmp_path, helpers):
    c = Cancellable.options(max_concurrency=2).remote()
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    blocker = c.block.remote(started, go)
    _wait_file(helpers, started)
    other = c.block.remote(str(tmp_path / "started2"), go)  # both threads busy
    _wait_file(helpers, str(tmp_path / "started2"))
    queued = c.record.remote("dropped")
    ray.cancel(queued)
    _assert_cancelled_quickly(queued)
    open(go, "w").close()
    assert ray.get([blocker, other], timeout=20) == ["unblocked"] * 2
    assert "dropped" not in ray.get(c.get_ran.remote())


@pytest.mark.parametrize("kind", [
    "sync",
    "threaded",
    "async",
])
def test_cancel_right_after_submit_never_hangs(quanta_node, kind):
    cls = AsyncActor if kind == "async" else Threaded
    opts = {"max_concurrency": 2} if kind == "threaded" else {}
    a = cls.options(**opts).remote()
    ray.get(a.incr.remote() if kind != "async" else a.echo.remote(0))
    for _ in range(10):
        ref = a.echo.remote(1) if kind == "async" else a.incr.remote()
        ray.cancel(ref)
        try:
            ray.get(ref, timeout=5)  # it ran before the cancel arrived: fine
        except qexc.TaskCancelledError:
            pass
    assert ray.get(a.echo.remote(2) if kind == "async" else a.thread_name.remote(), timeout=10)


@ray.remote
def child_task(started):
    open(started, "w").close()
    time.sleep(30)
    return "child finished"


def test_cancel_actor_call_cancels_its_child_tasks(quanta_node, tmp_path, helpers):
    @ray.remote
    class Parent:
        def run_child(self, started):
            return ray.get(child_task.remote(started))

        def ping(self):
            return "pong"

    p = Parent.remote()
    started = str(tmp_path / "started")
    ref = p.run_child.remote(started)
    _wait_file(helpers, started)
    assert ray.available_resources().get("CPU") == 1.0  # the child task holds one
    ray.cancel(ref)  # recursive by default
    _assert_cancelled_quickly(ref)
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 10)
    assert ray.get(p.ping.remote(), timeout=10) == "pong"


def test_cancel_finished_call_is_a_no_op(quanta_node):
    c = Cancellable.remote()
    ref = c.record.remote("done")
    assert ray.get(ref) == "done"
    ray.cancel(ref)
    assert ray.get(ref) == "done"
    assert ray.get(c.record.remote("again")) == "again"


def test_force_cancel_of_actor_call_is_refused(quanta_node, tmp_path, helpers):
    c = Cancellable.remote()
    started = str(tmp_path / "started")
    ref = c.sleep_long.remote(started)
    _wait_file(helpers, started)
    with pytest.raises(ValueError, match="kill"):
        ray.cancel(ref, force=True)
    ray.cancel(ref)
    _assert_cancelled_quickly(ref)


def test_cancel_streaming_call(quanta_node, tmp_path):
    s = Streamer.remote()
    gen = s.wait_between.remote(str(tmp_path / "never"))
    assert ray.get(next(gen), timeout=10) == "first"
    ray.cancel(gen)
    with pytest.raises((qexc.TaskCancelledError, StopIteration)):
        ray.get(next(gen), timeout=10)
    assert ray.get(s.ping.remote(), timeout=10) == "pong"
