"""Actor fault tolerance: max_restarts recreates an actor whose process died, max_task_retries
resends the calls it was running, calls made during a restart wait for it, and once restarts
run out calls raise ActorDiedError."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(60)


@ray.remote
class Phoenix:
    def __init__(self, start=0, slow_restart=0.0, fail_on_restart=False):
        ctx = ray.get_runtime_context()
        if ctx.was_current_actor_reconstructed:
            if fail_on_restart:
                raise RuntimeError("refusing to restart")
            time.sleep(slow_restart)
        self.value = start
        self.calls = []

    def incr(self):
        self.value += 1
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

    def record(self, x):
        self.calls.append(x)
        return x

    def get_calls(self):
        return list(self.calls)

    def reconstructed(self):
        return ray.get_runtime_context().was_current_actor_reconstructed

    def slow(self, started, seconds):
        open(started, "w").close()
        time.sleep(seconds)
        return os.getpid()

    def stream(self, started, n):
        for i in range(n):
            if i == 1:
                open(started, "w").close()
                time.sleep(30)
            yield i

    def quit(self):
        ray.actor.exit_actor()


def _crash(handle, helpers, pid=None):
    """SIGKILL the actor's process and wait until it is gone. Returns the old pid. Pass the
    pid when the actor is busy (a pid() call would wait behind the running one)."""
    if pid is None:
        pid = ray.get(handle.pid.remote(), timeout=30)
    os.kill(pid, signal.SIGKILL)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)
    return pid


def _pid_after_restart(handle):
    """The actor's pid once it is back (the call is resent until it answers)."""
    return ray.get(handle.pid.options(max_task_retries=-1).remote(), timeout=30)


def _actor_record(handle):
    from quanta._private.worker_state import current_core_worker

    for rec in current_core_worker().call_daemon("list_actors"):
        if rec["actor_id"] == handle._quanta_actor_id:
            return rec
    return None


def _wait_dead(handle, helpers):
    assert helpers.wait_until(lambda: (_actor_record(handle) or {}).get("state") == "DEAD", 15)


def _wait_file(helpers, path):
    assert helpers.wait_until(lambda: os.path.exists(path), 20), "the call never started"


# --------------------------------------------------------------------------------------
# restarts
# --------------------------------------------------------------------------------------
def test_actor_restarts_from_its_constructor_args(quanta_node, helpers):
    a = Phoenix.options(max_restarts=1).remote(10)
    assert ray.get([a.incr.remote(), a.incr.remote()]) == [11, 12]
    assert ray.get(a.reconstructed.remote()) is False
    old = _crash(a, helpers)
    new = _pid_after_restart(a)
    assert new != old
    assert ray.get(a.get.remote()) == 10  # state rebuilt by the constructor
    assert ray.get(a.incr.remote()) == 11
    assert ray.get(a.reconstructed.remote()) is True


def test_restart_forever(quanta_node, helpers):
    a = Phoenix.options(max_restarts=-1).remote(0)
    pids = {ray.get(a.pid.remote())}
    for _ in range(3):
        _crash(a, helpers)
        pids.add(_pid_after_restart(a))
        assert ray.get(a.incr.remote()) == 1
    assert len(pids) == 4
    assert (_actor_record(a) or {}).get("num_restarts") == 3


def test_restarts_exhausted(quanta_node, helpers):
    a = Phoenix.options(max_restarts=1).remote()
    _crash(a, helpers)
    _pid_after_restart(a)
    _crash(a, helpers)
    _wait_dead(a, helpers)
    with pytest.raises(qexc.ActorDiedError, match="max_restarts|restarted") as info:
        ray.get(a.get.remote(), timeout=20)
    assert isinstance(info.value, qexc.RayActorError)


def test_no_restart_by_default(quanta_node, helpers):
    a = Phoenix.remote()
    _crash(a, helpers)
    _wait_dead(a, helpers)
    with pytest.raises(qexc.ActorDiedError, match="died unexpectedly"):
        ray.get(a.get.remote(), timeout=20)


def test_restart_reruns_constructor_with_ref_args(quanta_node, helpers):
    a = Phoenix.options(max_restarts=2).remote(ray.put(100))
    ray.get(a.incr.remote())
    _crash(a, helpers)
    _pid_after_restart(a)
    assert ray.get(a.get.remote()) == 100


