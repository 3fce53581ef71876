"""Storage behind the control store: tables of bytes keyed by bytes.

Two backends share one small interface: :class:`SqliteStorage` (the default: a file in the
session directory, so a restarted head keeps its state without any extra server) and
:class:`MemoryStorage` (tests, and ``--storage memory``). SQLite runs in WAL mode with
``synchronous=NORMAL``.

The file holds the cluster's KV values and the head's token, so it is private to its user:
the database and its ``-wal`` and ``-shm`` files are created (or tightened to) mode 0600,
whatever the umask, and a parent directory that storage creates is mode 0700.

Writes are *write-behind*: ``put`` and ``delete`` take effect for readers at once (a pending
map is consulted first) and reach the file on ``flush()``, in one transaction. The daemon
flushes a few milliseconds after the first unflushed write and when it stops, so bursts
(hundreds of actors or placement groups a second) cost one commit instead of one each, and a
crash loses at most those milliseconds of changes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Protocol


class Storage(Protocol):
    def put(self, table: str, key: bytes, value: bytes) -> None: ...
    def get(self, table: str, key: bytes) -> bytes | None: ...
    def delete(self, table: str, key: bytes) -> bool: ...
    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]: ...
    def flush(self) -> None: ...
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

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._tables.clear()


class SqliteStorage:
    """Tables in one SQLite file: ``kv(tbl, key, value)`` with a primary key on (tbl, key)."""

    def __init__(self, path: str) -> None:
        self.path = path
        _create_private(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, bytes], bytes | None] = {}  # None: deleted
        self.on_dirty: Callable[[], None] | None = None  # called on the first unflushed write
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # SQLite gives -wal/-shm the database's mode when it creates them; ones left by an
        # earlier run (of a looser file) are tightened here.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path + suffix, 0o600)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv (tbl TEXT NOT NULL, key BLOB NOT NULL, "
            "value BLOB NOT NULL, PRIMARY KEY (tbl, key))"
        )

    def _stage(self, table: str, key: bytes, value: bytes | None) -> None:
        with self._lock:
            first = not self._pending
            self._pending[(table, key)] = value
        if first and self.on_dirty is not None:
            self.on_dirty()

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._stage(table, bytes(key), bytes(value))

    def _stored(self, table: str, key: bytes) -> bytes | None:
        row = self._db.execute(
            "SELECT value FROM kv WHERE tbl = ? AND key = ?", (table, key)
        ).fetchone()
        return None if row is None else row[0]

    def get(self, table: str, key: bytes) -> bytes | None:
        with self._lock:
            if (table, key) in self._pending:
                return self._pending[(table, key)]
            return self._stored(table, key)

    def delete(self, table: str, key: bytes) -> bool:
        existed = self.get(table, key) is not None
        if existed:
            self._stage(table, bytes(key), None)
        return existed

    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        with self._lock:
            rows = dict(self._db.execute(
                "SELECT key, value FROM kv WHERE tbl = ?", (table,)
            ).fetchall())
            for (tbl, key), value in self._pending.items():
                if tbl != table:
                    continue
                if value is None:
                    rows.pop(key, None)
                else:
                    rows[key] = value
        return iter(sorted(rows.items()))

    def flush(self) -> None:
        """Write every pending change in one transaction."""
        with self._lock:
            if not self._pending:
                return
            db = self._db
            try:
                db.execute("BEGIN")
                for (table, key), value in self._pending.items():
                    if value is None:
                        db.execute("DELETE FROM kv WHERE tbl = ? AND key = ?", (table, key))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO kv (tbl, key, value) VALUES (?, ?, ?)",
                            (table, key, value))
                db.execute("COMMIT")
            except sqlite3.Error:
                # Keep the writes pending (readers still see them) and retry next flush.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._pending = {}

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()


def _create_private(path: str) -> None:
    """Create the database file ``path`` with mode 0600 (its directory with 0700 when it does
    not exist), or tighten an existing one to 0600, before SQLite opens it."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700)  # whatever the umask
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def open_storage(spec: str) -> Storage:
    """``"memory"`` or a path to an SQLite file. Raises ValueError for an empty spec."""
    if not spec:
        raise ValueError("storage must be 'memory' or a path to an SQLite file, got ''")
    if spec == "memory":
        return MemoryStorage()
    return SqliteStorage(spec)
