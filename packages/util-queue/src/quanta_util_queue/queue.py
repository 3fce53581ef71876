"""A distributed first-in, first-out queue: ``quanta.util.queue`` (Ray's ``ray.util.queue``).

``Queue`` keeps its items in an *async actor* (the queue actor) that holds an
:class:`asyncio.Queue`. The :class:`Queue` object itself holds only the actor's handle and
``maxsize``, so it pickles: pass it to tasks and actors and every copy talks to the same queue.

Contract
--------
* **Order.** Items come out in the order the queue actor received them (FIFO). Puts made one
  after the other by one caller arrive in that order. Blocked producers (or consumers) are
  served in the order they started waiting, but a put (get) that finds room (an item) goes
  ahead at once, so no order is promised between several producers racing on a full queue
  (consumers on an empty one), as in Ray.
* **Blocking.** ``put`` on a full queue (``maxsize > 0``) and ``get`` on an empty one wait
  until the queue has room / an item (back-pressure), or until ``timeout`` seconds pass. The
  waiting is done inside the queue actor on its asyncio primitives (``await queue.get()``,
  with a loop timer that cancels the wait for a timeout, as ``asyncio.timeout`` and
  ``asyncio.wait_for`` do); the caller is parked in ``quanta.get`` on the call's reply.
  Nothing polls, so a blocked caller costs no CPU anywhere. A wait that times out or is
  cancelled never takes an item.
* **Timeouts.** ``timeout=None`` waits for ever; ``timeout=t`` (a number >= 0) waits at most
  ``t`` seconds, then ``get`` raises :class:`Empty` and ``put`` raises :class:`Full`.
  With ``block=False`` (or the ``*_nowait`` methods) the call never waits and ``timeout`` is
  ignored, as in :mod:`queue`.
* **Batches.** ``put_nowait_batch(items)`` inserts all of ``items`` in order or, when they do
  not all fit, none of them and raises :class:`Full`. ``get_nowait_batch(n)`` returns ``n``
  items in order or, when fewer are queued, takes none and raises :class:`Empty`.
* **Errors.** :class:`Empty` and :class:`Full` subclass :class:`queue.Empty` and
  :class:`queue.Full`. Invalid arguments raise at the call site, before anything is sent:
  ``TypeError`` for a wrong type (``maxsize`` not an int, ``timeout`` not a number, ``items``
  not iterable, ...), ``ValueError`` for a bad value (negative ``timeout`` or ``num_items``).
  ``maxsize <= 0`` means unbounded, as in :mod:`queue` and :mod:`asyncio`.
* **Shutdown.** ``shutdown()`` ends the queue actor and frees its resources; its items are
  lost. Callers blocked in ``get``/``put`` at that moment, and every later call of any method
  (``size()`` included) on any copy of the queue, raise :class:`RuntimeError` ("the queue was
  shut down"). ``shutdown(force=False)`` first asks the actor to wake its blocked callers and
  exit, then kills it if it has not exited within ``grace_period_s``; ``force=True`` kills it at
  once. Calling ``shutdown()`` again does nothing. If the queue actor dies for another reason,
  calls raise the same :class:`RuntimeError`, chained to the actor's error.
* **Interrupted callers.** When a caller blocked in ``get``/``put`` is interrupted (Ctrl-C in
  the driver, ``cancel`` of the task it runs in), its pending call on the queue actor is
  cancelled, so that a later item is not handed to a caller that has gone.
* ``put_async``/``get_async`` are coroutines with the same arguments and errors as
  ``put``/``get``: await them from async actors or any asyncio code.
* ``Queue(..., actor_options={...})`` passes the options to the queue actor's
  ``.options(...)`` (resources, ``name``, ``lifetime``, ...). The queue actor is created with
  ``max_concurrency=1_000_000`` unless the options say otherwise, so that many blocked callers
  never stop the calls that would unblock them (an async actor runs at most ``max_concurrency``
  calls at once: with the default of 1000, 1000 blocked consumers would hold up every put).
"""