def test_restart_keeps_held_resources(quanta_node, helpers):
    a = Phoenix.options(max_restarts=1, num_cpus=1).remote()
    ray.get(a.pid.remote())
    assert ray.available_resources().get("CPU") == 1.0
    _crash(a, helpers)
    _pid_after_restart(a)
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 1.0, 10)
    ray.kill(a)
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 10)


def test_named_actor_keeps_its_name_across_restarts(quanta_node, helpers):
    a = Phoenix.options(name="phoenix", max_restarts=1).remote(5)
    _crash(a, helpers)
    _pid_after_restart(a)
    h = ray.get_actor("phoenix")
    assert h == a
    assert ray.get(h.get.remote()) == 5


def test_constructor_failing_on_restart_kills_actor(quanta_node, helpers):
    a = Phoenix.options(max_restarts=3).remote(0, 0.0, True)
    assert ray.get(a.get.remote()) == 0
    _crash(a, helpers)
    _wait_dead(a, helpers)
    with pytest.raises(qexc.ActorDiedError, match="refusing to restart"):
        ray.get(a.get.remote(), timeout=20)


def test_kill_with_no_restart_false_restarts(quanta_node, helpers):
    a = Phoenix.options(max_restarts=1).remote(3)
    old = ray.get(a.pid.remote())
    ray.get(a.incr.remote())
    ray.kill(a, no_restart=False)
    assert helpers.wait_until(lambda: not helpers.pid_alive(old), 10)
    assert _pid_after_restart(a) != old
    assert ray.get(a.get.remote()) == 3
    assert ray.get(a.reconstructed.remote()) is True


def test_kill_with_no_restart_false_without_restarts_says_killed(quanta_node, helpers):
    a = Phoenix.remote()
    pid = ray.get(a.pid.remote())
    ray.kill(a, no_restart=False)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)
    _wait_dead(a, helpers)
    with pytest.raises(qexc.ActorDiedError, match=r"kill\(\)"):
        ray.get(a.get.remote(), timeout=20)


def test_kill_fails_call_in_flight_despite_retries(quanta_node, tmp_path, helpers):
    a = Phoenix.options(max_restarts=-1, max_task_retries=-1).remote()
    started = str(tmp_path / "started")
    ref = a.slow.remote(started, 10.0)
    _wait_file(helpers, started)
    ray.kill(a)
    with pytest.raises(qexc.ActorDiedError, match="kill"):
        ray.get(ref, timeout=20)


def test_kill_does_not_restart(quanta_node, helpers):
    a = Phoenix.options(max_restarts=-1).remote()
    pid = ray.get(a.pid.remote())
    ray.kill(a)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)
    with pytest.raises(qexc.ActorDiedError, match="kill"):
        ray.get(a.get.options(max_task_retries=-1).remote(), timeout=20)
    assert (_actor_record(a) or {}).get("num_restarts") == 0


def test_exit_actor_does_not_restart(quanta_node, helpers):
    a = Phoenix.options(max_restarts=-1).remote()
    pid = ray.get(a.pid.remote())
    with pytest.raises(qexc.ActorDiedError):
        ray.get(a.quit.remote(), timeout=20)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)
    with pytest.raises(qexc.ActorDiedError, match="exit_actor"):
        ray.get(a.get.remote(), timeout=20)


_DETACHED_CREATOR = """
import os, sys
import quanta as ray

ray.init(address=sys.argv[1], namespace="ft")

@ray.remote
class Durable:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

d = Durable.options(name="durable", lifetime="detached", max_restarts=1).remote(41)
print(ray.get(d.pid.remote()))
"""


def test_detached_actor_restarts_after_its_creator_exited(quanta_node, helpers):
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-c", _DETACHED_CREATOR, ray.get_runtime_context().gcs_address],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    pid = int(res.stdout.split()[-1])
    d = ray.get_actor("durable", namespace="ft")
    _crash(d, helpers, pid)
    assert ray.get(d.get.options(max_task_retries=-1).remote(), timeout=30) == 41
    assert _pid_after_restart(d) != pid
    ray.kill(d)


