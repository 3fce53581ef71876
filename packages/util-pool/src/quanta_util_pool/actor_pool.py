"""ActorPool: spread work over a fixed set of actors (Ray's ``ray.util.ActorPool``) for Quanta.

``from quanta.util import ActorPool`` (or ``from quanta_util_pool import ActorPool``)::

    pool = ActorPool([A.remote(), A.remote()])
    for result in pool.map(lambda actor, value: actor.f.remote(value), values):
        ...

Contract
--------
*API.* The whole API of Ray's ``ActorPool``, same names, arguments and return values:
``ActorPool(actors)``, ``map(fn, values)``, ``map_unordered(fn, values)``, ``submit(fn,
value)``, ``get_next(timeout=None, ignore_if_timedout=False)``,
``get_next_unordered(timeout=None, ignore_if_timedout=False)``, ``has_next()``,
``has_free()``, ``pop_idle()`` and ``push(actor)``. ``fn(actor, value)`` must start one call
and return what ``actor.method.remote(value)`` returns: an ``ObjectRef``, or a list (tuple) of
them for a method with several returns. Each item holds one *slot* of its actor from the
moment it is dispatched until its call has finished and the pool has noticed (during a
``get_next*``), so an actor with one slot runs one item at a time. Items wait in submission
order for a free slot and ``get_next`` returns results in submission order; ``map`` is
``submit`` of every value plus an iterator of ``get_next`` (``map_unordered``: of
``get_next_unordered``). A timeout raises the builtin :class:`TimeoutError` ("Timed out
waiting for result"); ``get_next*`` with nothing left to return raises :class:`StopIteration`.

*Errors are per item.* When an item's call raises, the error is raised for that item only, by
the ``get_next*`` call that returns it or by the ``map`` iterator's ``next()``; the item is
consumed and the next ``get_next*`` / ``next()`` goes on with the following items (the map
iterator is not a generator, so an error does not end it). An ``fn`` that raises, or returns
something other than refs, fails its item the same way -- except in ``submit()``, which
raises at once as Ray's does when a slot is free (the item is then not added).

*Several returns.* When ``fn`` returns a list of refs, the item is done when all of them are,
and its result is the list of their values (``quanta.get(list)``).

*Dead and restarting actors.* An item whose call fails with ``ActorDiedError`` for its own
actor (the actor is dead for good: killed, out of restarts, constructor failed) raises that
error, and the actor leaves the pool: later items go to the other actors. An actor that is
restarting (``ActorUnavailableError``: it had restarts left) or whose method merely raised
stays in the pool. When no actor is left (all died, or the pool was built empty), items still
waiting for a slot are not dropped: ``push()`` a new actor to run them; a ``get_next*`` that
would have to wait for one raises a :class:`RuntimeError` for that item instead (the item is
consumed, so a loop over the results ends).

*Concurrency per actor.* An actor has ``max_concurrency_per_actor`` slots when that is given
(to the constructor, or to ``push``), else the ``max_concurrency`` recorded in its handle's
metadata (``handle._meta["max_concurrency"]``: Quanta records the actor's ``max_concurrency``,
1000 for an async actor that sets none, 1 otherwise), else 1. So a threaded or async actor gets
as many calls at once as it can run; ``max_concurrency_per_actor=1`` gives Ray's one call per
actor. An actor listed ``n`` times gets ``n`` times its slots (the trick Ray users use to send
a threaded actor several calls).

*Threads.* Every method may be called from any thread. All state is guarded by one lock;
``fn``, ``quanta.wait`` and ``quanta.get`` run outside it. A ``get_next`` caller *claims* the
oldest result nobody has claimed and returns exactly that one, so concurrent ``get_next``
callers never take each other's results (a caller that times out without
``ignore_if_timedout`` gives its claim back). ``has_next()`` counts results neither returned
nor claimed by a caller that is waiting for them.

*Waiting.* ``get_next*`` block in ``quanta.wait`` on the refs of the calls in flight (with
the caller's timeout), never in a polling loop with sleeps; short hand-offs between threads
use a condition variable. While waiting they free the slots of every call that finished (not
only the one asked for), so a slow item does not leave the other actors idle; with many calls
in flight one more non-blocking ``quanta.wait`` collects all finished calls at once, since
each wait costs time in proportion to the calls in flight. A caller blocked in ``quanta.wait`` notices calls that other threads
start after it began to wait when one of the calls it waits on finishes.

*Differences from Ray*, all in cases where Ray fails or loses work: results are returned in
order after ``get_next_unordered`` too (Ray raises ``ValueError``); ``ignore_if_timedout``
and ``map``'s discarding of earlier items free the actor when its call has finished, not at
once (so a later item cannot inherit a still-running call); a ``map`` iterator yields only
its own items and ends when a later ``map`` discards them; ``values`` may be any iterable.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, Union

import quanta
from quanta.exceptions import ActorDiedError, RayTaskError
from quanta.object_ref import ObjectRef

if TYPE_CHECKING:
    from quanta.actor import ActorHandle

__all__ = ["ActorPool"]

V = TypeVar("V")
#: What ``fn(actor, value)`` returns: one ref, or a list of refs (several returns).
CallRefs = Union[ObjectRef, Sequence[ObjectRef]]

_TIMEOUT_MSG = "Timed out waiting for result"
#: With at least this many other calls in flight, a wait that returns also collects every
#: other finished call (one more non-blocking quanta.wait).
_SWEEP_MIN = 16

# Item states.
_QUEUED = 0  # waiting for a free slot
_DISPATCHING = 1  # has a slot; fn is being called (outside the lock)
_RUNNING = 2  # its refs are in _waiting
_FETCHING = 3  # refs ready; its outcome is being read (outside the lock)
_DONE = 4  # outcome known

_wait = quanta.wait
_get = quanta.get


class _Member:
    """One actor of the pool and its slots."""

    __slots__ = ("actor", "capacity", "busy", "alive")

    def __init__(self, actor: Any, capacity: int) -> None:
        self.actor = actor
        self.capacity = capacity
        self.busy = 0
        self.alive = True


class _Batch:
    """The items of one ``map``/``map_unordered`` call."""

    __slots__ = ("order", "available")

    def __init__(self) -> None:
        self.order: collections.deque[_Item] = collections.deque()
        self.available = 0


class _Item:
    """One submitted value."""

    __slots__ = ("index", "fn", "value", "batch", "member", "refs", "multi", "unready",
                 "state", "ok", "outcome", "claimed", "gone", "abandoned")

    def __init__(self, index: int, fn: Callable, value: Any, batch: _Batch | None) -> None:
        self.index = index
        self.fn: Callable | None = fn
        self.value = value
        self.batch = batch
        self.member: _Member | None = None
        self.refs: list[ObjectRef] | None = None
        self.multi = False
        self.unready = 0
        self.state = _QUEUED
        self.ok = False
        self.outcome: Any = None
        self.claimed = False  # a get_next caller waits for it
        self.gone = False  # returned to a caller, or abandoned
        self.abandoned = False  # dropped by ignore_if_timedout or by a later map()

    def result(self) -> Any:
        ok, outcome = self.ok, self.outcome
        self.outcome = None
        if ok:
            return outcome
        raise outcome


def _as_refs(out: Any) -> tuple[list[ObjectRef], bool]:
    if type(out) is ObjectRef:
        return [out], False
    if isinstance(out, (list, tuple)) and all(isinstance(r, ObjectRef) for r in out):
        return list(out), True
    raise TypeError(
        "ActorPool: fn(actor, value) must return an ObjectRef or a list of ObjectRefs (what "
        f"actor.method.remote(value) returns), got {type(out).__name__}: {out!r:.80}")


def _check_concurrency(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be None or an int >= 1, got {value!r}")
    return value


def _actor_id(actor: Any) -> str | None:
    aid = getattr(actor, "_quanta_actor_id", None)
    if aid is None:
        try:
            aid = actor._actor_id.hex()
        except Exception:  # noqa: BLE001 - not a handle we know: no id
            return None
    return aid


def _is_death_of(err: BaseException, actor: Any) -> bool:
    """True when ``err`` says that ``actor`` itself is dead for good."""
    if isinstance(err, RayTaskError) or not isinstance(err, ActorDiedError):
        return False  # the method raised (possibly about another actor), or a restart
    dead = getattr(err, "actor_id", None)
    mine = _actor_id(actor)
    return dead is None or mine is None or dead == mine


def _no_actor_error() -> RuntimeError:
    return RuntimeError(
        "ActorPool has no actor left to run this item (every actor died or was removed); "
        "push() an actor before asking for more results.")


class ActorPool:
    """Run calls over a fixed pool of actors; see the module docstring for the contract.

    Args:
        actors: the actor handles to use.
        max_concurrency_per_actor: slots per actor, i.e. how many of the pool's calls an actor
            runs at once. ``None``: the ``max_concurrency`` recorded in the handle's metadata
            (1000 for async actors that set none), else 1. ``1`` gives Ray's behaviour.

    Example::

        pool = ActorPool([A.remote(), A.remote()])
        print(list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])))  # [2, 4, 6, 8]
    """

    def __init__(self, actors: Iterable[ActorHandle],
                 max_concurrency_per_actor: int | None = None) -> None:
        self._default_capacity = _check_concurrency(max_concurrency_per_actor,
                                                    "max_concurrency_per_actor")
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._members: dict[Any, _Member] = {}
        self._free: collections.deque[_Member] = collections.deque()  # one entry per free slot
        self._queue: collections.deque[_Item] = collections.deque()  # waiting for a slot
        self._order: collections.deque[_Item] = collections.deque()  # outstanding, by index
        self._done: collections.deque[_Item] = collections.deque()  # done, unclaimed
        self._waiting: dict[ObjectRef, list[_Item]] = {}  # unready ref -> its items
        self._available = 0  # outstanding items neither returned nor claimed
        self._inflight = 0  # items DISPATCHING, RUNNING or FETCHING
        self._fetching = 0  # items FETCHING
        self._abandoned_inflight = 0
        self._next_index = 0
        self._sleepers = 0  # threads in self._cond.wait
        added: list[_Member] = []
        for actor in actors:
            member = self._members.get(actor)
            capacity = self._capacity(actor, None)
            if member is None:
                member = self._members[actor] = _Member(actor, capacity)
                added.append(member)
            else:  # listed again: more slots for the same actor
                member.capacity += capacity
        # Interleave the slots so that the first calls spread over the actors.
        for k in range(max((m.capacity for m in added), default=0)):
            self._free.extend(m for m in added if k < m.capacity)

    # ------------------------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------------------------
    def map(self, fn: Callable[[ActorHandle, V], CallRefs], values: Iterable[V]
            ) -> Iterator[Any]:
        """Apply ``fn`` over ``values`` on the actors; iterate the results in order.

        Earlier results not yet returned are discarded first (as Ray does; their calls keep
        their actors until they finish). The iterator raises an item's error for that item
        and goes on with the next items on the following ``next()``.
        """
        batch = self._start_batch(fn, values)
        return _ResultIterator(self, batch, ordered=True)

    def map_unordered(self, fn: Callable[[ActorHandle, V], CallRefs], values: Iterable[V]
                      ) -> Iterator[Any]:
        """Like :meth:`map`, but yields the results as they finish."""
        batch = self._start_batch(fn, values)
        return _ResultIterator(self, batch, ordered=False)

    def submit(self, fn: Callable[[ActorHandle, V], CallRefs], value: V) -> None:
        """Schedule ``fn(actor, value)`` on a free actor now, or when one is free.

        Retrieve the result with :meth:`get_next` or :meth:`get_next_unordered`. When an
        actor is free, ``fn`` runs before ``submit`` returns and its exception propagates.
        """
        if self._abandoned_inflight:
            self._poll()
        with self._lock:
            item = self._new_item(fn, value, None)
            launch = self._dispatch_locked()
        self._run_launches(launch, raising=item)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order, waiting up to ``timeout`` seconds for it.

        Raises the item's error when its call failed, :class:`TimeoutError` when the result
        is not ready in time (with ``ignore_if_timedout`` the item is then dropped, else it
        stays next), and :class:`StopIteration` when there is no result left to return.
        """
        return self._next_ordered(self._order, None, timeout, ignore_if_timedout)

    def get_next_unordered(self, timeout: float | None = None,
                           ignore_if_timedout: bool = False) -> Any:
        """Any next result (the first that finishes), waiting up to ``timeout`` seconds.

        Errors as :meth:`get_next`; with ``ignore_if_timedout`` the oldest outstanding item is
        dropped on a timeout.
        """
        return self._next_unordered(None, timeout, ignore_if_timedout)

    def has_next(self) -> bool:
        """Whether some submitted item's result is neither returned nor claimed yet."""
        return self._available > 0

    def has_free(self) -> bool:
        """Whether an actor slot is free and no submitted item is waiting for one."""
        if self._abandoned_inflight:
            self._poll()
        with self._lock:
            return bool(self._free) and not self._queue

    def pop_idle(self) -> ActorHandle | None:
        """Remove an actor that has no call in flight from the pool and return it.

        Returns ``None`` when :meth:`has_free` is false or no actor is entirely idle.
        """
        if self._abandoned_inflight:
            self._poll()
        with self._lock:
            if not self._free or self._queue:
                return None
            for member in reversed(self._free):
                if member.busy == 0:
                    self._remove_member_locked(member)
                    return member.actor
        return None

    def push(self, actor: ActorHandle, *, max_concurrency: int | None = None) -> None:
        """Add an actor to the pool (it starts on waiting items at once).

        ``max_concurrency``: its slots; default as for the constructor. Raises
        :class:`ValueError` when the actor is already in the pool.
        """
        capacity = self._capacity(actor, _check_concurrency(max_concurrency, "max_concurrency"))
        with self._lock:
            if actor in self._members:
                raise ValueError("Actor already belongs to current ActorPool")
            member = self._members[actor] = _Member(actor, capacity)
            self._free.extend([member] * capacity)
            launch = self._dispatch_locked()
        self._run_launches(launch)

    def __repr__(self) -> str:
        return (f"ActorPool(actors={len(self._members)}, free_slots={len(self._free)}, "
                f"queued={len(self._queue)}, in_flight={self._inflight}, "
                f"results={self._available})")

    # ------------------------------------------------------------------------------------
    # submission and dispatch
    # ------------------------------------------------------------------------------------
    def _capacity(self, actor: Any, explicit: int | None) -> int:
        if explicit is not None:
            return explicit
        if self._default_capacity is not None:
            return self._default_capacity
        meta = getattr(actor, "_meta", None)
        if isinstance(meta, dict):
            value = meta.get("max_concurrency")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
        return 1

    def _start_batch(self, fn: Callable, values: Iterable[Any]) -> _Batch:
        values = list(values)
        if self._abandoned_inflight:
            self._poll()
        with self._lock:
            self._abandon_all_locked()
            batch = _Batch()
            for value in values:
                self._new_item(fn, value, batch)
            launch = self._dispatch_locked()
        self._run_launches(launch)
        return batch

    def _new_item(self, fn: Callable, value: Any, batch: _Batch | None) -> _Item:
        """Lock held."""
        item = _Item(self._next_index, fn, value, batch)
        self._next_index += 1
        order = self._order
        while order and order[0].gone:
            order.popleft()
        order.append(item)
        if batch is not None:
            batch.order.append(item)
            batch.available += 1
        self._available += 1
        self._queue.append(item)
        return item

    def _dispatch_locked(self) -> list[_Item]:
        """Give free slots to waiting items, oldest first. Lock held. Returns the items whose
        ``fn`` must now be called (outside the lock) by :meth:`_run_launches`."""
        queue, free = self._queue, self._free
        launch = []
        while queue and free:
            item = queue.popleft()
            member = free.popleft()
            member.busy += 1
            item.member = member
            item.state = _DISPATCHING
            self._inflight += 1
            launch.append(item)
        return launch

    def _run_launches(self, launch: list[_Item], raising: _Item | None = None) -> None:
        """Call ``fn`` for dispatched items, and for the items that their failures free
        slots for. An error of ``raising``'s fn propagates (that item is forgotten); others
        fail their item."""
        error: BaseException | None = None
        i = 0
        while i < len(launch):
            item = launch[i]
            i += 1
            try:
                out = item.fn(item.member.actor, item.value)
                refs, multi = _as_refs(out)
            except Exception as exc:
                with self._lock:
                    if item is raising:
                        error = exc
                        self._forget_locked(item)
                    else:
                        self._complete_locked(item, False, exc)
                    launch.extend(self._dispatch_locked())
                    self._notify_locked()
                continue
            except BaseException:  # KeyboardInterrupt and the like: undo what did not start
                with self._lock:
                    self._requeue_locked(launch[i - 1:])
                raise
            with self._lock:
                self._register_locked(item, refs, multi)
                if item.state == _DONE:  # no refs at all: done at once
                    launch.extend(self._dispatch_locked())
                self._notify_locked()
        if error is not None:
            raise error

    def _requeue_locked(self, items: list[_Item]) -> None:
        """Give dispatched items whose fn was not called their slot back and put them first
        in the queue again. Lock held."""
        for item in reversed(items):
            member = item.member
            item.member = None
            member.busy -= 1
            self._inflight -= 1
            if member.alive:
                self._free.appendleft(member)
            item.state = _QUEUED
            if item.abandoned:  # dropped meanwhile: it never runs
                item.abandoned = False
                self._abandoned_inflight -= 1
            else:
                self._queue.appendleft(item)
        self._notify_locked()

    def _register_locked(self, item: _Item, refs: list[ObjectRef], multi: bool) -> None:
        item.fn = item.value = None
        item.refs, item.multi = refs, multi
        waiting = self._waiting
        unique = dict.fromkeys(refs) if multi else refs
        item.unready = len(unique)
        if not unique:
            self._complete_locked(item, True, [])
            return
        item.state = _RUNNING
        for ref in unique:
            items = waiting.get(ref)
            if items is None:
                waiting[ref] = [item]
            else:
                items.append(item)

    def _forget_locked(self, item: _Item) -> None:
        """Undo a submit() whose fn raised. Lock held."""
        item.gone = True
        self._available -= 1
        self._release_locked(item, None)

    # ------------------------------------------------------------------------------------
    # completion
    # ------------------------------------------------------------------------------------
    def _release_locked(self, item: _Item, error: BaseException | None) -> None:
        """Give back the slot of a dispatched item; ``error``: its call's error, which may
        say that the actor is dead. Lock held."""
        member = item.member
        item.member = None
        self._inflight -= 1
        if item.abandoned:
            self._abandoned_inflight -= 1
        member.busy -= 1
        if not member.alive:
            return
        if error is not None and _is_death_of(error, member.actor):
            self._remove_member_locked(member)
        else:
            self._free.append(member)

    def _complete_locked(self, item: _Item, ok: bool, outcome: Any) -> None:
        """A dispatched item's outcome is known. Lock held."""
        self._release_locked(item, None if ok else outcome)
        item.state = _DONE
        item.fn = item.value = item.refs = None
        if item.abandoned:
            return
        item.ok, item.outcome = ok, outcome
        if not item.claimed:
            done = self._done
            while done and (done[0].gone or done[0].claimed):
                done.popleft()
            done.append(item)

    def _fail_queued_locked(self, item: _Item) -> None:
        """Fail an item that waits for a slot no actor can give. Lock held."""
        self._queue.remove(item)
        item.state = _DONE
        item.fn = item.value = None
        item.ok, item.outcome = False, _no_actor_error()

    def _notify_locked(self) -> None:
        if self._sleepers:
            self._cond.notify_all()

    def _remove_member_locked(self, member: _Member) -> None:
        member.alive = False
        self._members.pop(member.actor, None)
        self._free = collections.deque(m for m in self._free if m is not member)

    def _harvest(self, ready: list[ObjectRef]) -> None:
        """Record that ``ready`` refs have values: read the outcome of each item whose refs
        are all ready, free its slot and dispatch waiting items. Lock not held."""
        finished = []
        with self._lock:
            waiting = self._waiting
            for ref in ready:
                items = waiting.pop(ref, None)
                if items is None:
                    continue  # another thread harvested it
                for item in items:
                    item.unready -= 1
                    if item.unready == 0:
                        item.state = _FETCHING
                        finished.append(item)
            self._fetching += len(finished)
        if not finished:
            return
        outcomes: list[tuple[bool, Any]] = []
        launch: list[_Item] = []
        try:
            for item in finished:
                try:
                    value = _get(item.refs) if item.multi else _get(item.refs[0])
                    outcomes.append((True, value))
                except Exception as exc:  # noqa: BLE001 - the item's error, raised for it
                    outcomes.append((False, exc))
        finally:
            with self._lock:
                self._fetching -= len(finished)
                for item, (ok, outcome) in zip(finished, outcomes):
                    self._complete_locked(item, ok, outcome)
                for item in finished[len(outcomes):]:  # interrupted: make them waitable again
                    refs = item.refs
                    self._register_locked(item, refs, item.multi)
                launch = self._dispatch_locked()
                self._notify_locked()
            self._run_launches(launch)

    def _poll(self) -> None:
        """Harvest whatever has finished, without blocking (frees the slots of abandoned
        items so that has_free/pop_idle/submit see them)."""
        with self._lock:
            refs = list(self._waiting)
        if refs:
            ready, _ = _wait(refs, num_returns=len(refs), timeout=0)
            if ready:
                self._harvest(ready)

    # ------------------------------------------------------------------------------------
    # getting results
    # ------------------------------------------------------------------------------------
    def _abandon_locked(self, item: _Item) -> None:
        """Drop an outstanding item (ignore_if_timedout, map). Lock held."""
        if not item.claimed:
            self._available -= 1
            if item.batch is not None:
                item.batch.available -= 1
        item.gone = True
        item.outcome = None
        if item.state == _QUEUED:
            self._queue.remove(item)
        elif item.state != _DONE:
            item.abandoned = True
            self._abandoned_inflight += 1

    def _abandon_all_locked(self) -> None:
        for item in self._order:
            if not item.gone and not item.claimed:
                self._available -= 1
                if item.batch is not None:
                    item.batch.available -= 1
                item.gone = True
                item.outcome = None
                if item.state not in (_QUEUED, _DONE):
                    item.abandoned = True
                    self._abandoned_inflight += 1
        # items claimed by a get_next in another thread stay: they are that caller's
        self._order = collections.deque(i for i in self._order if not i.gone)
        self._done.clear()
        self._queue = collections.deque(i for i in self._queue if not i.gone)

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def _block(self, refs: list[ObjectRef] | None, deadline: float | None) -> bool:
        """Wait for one of ``refs`` (lock not held) or, with ``refs`` None, for a
        notification (lock held). Returns False once the deadline has passed."""
        remaining = self._remaining(deadline)
        if refs is None:
            if remaining == 0.0:
                return False
            self._sleepers += 1
            try:
                self._cond.wait(remaining)
            finally:
                self._sleepers -= 1
            return deadline is None or time.monotonic() < deadline
        ready, rest = _wait(refs, num_returns=1, timeout=remaining)
        if ready:
            if len(rest) >= _SWEEP_MIN:
                # many calls in flight: collect every finished one now, so that the next
                # results need no wait (each wait costs O(calls in flight))
                more, _ = _wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            self._harvest(ready)
            return True
        return deadline is None or time.monotonic() < deadline

    def _next_ordered(self, order: collections.deque[_Item], batch: _Batch | None,
                      timeout: float | None, ignore_if_timedout: bool) -> Any:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        lock = self._lock
        with lock:
            while order and order[0].gone:
                order.popleft()
            item = next((i for i in order if not i.claimed and not i.gone), None)
            if item is None:
                raise StopIteration("No more results to get")
            item.claimed = True
            self._available -= 1
            if item.batch is not None:
                item.batch.available -= 1
        try:
            while True:
                with lock:
                    state = item.state
                    if state == _DONE:
                        break
                    refs = None
                    if state == _RUNNING:
                        refs = list(self._waiting)
                    elif state == _QUEUED:
                        if self._waiting:
                            refs = list(self._waiting)
                        elif not self._members:
                            self._fail_queued_locked(item)
                            break
                    if refs is None and not self._block(None, deadline):
                        raise TimeoutError(_TIMEOUT_MSG)
                if refs is not None and not self._block(refs, deadline):
                    raise TimeoutError(_TIMEOUT_MSG)
        except TimeoutError:
            with lock:
                if item.state != _DONE:
                    if ignore_if_timedout:
                        self._abandon_locked(item)
                        raise TimeoutError(
                            f"{_TIMEOUT_MSG}. The task {item.index} has been ignored."
                        ) from None
                    self._unclaim_locked(item)
                    raise
        except BaseException:
            with lock:
                self._unclaim_locked(item)
            raise
        with lock:
            item.gone = True
        return item.result()

    def _unclaim_locked(self, item: _Item) -> None:
        item.claimed = False
        self._available += 1
        if item.batch is not None:
            item.batch.available += 1
        if item.state == _DONE:
            self._done.appendleft(item)
        self._notify_locked()

    def _take_done_locked(self, batch: _Batch | None) -> _Item | None:
        done = self._done
        while done and (done[0].gone or done[0].claimed):
            done.popleft()
        if batch is None:
            return done.popleft() if done else None
        for i, item in enumerate(done):
            if item.batch is batch and not item.gone and not item.claimed:
                del done[i]
                return item
        return None

    def _next_unordered(self, batch: _Batch | None, timeout: float | None,
                        ignore_if_timedout: bool) -> Any:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        lock = self._lock
        order = self._order if batch is None else batch.order
        while True:
            with lock:
                item = self._take_done_locked(batch)
                if item is None:
                    available = self._available if batch is None else batch.available
                    if available == 0:
                        raise StopIteration("No more results to get")
                    if not self._waiting and not self._inflight and not self._members:
                        # nothing can finish: fail the oldest item waiting for a slot
                        item = next((i for i in order if not i.gone and not i.claimed
                                     and i.state == _QUEUED), None)
                        if item is not None:
                            self._fail_queued_locked(item)
                if item is not None:
                    self._take_locked(item)
                    break
                refs = list(self._waiting) if self._waiting and not self._fetching else None
                if refs is None and not self._block(None, deadline):
                    self._unordered_timeout_locked(order, ignore_if_timedout)
            if refs is not None and not self._block(refs, deadline):
                with lock:
                    item = self._take_done_locked(batch)
                    if item is not None:
                        self._take_locked(item)
                        break
                    self._unordered_timeout_locked(order, ignore_if_timedout)
        return item.result()

    def _take_locked(self, item: _Item) -> None:
        """An unclaimed item is returned to the caller. Lock held."""
        item.gone = True
        self._available -= 1
        if item.batch is not None:
            item.batch.available -= 1

    def _unordered_timeout_locked(self, order: collections.deque[_Item],
                                  ignore_if_timedout: bool) -> None:
        if ignore_if_timedout:
            item = next((i for i in order if not i.gone and not i.claimed), None)
            if item is not None:
                self._abandon_locked(item)
                raise TimeoutError(f"{_TIMEOUT_MSG}. The task {item.index} has been ignored.")
        raise TimeoutError(_TIMEOUT_MSG)


class _ResultIterator(Iterator[Any]):
    """The iterator ``map``/``map_unordered`` return. Not a generator: an item's error is
    raised by ``next()`` and the following ``next()`` goes on with the next item."""

    __slots__ = ("_pool", "_batch", "_ordered")

    def __init__(self, pool: ActorPool, batch: _Batch, ordered: bool) -> None:
        self._pool = pool
        self._batch = batch
        self._ordered = ordered

    def __iter__(self) -> _ResultIterator:
        return self

    def __next__(self) -> Any:
        if self._ordered:
            return self._pool._next_ordered(self._batch.order, self._batch, None, False)
        return self._pool._next_unordered(self._batch, None, False)
