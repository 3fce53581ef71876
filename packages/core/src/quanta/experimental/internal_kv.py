"""The cluster's internal key-value store, as Ray's ``ray.experimental.internal_kv``.

Keys and values are ``bytes`` (``str`` is encoded as UTF-8); ``namespace`` separates users of
the store. The store lives in the node's control store: with ``quanta start --head
--storage PATH`` it survives a restart of the head.
"""

from __future__ import annotations

from quanta._private.worker_state import current_core_worker


def _bytes(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"internal_kv: {what} must be bytes or str, got {type(value).__name__}")


def _ns(namespace: bytes | str | None) -> str | None:
    if namespace is None:
        return None
    return namespace.decode() if isinstance(namespace, bytes) else str(namespace)


def _internal_kv_initialized() -> bool:
    from quanta._private.worker_state import current_core_worker_or_none

    return current_core_worker_or_none() is not None


def _internal_kv_put(key: bytes | str, value: bytes | str, overwrite: bool = True,
                     *, namespace: bytes | str | None = None) -> bool:
    """Store ``value`` under ``key``. Returns True when the key already existed (as Ray);
    with ``overwrite=False`` an existing value is kept."""
    k, v = _bytes(key, "key"), _bytes(value, "value")
    call = current_core_worker().call_daemon
    existed = call("kv_get", _ns(namespace), k) is not None
    call("kv_put", _ns(namespace), k, v, bool(overwrite))
    return existed


def _internal_kv_get(key: bytes | str, *, namespace: bytes | str | None = None
                     ) -> bytes | None:
    return current_core_worker().call_daemon("kv_get", _ns(namespace), _bytes(key, "key"))


def _internal_kv_exists(key: bytes | str, *, namespace: bytes | str | None = None) -> bool:
    return _internal_kv_get(key, namespace=namespace) is not None


def _internal_kv_del(key: bytes | str, *, del_by_prefix: bool = False,
                     namespace: bytes | str | None = None) -> int:
    """Delete ``key`` (or every key starting with it). Returns how many were deleted."""
    k = _bytes(key, "key")
    call = current_core_worker().call_daemon
    keys = call("kv_keys", _ns(namespace), k) if del_by_prefix else [k]
    return sum(1 for key_ in keys if call("kv_del", _ns(namespace), key_))


def _internal_kv_list(prefix: bytes | str, *, namespace: bytes | str | None = None
                      ) -> list[bytes]:
    return current_core_worker().call_daemon("kv_keys", _ns(namespace), _bytes(prefix, "prefix"))
