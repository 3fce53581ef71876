"""Identifiers: 16-byte task ids from a per-process random prefix and a counter, object ids
that are a task id plus a 4-byte return index (so an object's creating task is derivable)."""

from __future__ import annotations

import itertools
import os
import struct

_prefix = os.urandom(8)
_counter = itertools.count(1)
_pack_q = struct.Struct(">Q").pack
_pack_i = struct.Struct(">I").pack
_pid = os.getpid()


def _reset_after_fork() -> None:
    global _prefix, _counter, _pid
    _prefix = os.urandom(8)
    _counter = itertools.count(1)
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reset_after_fork)


def new_task_id() -> bytes:
    """A fresh 16-byte task id, unique across processes and nodes."""
    return _prefix + _pack_q(next(_counter))


def object_id(task_id: bytes, index: int) -> bytes:
    """The id of return ``index`` (1-based; 0 is reserved for ``put``) of ``task_id``."""
    return task_id + _pack_i(index)


def new_put_id() -> bytes:
    """A fresh object id for ``put``: a task id of its own with index 0."""
    return _prefix + _pack_q(next(_counter)) + b"\0\0\0\0"


def process_prefix_hex() -> str:
    """This process's id prefix (16 hex digits): every task and object id it creates, so
    every object it owns, starts with it."""
    return _prefix.hex()



def new_actor_id() -> str:
    """A fresh actor id: 32 hex digits (16 random bytes)."""
    return os.urandom(16).hex()


class HexID:
    """An id shown as hex, compared by value (base of ``ActorID``, ``PlacementGroupID``)."""

    __slots__ = ("_hex",)

    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex

    def binary(self) -> bytes:
        return bytes.fromhex(self._hex)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._hex == self._hex

    def __hash__(self) -> int:
        return hash(self._hex)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._hex})"