from __future__ import annotations

import asyncio
import numbers
import queue as _stdqueue
from collections.abc import Iterable
from typing import Any

import quanta
from quanta import exceptions as _exc

__all__ = ["Empty", "Full", "Queue"]

_DEFAULT_MAX_CONCURRENCY = 1_000_000


class Empty(_stdqueue.Empty):
    """The queue had no item (``get`` with ``block=False``, a timed-out ``get``, or
    ``get_nowait_batch`` asking for more items than are queued)."""


class Full(_stdqueue.Full):
    """The queue had no room (``put`` with ``block=False``, a timed-out ``put``, or
    ``put_nowait_batch`` of more items than fit)."""


class _Signal:
    """A status the queue actor returns instead of an item (cheaper than raising there).

    It pickles by reference (its module-level name), so ``result is _EMPTY`` holds in the
    caller's process."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __reduce__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<quanta.util.queue.{self._name}>"


_EMPTY = _Signal("_EMPTY")
_FULL = _Signal("_FULL")
_CLOSED = _Signal("_CLOSED")

_SHUT_DOWN = "the queue was shut down"


# --------------------------------------------------------------------------------------------
# argument checks (at the call site, before anything is sent)
# --------------------------------------------------------------------------------------------
def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"'timeout' must be None or a number, got {type(timeout).__name__}: "
                        f"{timeout!r:.80}")
    if not timeout >= 0:  # also refuses NaN
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout!r}")
    return float(timeout)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name!r} must be an int, got {type(value).__name__}: {value!r:.80}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name!r} must be a non-negative int, got {value}")
    return value


def _seconds(timeout: float | None) -> str:
    return f"{timeout:g} s"


# --------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------
class Queue:
    """A first-in, first-out queue shared by the driver, tasks and actors.

    Args:
        maxsize: the most items the queue holds; ``put`` blocks (or raises :class:`Full`) when
            it holds that many. ``0`` (the default) or less: unbounded.
        actor_options: options for the queue actor, passed to ``.options(...)`` (for example
            ``{"num_cpus": 1}`` to reserve a CPU for it, or ``{"name": "jobs"}``).

    Example::

        from quanta.util.queue import Queue, Empty

        q = Queue(maxsize=100)

        @quanta.remote
        def consumer(q):
            return [q.get(timeout=10) for _ in range(3)]

        ref = consumer.remote(q)
        for i in range(3):
            q.put(i)
        assert quanta.get(ref) == [0, 1, 2]
        q.shutdown()
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, numbers.Integral):
            raise TypeError(
                f"'maxsize' must be an int, got {type(maxsize).__name__}: {maxsize!r:.80}")
        if actor_options is None:
            actor_options = {}
        elif not isinstance(actor_options, dict):
            raise TypeError(f"'actor_options' must be a dict or None, got "
                            f"{type(actor_options).__name__}")
        options = dict(actor_options)
        options.setdefault("max_concurrency", _DEFAULT_MAX_CONCURRENCY)
        self.maxsize: int = max(int(maxsize), 0)
        self.actor: Any = _QueueActorClass().options(**options).remote(self.maxsize)

    # --- plumbing -----------------------------------------------------------------------
    def _handle(self, what: str) -> Any:
        actor = self.actor
        if actor is None:
            raise RuntimeError(f"Queue.{what}: {_SHUT_DOWN}")
        return actor

    def _gone(self, what: str, error: BaseException) -> RuntimeError:
        if self.actor is None:
            return RuntimeError(f"Queue.{what}: {_SHUT_DOWN}")
        return RuntimeError(f"Queue.{what}: {_SHUT_DOWN} (or its actor died: {error})")

    def _call(self, what: str, ref: Any) -> Any:
        """Wait for the reply of one call on the queue actor."""
        try:
            result = quanta.get(ref)
        except _exc.RayActorError as e:
            raise self._gone(what, e) from e
        except BaseException:
            # Interrupted (Ctrl-C, task cancelled): do not leave a call that would take an item
            # for a caller that has gone.
            _cancel_quietly(ref)
            raise
        if result is _CLOSED:
            raise RuntimeError(f"Queue.{what}: {_SHUT_DOWN}")
        return result

    async def _acall(self, what: str, ref: Any) -> Any:
        try:
            result = await ref
        except _exc.RayActorError as e:
            raise self._gone(what, e) from e
        except BaseException:
            _cancel_quietly(ref)
            raise
        if result is _CLOSED:
            raise RuntimeError(f"Queue.{what}: {_SHUT_DOWN}")
        return result

    # --- size -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return self._call("size()", self._handle("size()").qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue (same as :meth:`size`)."""
        return self._call("qsize()", self._handle("qsize()").qsize.remote())

    def empty(self) -> bool:
        """Whether the queue holds no item."""
        return self._call("empty()", self._handle("empty()").empty.remote())

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never true when unbounded)."""
        return self._call("full()", self._handle("full()").full.remote())

    # --- put ------------------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` at the end of the queue.

        With ``block`` (the default), wait while the queue is full: for ever, or at most
        ``timeout`` seconds. Without, do not wait.

        Raises:
            Full: the queue is full and ``block`` is false, or it stayed full for ``timeout``
                seconds.
            ValueError: ``timeout`` is negative. TypeError: it is not a number.
            RuntimeError: the queue was shut down.
        """
        if not block:
            self.put_nowait(item)
            return
        timeout = _check_timeout(timeout)
        if self._call("put()", self._handle("put()").put.remote(item, timeout)) is _FULL:
            raise Full(f"put() timed out after {_seconds(timeout)}: the queue stayed full "
                       f"(maxsize {self.maxsize})")

    async def put_async(self, item: Any, block: bool = True,
                        timeout: float | None = None) -> None:
        """Coroutine version of :meth:`put` (same arguments and errors)."""
        if not block:
            actor = self._handle("put_async()")
            if await self._acall("put_async()", actor.put_nowait.remote(item)) is _FULL:
                raise Full(f"put_async(block=False): the queue is full (maxsize {self.maxsize})")
            return
        timeout = _check_timeout(timeout)
        actor = self._handle("put_async()")
        if await self._acall("put_async()", actor.put.remote(item, timeout)) is _FULL:
            raise Full(f"put_async() timed out after {_seconds(timeout)}: the queue stayed "
                       f"full (maxsize {self.maxsize})")

    def put_nowait(self, item: Any) -> None:
        """Add ``item`` if the queue has room (``put(item, block=False)``).

        Raises:
            Full: the queue is full.
        """
        if self._call("put_nowait()", self._handle("put_nowait()").put_nowait.remote(item)) \
                is _FULL:
            raise Full(f"put_nowait(): the queue is full (maxsize {self.maxsize})")

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all of ``items``, in order, if they all fit; otherwise add none.

        Raises:
            Full: the items do not all fit (nothing was added).
            TypeError: ``items`` is not iterable.
        """
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(f"'items' must be an iterable of items (a list, tuple, ...), got "
                            f"{type(items).__name__}")
        items = list(items)
        result = self._call("put_nowait_batch()",
                            self._handle("put_nowait_batch()").put_nowait_batch.remote(items))
        if result is not None:
            raise Full(f"put_nowait_batch(): cannot add {len(items)} items to a queue holding "
                       f"{result} with maxsize {self.maxsize}; none was added")

    # --- get ------------------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the item at the head of the queue.

        With ``block`` (the default), wait while the queue is empty: for ever, or at most
        ``timeout`` seconds. Without, do not wait.

        Raises:
            Empty: the queue is empty and ``block`` is false, or it stayed empty for
                ``timeout`` seconds.
            ValueError: ``timeout`` is negative. TypeError: it is not a number.
            RuntimeError: the queue was shut down.
        """
        if not block:
            return self.get_nowait()
        timeout = _check_timeout(timeout)
        item = self._call("get()", self._handle("get()").get.remote(timeout))
        if item is _EMPTY:
            raise Empty(f"get() timed out after {_seconds(timeout)}: the queue stayed empty")
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """Coroutine version of :meth:`get` (same arguments and errors)."""
        if not block:
            actor = self._handle("get_async()")
            item = await self._acall("get_async()", actor.get_nowait.remote())
            if item is _EMPTY:
                raise Empty("get_async(block=False): the queue is empty")
            return item
        timeout = _check_timeout(timeout)
        actor = self._handle("get_async()")
        item = await self._acall("get_async()", actor.get.remote(timeout))
        if item is _EMPTY:
            raise Empty(f"get_async() timed out after {_seconds(timeout)}: the queue stayed "
                        f"empty")
        return item

    def get_nowait(self) -> Any:
        """Remove and return the head item if there is one (``get(block=False)``).

        Raises:
            Empty: the queue is empty.
        """
        item = self._call("get_nowait()", self._handle("get_nowait()").get_nowait.remote())
        if item is _EMPTY:
            raise Empty("get_nowait(): the queue is empty")
        return item

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return the ``num_items`` head items, in order, if that many are queued;
        otherwise remove none.

        Raises:
            Empty: fewer than ``num_items`` items are queued (none was removed).
            TypeError: ``num_items`` is not an int. ValueError: it is negative.
        """
        num_items = _check_count("num_items", num_items)
        result = self._call("get_nowait_batch()",
                            self._handle("get_nowait_batch()").get_nowait_batch.remote(num_items))
        if type(result) is int:
            raise Empty(f"get_nowait_batch(): cannot get {num_items} items from a queue "
                        f"holding {result}; none was removed")
        return result

    # --- the end --------------------------------------------------------------------------
    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """End the queue actor and free its resources; queued items are lost.

        Args:
            force: kill the actor at once. Otherwise ask it to answer its blocked callers
                (they raise RuntimeError) and exit, and kill it if it has not done so within
                ``grace_period_s`` seconds.
            grace_period_s: see ``force``; a number >= 0.

        Afterwards every method raises RuntimeError. Calling it again does nothing.
        """
        grace = _check_timeout(grace_period_s)
        actor = self.actor
        if actor is None:
            return
        self.actor = None
        if force:
            _kill_quietly(actor)
            return
        try:
            ref = actor.shutdown.remote()
        except _exc.RayActorError:
            return  # already gone
        ready, _ = quanta.wait([ref], timeout=grace)
        if not ready:
            _kill_quietly(actor)
            return
        try:
            quanta.get(ref)
        except _exc.RayActorError:
            pass  # the actor exited, as asked
        except Exception:  # noqa: BLE001 - anything else: make sure it is gone
            _kill_quietly(actor)

    def __repr__(self) -> str:
        state = "shut down" if self.actor is None else repr(self.actor)
        return f"Queue(maxsize={self.maxsize}, {state})"


def _cancel_quietly(ref: Any) -> None:
    try:
        quanta.cancel(ref)
    except Exception:  # noqa: BLE001 - best effort: the call may be finished or the node gone
        pass


def _kill_quietly(actor: Any) -> None:
    try:
        quanta.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already dead, or the node is gone
        pass


# --------------------------------------------------------------------------------------------
# the queue actor
# --------------------------------------------------------------------------------------------
class _QueueActor:
    """Holds the items. Async (its blocking methods are coroutines), so that waiting callers
    are parked on the asyncio.Queue's futures while other calls keep running. Statuses come
    back as :class:`_Signal` values rather than exceptions (no traceback to format and ship)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.waiting: set[asyncio.Task] = set()  # calls parked in put()/get()
        self.closed = False

    def qsize(self) -> int | _Signal:
        return _CLOSED if self.closed else self.queue.qsize()

    def empty(self) -> bool | _Signal:
        return _CLOSED if self.closed else self.queue.empty()

    def full(self) -> bool | _Signal:
        return _CLOSED if self.closed else self.queue.full()

    async def put(self, item: Any, timeout: float | None) -> _Signal | None:
        q = self.queue
        if self.closed:
            return _CLOSED
        if not q.full():
            q.put_nowait(item)
            return None
        if timeout == 0:
            return _FULL
        return await self._wait(q.put(item), timeout, _FULL)

    async def get(self, timeout: float | None) -> Any:
        q = self.queue
        if self.closed:
            return _CLOSED
        if q.qsize():
            return q.get_nowait()
        if timeout == 0:
            return _EMPTY
        return await self._wait(q.get(), timeout, _EMPTY)

    async def _wait(self, coro: Any, timeout: float | None, timed_out: _Signal) -> Any:
        """Await ``q.put(item)`` / ``q.get()`` for at most ``timeout`` seconds.

        The timeout is a timer that cancels this task, which is what ``asyncio.timeout`` does
        and what ``asyncio.wait_for`` is built on from Python 3.12. It runs the queue's
        coroutine in this task (no extra task per wait, unlike ``wait_for`` before 3.12), and
        it cannot lose an item: the coroutine either returns the item to us in the same step
        or is cancelled while parked, and ``asyncio.Queue`` then leaves the item queued and
        wakes the next waiter. (``wait_for`` on Python 3.10 can drop an item that arrives just
        as the timeout fires: bpo-42130.)"""
        task = asyncio.current_task()
        assert task is not None
        self.waiting.add(task)
        expired = False
        timer = None
        if timeout is not None:
            def expire() -> None:
                nonlocal expired
                expired = True
                task.cancel()

            timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await coro
        except asyncio.CancelledError:
            if self.closed:
                result = _CLOSED  # shutdown() woke us
            elif expired:
                result = timed_out
            else:
                raise  # quanta.cancel() of this call: the runtime answers TaskCancelledError
            uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
            if uncancel is not None:
                uncancel()
            return result
        finally:
            if timer is not None:
                timer.cancel()
            self.waiting.discard(task)

    def put_nowait(self, item: Any) -> _Signal | None:
        if self.closed:
            return _CLOSED
        q = self.queue
        if q.full():
            return _FULL
        q.put_nowait(item)
        return None

    def put_nowait_batch(self, items: list) -> int | _Signal | None:
        """None when added; the current size when they do not all fit."""
        if self.closed:
            return _CLOSED
        q = self.queue
        if self.maxsize > 0 and q.qsize() + len(items) > self.maxsize:
            return q.qsize()
        for item in items:
            q.put_nowait(item)
        return None

    def get_nowait(self) -> Any:
        if self.closed:
            return _CLOSED
        q = self.queue
        if not q.qsize():
            return _EMPTY
        return q.get_nowait()

    def get_nowait_batch(self, num_items: int) -> list | int | _Signal:
        """The items; the current size when fewer than ``num_items`` are queued."""
        if self.closed:
            return _CLOSED
        q = self.queue
        if num_items > q.qsize():
            return q.qsize()
        get = q.get_nowait
        return [get() for _ in range(num_items)]

    async def shutdown(self) -> None:
        """Answer the parked callers with _CLOSED, then end this actor."""
        self.closed = True
        parked = list(self.waiting)
        for task in parked:
            task.cancel()
        if parked:
            # They reply (with _CLOSED) as they finish: wait for that before exiting.
            await asyncio.wait(parked, timeout=1.0)
        quanta.actor.exit_actor()


_actor_class: Any = None


def _QueueActorClass() -> Any:  # noqa: N802 - stands for the class
    """The ``@remote`` class of the queue actor, made on first use (cheap import)."""
    global _actor_class
    if _actor_class is None:
        _actor_class = quanta.remote(_QueueActor)
    return _actor_class