def test_process_exit_in_method_without_restarts(quanta_node, helpers):
    @ray.remote
    class Exiter:
        def pid(self):
            return os.getpid()

        def exit_now(self):
            os._exit(0)

    e = Exiter.remote()
    pid = ray.get(e.pid.remote())
    ref, after = e.exit_now.remote(), e.pid.remote()
    for r in (ref, after):
        with pytest.raises(qexc.ActorDiedError, match="died unexpectedly"):
            ray.get(r, timeout=20)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)


def test_sys_exit_in_method_ends_actor(quanta_node, helpers):
    import sys

    @ray.remote
    class SysExiter:
        def pid(self):
            return os.getpid()

        def leave(self):
            sys.exit(0)

    e = SysExiter.remote()
    pid = ray.get(e.pid.remote())
    with pytest.raises(qexc.RayActorError):
        ray.get(e.leave.remote(), timeout=20)
    with pytest.raises(qexc.RayActorError):
        ray.get(e.pid.remote(), timeout=20)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)


def test_constructor_crash_uses_up_restarts(quanta_node):
    @ray.remote
    class CrashInInit:
        def __init__(self):
            os._exit(1)

        def f(self):
            return 1

    c = CrashInInit.options(max_restarts=2).remote()
    with pytest.raises(qexc.ActorDiedError, match="restarted 2"):
        ray.get(c.f.remote(), timeout=30)


def test_async_actor_restarts(quanta_node, helpers):
    @ray.remote(max_restarts=1)
    class AsyncPhoenix:
        def __init__(self):
            self.n = 0

        async def incr(self):
            await asyncio.sleep(0)
            self.n += 1
            return self.n

        async def pid(self):
            return os.getpid()

    a = AsyncPhoenix.remote()
    assert ray.get(a.incr.remote()) == 1
    _crash(a, helpers)
    _pid_after_restart(a)
    assert ray.get(a.incr.remote()) == 1


# --------------------------------------------------------------------------------------
# calls in flight and calls made during a restart
# --------------------------------------------------------------------------------------
def test_max_task_retries_resends_call_in_flight(quanta_node, tmp_path, helpers):
    a = Phoenix.options(max_restarts=1, max_task_retries=1).remote()
    pid = ray.get(a.pid.remote())
    started = str(tmp_path / "started")
    ref = a.slow.remote(started, 2.0)
    _wait_file(helpers, started)
    os.remove(started)
    old = _crash(a, helpers, pid)
    new = ray.get(ref, timeout=30)  # ran again, on the new process
    assert new != old
    assert os.path.exists(started)


def test_max_task_retries_per_method_option(quanta_node, tmp_path, helpers):
    a = Phoenix.options(max_restarts=1).remote()
    pid = ray.get(a.pid.remote())
    started = str(tmp_path / "started")
    ref = a.slow.options(max_task_retries=2).remote(started, 2.0)
    _wait_file(helpers, started)
    old = _crash(a, helpers, pid)
    assert ray.get(ref, timeout=30) != old


def test_many_calls_in_flight_are_all_retried_in_order(quanta_node, tmp_path, helpers):
    a = Phoenix.options(max_restarts=1, max_task_retries=-1).remote()
    started = str(tmp_path / "started")
    pid = ray.get(a.pid.remote())
    first = a.slow.remote(started, 2.0)
    rest = [a.record.remote(i) for i in range(10)]
    _wait_file(helpers, started)
    _crash(a, helpers, pid)
    ray.get(first, timeout=30)
    assert ray.get(rest, timeout=30) == list(range(10))
    assert ray.get(a.get_calls.remote()) == list(range(10))


@ray.remote(max_restarts=1, max_task_retries=1)
class AsyncRetried:
    async def pid(self):
        return os.getpid()

    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return os.getpid()


@ray.remote(max_restarts=1, max_task_retries=1, max_concurrency=4)
class ThreadedRetried:
    def pid(self):
        return os.getpid()

    def slow(self, seconds):
        time.sleep(seconds)
        return os.getpid()


@pytest.mark.parametrize("cls", [AsyncRetried, ThreadedRetried], ids=["async", "threaded"])
def test_concurrent_calls_in_flight_are_retried(quanta_node, helpers, cls):
    a = cls.remote()
    pid = ray.get(a.pid.remote())
    refs = [a.slow.remote(2.0) for _ in range(3)]
    time.sleep(0.5)  # all three are running (the actor runs them at once)
    _crash(a, helpers, pid)
    pids = ray.get(refs, timeout=30)
    assert all(p != pid for p in pids), pids


