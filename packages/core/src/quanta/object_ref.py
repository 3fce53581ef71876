"""ObjectRef: a future naming an object, with its owner's address so anyone can ask for it.

Creating an ObjectRef counts one local reference in this process's core worker; dropping it
(``__del__``) hands the decrement to the core worker without taking any lock, because
``__del__`` may run during garbage collection inside any code, including code that holds the
core worker's locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from quanta._private import serialization, worker_state


class ObjectRef:
    """A reference to an object in the cluster. Pass it to tasks, ``get`` it, ``wait`` on it."""

    __slots__ = ("_id", "_owner", "_cw", "__weakref__")

    def __init__(self, object_id: bytes, owner: str, core_worker: Any, count: bool = True):
        self._id = object_id
        self._owner = owner
        self._cw = core_worker if count else None

    def __del__(self) -> None:
        cw = self._cw
        if cw is not None:
            cw.released.append(self._id)

    # --- identity -----------------------------------------------------------------------
    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> bytes:
        return self._id[:16]

    def owner_address(self) -> str:
        return self._owner

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    # --- serialization ----------------------------------------------------------------
    def __reduce__(self):
        refs = serialization.collecting()
        if refs is not None:  # inside Quanta's serialize(): the borrowing protocol
            refs.append(self)
        else:
            # Out of band (pickle.dumps, cloudpickle.dumps, a function closure): the object
            # is kept for the rest of the job, as Ray does, so the copy can always be got.
            cw = self._cw or worker_state._core_worker
            if cw is not None:
                cw.pin_out_of_band(self._id)
        return (_rebuild_ref, (self._id, self._owner))

    def __copy__(self) -> ObjectRef:
        return self  # immutable: copy.copy / deepcopy need no pickling (nor pinning)

    def __deepcopy__(self, memo: dict) -> ObjectRef:
        return self

    # --- futures ----------------------------------------------------------------------
    def future(self):
        """A ``concurrent.futures.Future`` resolved with the object's value."""
        from quanta._private.worker_state import current_core_worker

        return current_core_worker().as_future(self)

    def __await__(self):
        return asyncio.wrap_future(self.future()).__await__()


def _rebuild_ref(object_id: bytes, owner: str) -> ObjectRef:
    cw = worker_state._core_worker
    if cw is None:
        return ObjectRef(object_id, owner, None, count=False)
    pending = getattr(worker_state.decoding, "refs", None)
    if pending is not None:  # inside a decode batch: counted all at once when it ends
        ref = ObjectRef(object_id, owner, None, count=False)
        pending.append(ref)
        return ref
    return cw.deserialize_ref(object_id, owner)


class ObjectRefGenerator:
    """The refs a generator task yields, available while the task still runs.

    Iterate it (``for ref in gen``) or call ``next(gen)``; each item is an ObjectRef. The
    iteration ends when the task returns; if the task fails, the next item's ``get`` raises
    its error.
    """

    def __init__(self, task_id: bytes, owner: str, core_worker: Any) -> None:
        self._task_id = task_id
        self._owner = owner
        self._cw = core_worker
        self._next = 1

    def __iter__(self) -> Iterator[ObjectRef]:
        return self

    def __next__(self) -> ObjectRef:
        ref = self._cw.next_generator_item(self._task_id, self._next, None)
        if ref is None:
            raise StopIteration
        self._next += 1
        return ref

    def _next_sync(self, timeout_s: float | None = None) -> ObjectRef:
        ref = self._cw.next_generator_item(self._task_id, self._next, timeout_s)
        if ref is None:
            raise StopIteration
        self._next += 1
        return ref

    def __aiter__(self):
        return self

    async def __anext__(self) -> ObjectRef:
        loop = asyncio.get_running_loop()
        ref = await loop.run_in_executor(None, self._next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_or_none(self) -> ObjectRef | None:
        try:
            return self._next_sync()
        except StopIteration:
            return None

    def completed(self) -> ObjectRef:
        """A ref that is ready when the generator task has finished."""
        return self._cw.generator_completed_ref(self._task_id)

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"

    def __del__(self) -> None:
        cw = self._cw
        if cw is not None:
            cw.released_generators.append(self._task_id)
