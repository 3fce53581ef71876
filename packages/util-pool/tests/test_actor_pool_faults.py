"""Dead actors leave the pool, restartable ones stay; the in-flight item raises."""

from __future__ import annotations

import os
import signal
import time

import pytest
import quanta
from quanta.exceptions import ActorDiedError, ActorUnavailableError
from quanta.util import ActorPool


@quanta.remote
class Sleeper:
    def work(self, v):
        time.sleep(v[1])
        return v[0], os.getpid()

    def pid(self):
        return os.getpid()


def work(a, v):
    return a.work.remote(v)


def collect(pool):
    out = []
    while pool.has_next():
        try:
            out.append(pool.get_next())
        except Exception as e:  # noqa: BLE001
            out.append(e)
    return out


def test_killed_actor_leaves_the_pool(quanta_node):
    a, b = Sleeper.remote(), Sleeper.remote()
    pid_a, pid_b = quanta.get([a.pid.remote(), b.pid.remote()])
    pool = ActorPool([a, b])
    for i in range(6):
        pool.submit(work, (i, 0.3))
    time.sleep(0.1)  # both actors are running their first item
    quanta.kill(a)
    out = collect(pool)
    errors = [e for e in out if isinstance(e, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ActorDiedError), out
    ok = [r for r in out if not isinstance(r, Exception)]
    assert sorted(v for v, _ in ok) == sorted(set(range(6)) - {out.index(errors[0])})
    # after the death every item ran on b
    assert {pid for _, pid in ok[1:]} == {pid_b}
    assert pid_a not in {pid for _, pid in ok[1:]}
    # a is out of the pool: only b can be popped
    assert pool.pop_idle() == b
    assert pool.pop_idle() is None


def test_killed_actor_in_map(quanta_node):
    a, b = Sleeper.remote(), Sleeper.remote()
    pool = ActorPool([a, b])
    it = pool.map(work, [(i, 0.2) for i in range(6)])
    quanta.kill(b)
    results, errors = [], []
    while True:
        try:
            results.append(next(it)[0])
        except StopIteration:
            break
        except ActorDiedError as e:
            errors.append(e)
    assert len(errors) == 1
    assert len(results) == 5


def test_restartable_actor_stays(quanta_node, helpers):
    r = Sleeper.options(max_restarts=1).remote()
    old_pid = quanta.get(r.pid.remote())
    pool = ActorPool([r])
    for i in range(3):
        pool.submit(work, (i, 0.5))
    time.sleep(0.2)
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(ActorUnavailableError):
        pool.get_next()  # the call that was running when the process died
    (v1, pid1), (v2, pid2) = pool.get_next(), pool.get_next()
    assert (v1, v2) == (1, 2)
    assert pid1 == pid2 != old_pid  # ran on the restarted actor, still in the pool
    assert pool.pop_idle() == r


def restarted_pid(actor, old_pid):
    """The actor's pid once it runs in a new process (calls sent before the caller learnt
    of the death fail with ActorUnavailableError)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            pid = quanta.get(actor.pid.remote())
        except ActorUnavailableError:
            continue
        if pid != old_pid:
            return pid
    raise AssertionError("the actor did not restart")


def test_restartable_then_dead(quanta_node):
    r = Sleeper.options(max_restarts=1).remote()
    b = Sleeper.remote()
    pool = ActorPool([r, b])
    pid = quanta.get(r.pid.remote())
    os.kill(pid, signal.SIGKILL)  # first death: restarts
    pid = restarted_pid(r, pid)
    out = list(pool.map(work, [(i, 0.0) for i in range(4)]))
    assert [v for v, _ in out] == [0, 1, 2, 3]
    pool.submit(work, (10, 1.0))  # goes to r or b; make sure r is busy too
    pool.submit(work, (11, 1.0))
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)  # second death: out of restarts, dead for good
    out = collect(pool)
    assert sum(isinstance(e, ActorDiedError) for e in out) == 1
    assert pool.pop_idle() == b
    assert pool.pop_idle() is None


def test_all_actors_dead_then_push(quanta_node):
    a = Sleeper.remote()
    pool = ActorPool([a])
    for i in range(4):
        pool.submit(work, (i, 0.3))
    time.sleep(0.1)
    quanta.kill(a)
    with pytest.raises(ActorDiedError):
        pool.get_next()
    # the waiting items are kept: a new actor runs them
    pool.push(Sleeper.remote())
    assert pool.get_next()[0] == 1
    # without one, each remaining item fails on its own and the loop ends
    quanta.kill(pool.pop_idle() or _busy_actor(pool))
    out = collect(pool)
    assert len(out) == 2 and all(isinstance(e, (ActorDiedError, RuntimeError)) for e in out)


def _busy_actor(pool):
    return next(iter(pool._members))


def test_all_dead_in_map(quanta_node):
    a = Sleeper.remote()
    pool = ActorPool([a])
    it = pool.map(work, [(i, 0.3) for i in range(5)])
    time.sleep(0.1)
    quanta.kill(a)
    errors = []
    while True:
        try:
            next(it)
        except StopIteration:
            break
        except (ActorDiedError, RuntimeError) as e:
            errors.append(type(e))
    assert errors == [ActorDiedError] + [RuntimeError] * 4


def test_error_from_another_actor_does_not_remove(quanta_node):
    """An ActorDiedError raised by the method itself (about another actor) is an ordinary
    error: the pool's actor stays."""
    @quanta.remote
    class Caller:
        def call(self, other):
            return quanta.get(other.pid.remote())

    dead = Sleeper.remote()
    quanta.kill(dead)
    c = Caller.remote()
    pool = ActorPool([c])
    pool.submit(lambda a, v: a.call.remote(v), dead)
    with pytest.raises(ActorDiedError):
        pool.get_next()
    assert pool.pop_idle() == c