def test_call_waiting_for_argument_across_restart(quanta_node, helpers, tmp_path):
    @ray.remote
    def later(path, value):
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return value

    go = tmp_path / "go"
    a = Phoenix.options(max_restarts=1).remote()
    pid = ray.get(a.pid.remote())
    first = a.record.remote(later.remote(str(go), "dep"))
    second = a.record.remote("after")
    _crash(a, helpers, pid)  # neither call was sent yet: they wait for the new process
    go.touch()
    assert ray.get([first, second], timeout=30) == ["dep", "after"]
    assert ray.get(a.get_calls.remote()) == ["dep", "after"]


def test_call_in_flight_without_retries_fails(quanta_node, tmp_path, helpers):
    a = Phoenix.options(max_restarts=1).remote()
    pid = ray.get(a.pid.remote())
    started = str(tmp_path / "started")
    ref = a.slow.remote(started, 5.0)
    _wait_file(helpers, started)
    _crash(a, helpers, pid)
    with pytest.raises(qexc.RayActorError):
        ray.get(ref, timeout=20)
    # the actor came back for the calls after it
    _pid_after_restart(a)
    assert ray.get(a.incr.remote()) == 1


def test_streaming_call_in_flight_fails_on_restart(quanta_node, tmp_path, helpers):
    a = Phoenix.options(max_restarts=1, max_task_retries=3).remote()
    pid = ray.get(a.pid.remote())
    started = str(tmp_path / "started")
    gen = a.stream.remote(started, 3)
    assert ray.get(next(gen), timeout=20) == 0
    _wait_file(helpers, started)
    _crash(a, helpers, pid)
    with pytest.raises(qexc.RayActorError):
        ray.get(next(gen), timeout=20)
    _pid_after_restart(a)


def test_calls_made_during_restart_wait_for_it(quanta_node, helpers):
    a = Phoenix.options(max_restarts=1).remote(7, 1.5)
    ray.get(a.pid.remote())
    _crash(a, helpers)
    assert helpers.wait_until(
        lambda: (_actor_record(a) or {}).get("state") in ("RESTARTING", "PENDING_CREATION"),
        10), _actor_record(a)
    # no retries: these must wait for the new process rather than fail
    refs = [a.record.remote(i) for i in range(5)]
    assert ray.get(refs, timeout=30) == list(range(5))
    assert ray.get(a.get.remote()) == 7
    assert ray.get(a.reconstructed.remote()) is True


def test_caller_task_sees_restart(quanta_node, helpers):
    @ray.remote
    def use(handle):
        return ray.get(handle.incr.options(max_task_retries=-1).remote(), timeout=30)

    a = Phoenix.options(max_restarts=1).remote(0)
    assert ray.get(use.remote(a)) == 1
    _crash(a, helpers)
    assert ray.get(use.remote(a)) == 1  # fresh state after the restart


def test_caller_actor_sees_restart(quanta_node, helpers):
    @ray.remote
    class Caller:
        def __init__(self, target):
            self.target = target

        def call(self):
            return ray.get(self.target.incr.options(max_task_retries=-1).remote(), timeout=30)

    a = Phoenix.options(max_restarts=1).remote(0)
    c = Caller.remote(a)
    assert ray.get(c.call.remote()) == 1
    _crash(a, helpers)
    assert ray.get(c.call.remote()) == 1


def test_retry_exceptions_on_actor_method(quanta_node):
    @ray.remote
    class Flaky:
        def __init__(self):
            self.attempts = 0

        def work(self):
            self.attempts += 1
            if self.attempts < 3:
                raise ValueError(f"attempt {self.attempts} failed")
            return self.attempts

        def attempts_so_far(self):
            return self.attempts

    f = Flaky.options(max_task_retries=3).remote()
    assert ray.get(f.work.options(retry_exceptions=True).remote(), timeout=20) == 3
    # without retry_exceptions an application error is not retried
    g = Flaky.options(max_task_retries=3).remote()
    with pytest.raises(ValueError, match="attempt 1"):
        ray.get(g.work.remote(), timeout=20)
    assert ray.get(g.attempts_so_far.remote()) == 1
