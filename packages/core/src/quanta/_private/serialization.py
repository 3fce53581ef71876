"""Serialization of values: cloudpickle with pickle protocol 5 and out-of-band buffers.

``serialize`` returns the pickle payload, the out-of-band buffers (numpy, Arrow ...) and the
ObjectRefs found inside the value. The caller decides where the pieces go: inline in a message
(small values) or laid out in a shared-memory file (large values), so that ``get`` of a numpy
array returns a zero-copy read-only view of the mapped file.

Refs found while pickling are collected through a thread-local context that
``ObjectRef.__reduce__`` appends to; the owner of the outer value keeps them alive as long as
the outer value lives (see ``core_worker``).
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import cloudpickle

_PROTOCOL = 5
_ctx = threading.local()
_SIMPLE = (int, float, str, bytes, bool, type(None))


class SerializedObject:
    __slots__ = ("payload", "buffers", "contained", "size")

    def __init__(self, payload: bytes, buffers: list, contained: list) -> None:
        self.payload = payload
        self.buffers = buffers
        self.contained = contained
        self.size = len(payload) + sum(b.raw().nbytes for b in buffers)


def collecting() -> list | None:
    """The list ObjectRef.__reduce__ should append to, or None outside serialize()."""
    return getattr(_ctx, "refs", None)


def serialize(value: Any) -> SerializedObject:
    """Pickle ``value``; raise TypeError naming the value when it cannot be pickled."""
    if type(value) in _SIMPLE:
        return SerializedObject(pickle.dumps(value, _PROTOCOL), [], [])
    buffers: list = []
    prev = getattr(_ctx, "refs", None)
    refs: list = []
    _ctx.refs = refs
    try:
        payload = cloudpickle.dumps(value, protocol=_PROTOCOL, buffer_callback=buffers.append)
    except Exception as exc:
        raise TypeError(
            f"Could not serialize {_describe(value)}: {type(exc).__name__}: {exc}. "
            "Values passed to or returned from tasks, and values given to put(), must be "
            "picklable by cloudpickle."
        ) from exc
    finally:
        _ctx.refs = prev
    return SerializedObject(payload, buffers, refs)


def serialize_exception(exc: BaseException) -> bytes:
    """Pickle an exception; fall back to a plain RuntimeError carrying its text."""
    try:
        return cloudpickle.dumps(exc, protocol=_PROTOCOL)
    except Exception:
        return cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"), protocol=_PROTOCOL)


def error_value(exc: BaseException) -> tuple:
    """A stored return value that raises ``exc`` on ``get`` (see messages.VALUE_ERROR)."""
    from quanta._private.messages import VALUE_ERROR

    return (VALUE_ERROR, serialize_exception(exc), None)


def deserialize(payload, buffers=None) -> Any:
    return pickle.loads(payload, buffers=buffers or ())


def dumps_function(fn: Any) -> bytes:
    try:
        return cloudpickle.dumps(fn, protocol=_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"Could not serialize the remote function {_describe(fn)}: "
            f"{type(exc).__name__}: {exc}. A remote function and everything it captures "
            "(globals, closures) must be picklable by cloudpickle."
        ) from exc


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} of type {type(value).__qualname__}"
