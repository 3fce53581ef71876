"""Results in the order tasks finish: ``as_completed`` and ``map_unordered``.

``quanta.get(refs)`` returns nothing until the slowest task is done, and ``quanta.get`` called on
each ref in a loop waits for them in submission order, so a fast task that was submitted late
waits behind a slow one. The remedy is a ``quanta.wait`` loop; these two helpers are that loop,
written once, with the same names and arguments as Ray's ``ray.util.as_completed`` and
``ray.util.map_unordered`` (Ray passes extra keyword arguments on to ``wait``; here the two that
``wait`` accepts, ``timeout`` and ``fetch_local``, are spelt out).

Both are plain functions that check their arguments at once and return a generator, so a bad
argument raises where the call is written rather than at the first ``next()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import quanta  # attributes are looked up at call time: safe even while quanta is importing

if TYPE_CHECKING:
    from quanta import ObjectRef

__all__ = ["DEFAULT_BACKPRESSURE_SIZE", "DEFAULT_CHUNK_SIZE", "as_completed", "map_unordered"]

#: Results waited for per ``quanta.wait`` call (its ``num_returns``), as in Ray.
DEFAULT_CHUNK_SIZE = 10
#: Tasks ``map_unordered`` keeps in flight before it waits for some to finish, as in Ray.
DEFAULT_BACKPRESSURE_SIZE = 100


def as_completed(
    refs: Iterable[ObjectRef],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> Iterator[Any]:
    """Yield the values of ``refs`` as their tasks finish, in batches of up to ``chunk_size``.

    Parameters:
        refs: object refs, each at most once (``quanta.wait`` rejects duplicates).
        chunk_size: how many results each ``quanta.wait`` call waits for (``num_returns``);
            ``1`` yields each result as soon as it is ready, larger batches cost fewer calls.
        yield_obj_refs: yield the ready refs themselves instead of their values.
        timeout: the most seconds to wait for each batch; a batch that is only partly ready by
            then is yielded as it is, and one with nothing ready raises
            :class:`quanta.exceptions.GetTimeoutError`. ``None`` waits as long as it takes.
        fetch_local: passed to ``quanta.wait``.

    Yields: values (or refs), in completion order between batches; within a batch, in the
    order of ``refs``.

    Raises: :class:`ValueError` for a ``chunk_size`` below 1; at iteration, the error of a task
    that failed (the values before it have been yielded), and ``GetTimeoutError``.
    """
    _check_chunk_size(chunk_size)
    return _drain(list(refs), chunk_size, yield_obj_refs, timeout, fetch_local)


def map_unordered(
    fn: Any,
    items: Iterable[Any],
    *,
    backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> Iterator[Any]:
    """Call ``fn.remote(item)`` for every item and yield the results as the tasks finish.

    At most ``backpressure_size`` tasks are in flight: once that many are pending, the next
    item is submitted only after ``chunk_size`` of them have finished (and been yielded). Items
    are read lazily, so ``items`` may be a generator of unbounded length.

    Parameters:
        fn: anything with a ``.remote(item)`` method: a remote function, an actor method, or
            either one after ``.options(...)``.
        items: the arguments, one task each.
        backpressure_size: the most tasks in flight at once, ``None`` for no limit.
        chunk_size, yield_obj_refs, timeout, fetch_local: as for :func:`as_completed`.

    Raises: :class:`TypeError` when ``fn`` has no ``.remote``; :class:`ValueError` for a
    ``chunk_size`` or ``backpressure_size`` below 1; at iteration, as :func:`as_completed`.
    """
    if not callable(getattr(fn, "remote", None)):
        raise TypeError(
            "map_unordered() needs a remote function or actor method (something with "
            f".remote()), got {type(fn).__name__}: {fn!r:.80}"
        )
    _check_chunk_size(chunk_size)
    if backpressure_size is not None and (
        isinstance(backpressure_size, bool)
        or not isinstance(backpressure_size, int)
        or backpressure_size < 1
    ):
        raise ValueError(
            f"backpressure_size must be None or an int >= 1, got {backpressure_size!r}"
        )
    return _map(fn, items, backpressure_size, chunk_size, yield_obj_refs, timeout, fetch_local)


def _check_chunk_size(chunk_size: object) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def _next_batch(
    pending: list[ObjectRef],
    chunk_size: int,
    yield_obj_refs: bool,
    timeout: float | None,
    fetch_local: bool,
) -> tuple[Iterator[Any], list[ObjectRef]]:
    """Wait for one batch; return an iterator over what to yield, and the refs still pending."""
    ready, rest = quanta.wait(
        pending,
        num_returns=min(chunk_size, len(pending)),
        timeout=timeout,
        fetch_local=fetch_local,
    )
    if not ready:
        from quanta.exceptions import GetTimeoutError

        raise GetTimeoutError(
            f"no result became ready within timeout={timeout} s; {len(pending)} still pending"
        )
    # One get() per ref, so that a failed task raises after the values before it were yielded.
    return (iter(ready) if yield_obj_refs else map(quanta.get, ready)), rest


def _drain(
    pending: list[ObjectRef],
    chunk_size: int,
    yield_obj_refs: bool,
    timeout: float | None,
    fetch_local: bool,
) -> Iterator[Any]:
    while pending:
        batch, pending = _next_batch(pending, chunk_size, yield_obj_refs, timeout, fetch_local)
        yield from batch


def _map(
    fn: Any,
    items: Iterable[Any],
    backpressure_size: int | None,
    chunk_size: int,
    yield_obj_refs: bool,
    timeout: float | None,
    fetch_local: bool,
) -> Iterator[Any]:
    pending: list[ObjectRef] = []
    for item in items:
        pending.append(fn.remote(item))
        if backpressure_size is not None and len(pending) >= backpressure_size:
            batch, pending = _next_batch(pending, chunk_size, yield_obj_refs, timeout, fetch_local)
            yield from batch
    yield from _drain(pending, chunk_size, yield_obj_refs, timeout, fetch_local)
