"""Storage behind the control store: tables of bytes keyed by bytes.

Two backends share one small interface: :class:`SqliteStorage` (the default: a file in the
session directory, so a restarted head keeps its state without any extra server) and
:class:`MemoryStorage` (tests, and ``--storage memory``). Writes are few (function exports,
KV, jobs, nodes), so SQLite runs in WAL mode with ``synchronous=NORMAL``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Protocol


class Storage(Protocol):
    def put(self, table: str, key: bytes, value: bytes) -> None: ...
    def get(self, table: str, key: bytes) -> bytes | None: ...
    def delete(self, table: str, key: bytes) -> bool: ...
    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]: ...
    def close(self) -> None: ...


class MemoryStorage:
    """Tables in a dict; gone with the process."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[bytes, bytes]] = {}

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._tables.setdefault(table, {})[key] = value

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._tables.get(table, {}).get(key)

    def delete(self, table: str, key: bytes) -> bool:
        return self._tables.get(table, {}).pop(key, None) is not None

    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._tables.get(table, {}).items()))

    def close(self) -> None:
        self._tables.clear()


class SqliteStorage:
    """Tables in one SQLite file: ``kv(tbl, key, value)`` with a primary key on (tbl, key)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv (tbl TEXT NOT NULL, key BLOB NOT NULL, "
            "value BLOB NOT NULL, PRIMARY KEY (tbl, key))"
        )

    def put(self, table: str, key: bytes, value: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO kv (tbl, key, value) VALUES (?, ?, ?)",
                (table, key, value),
            )

    def get(self, table: str, key: bytes) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM kv WHERE tbl = ? AND key = ?", (table, key)
            ).fetchone()
        return None if row is None else row[0]

    def delete(self, table: str, key: bytes) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM kv WHERE tbl = ? AND key = ?", (table, key))
        return cur.rowcount > 0

    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE tbl = ? ORDER BY key", (table,)
            ).fetchall()
        return iter(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_storage(spec: str) -> Storage:
    """``"memory"`` or a path to an SQLite file. Raises ValueError for an empty spec."""
    if not spec:
        raise ValueError("storage must be 'memory' or a path to an SQLite file, got ''")
    if spec == "memory":
        return MemoryStorage()
    return SqliteStorage(spec)
