"""The control store's storage backends: MemoryStorage and the write-behind SqliteStorage
(pending map in front of an SQLite file, ``flush()`` in one transaction, ``on_dirty`` hook)."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from quanta._private.node.storage import MemoryStorage, SqliteStorage, open_storage


@pytest.fixture(params=["memory", "sqlite"])
def storage(request, tmp_path):
    s = MemoryStorage() if request.param == "memory" else SqliteStorage(
        str(tmp_path / "control.sqlite3"))
    yield s
    s.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "control.sqlite3")


def _on_disk(path: str, table: str) -> dict[bytes, bytes]:
    """What the file holds for ``table``, read through a separate connection."""
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, value FROM kv WHERE tbl = ?", (table,)).fetchall())
    finally:
        db.close()


# --------------------------------------------------------------------------------------
# both backends
# --------------------------------------------------------------------------------------
def test_put_get(storage):
    assert storage.get("t", b"k") is None
    storage.put("t", b"k", b"v1")
    assert storage.get("t", b"k") == b"v1"
    storage.put("t", b"k", b"v2")
    assert storage.get("t", b"k") == b"v2"
    assert storage.get("t", b"other") is None
    assert storage.get("other-table", b"k") is None


def test_empty_value_is_a_value(storage):
    storage.put("t", b"k", b"")
    assert storage.get("t", b"k") == b""
    assert list(storage.items("t")) == [(b"k", b"")]
    assert storage.delete("t", b"k") is True
    assert storage.get("t", b"k") is None


def test_delete(storage):
    storage.put("t", b"a", b"1")
    assert storage.delete("t", b"a") is True
    assert storage.get("t", b"a") is None
    assert storage.delete("t", b"a") is False
    assert storage.delete("t", b"never") is False
    assert storage.delete("no-table", b"a") is False


def test_items(storage):
    assert list(storage.items("t")) == []
    for k, v in [(b"b", b"2"), (b"a", b"1"), (b"c", b"3")]:
        storage.put("t", k, v)
    storage.put("u", b"a", b"other")
    storage.delete("t", b"c")
    storage.put("t", b"a", b"1bis")
    assert dict(storage.items("t")) == {b"a": b"1bis", b"b": b"2"}
    assert dict(storage.items("u")) == {b"a": b"other"}
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in storage.items("t"))


def test_items_is_a_snapshot(storage):
    storage.put("t", b"a", b"1")
    storage.put("t", b"b", b"2")
    it = storage.items("t")
    storage.delete("t", b"a")  # changing the table while iterating is safe
    storage.put("t", b"c", b"3")
    assert dict(it) == {b"a": b"1", b"b": b"2"}


def test_flush_keeps_contents(storage):
    storage.put("t", b"a", b"1")
    storage.put("t", b"b", b"2")
    storage.delete("t", b"b")
    storage.flush()
    storage.flush()  # nothing pending: harmless
    assert storage.get("t", b"a") == b"1"
    assert storage.get("t", b"b") is None
    assert dict(storage.items("t")) == {b"a": b"1"}


def test_tables_are_independent(storage):
    storage.put("x", b"k", b"1")
    storage.put("y", b"k", b"2")
    assert storage.delete("x", b"k") is True
    assert storage.get("y", b"k") == b"2"


def test_open_storage(path):
    assert isinstance(open_storage("memory"), MemoryStorage)
    s = open_storage(path)
    try:
        assert isinstance(s, SqliteStorage)
    finally:
        s.close()
    with pytest.raises(ValueError, match="storage"):
        open_storage("")


def test_memory_close_drops_everything():
    s = MemoryStorage()
    s.put("t", b"k", b"v")
    s.close()
    assert s.get("t", b"k") is None


# --------------------------------------------------------------------------------------
# SqliteStorage: write-behind
# --------------------------------------------------------------------------------------
def test_writes_visible_before_flush_but_not_on_disk(path):
    s = SqliteStorage(path)
    try:
        s.put("t", b"k", b"v")
        assert s.get("t", b"k") == b"v"
        assert dict(s.items("t")) == {b"k": b"v"}
        assert _on_disk(path, "t") == {}
        s.flush()
        assert _on_disk(path, "t") == {b"k": b"v"}
    finally:
        s.close()


def test_items_merges_pending_puts_and_deletes(path):
    s = SqliteStorage(path)
    try:
        for k in (b"a", b"b", b"c"):
            s.put("t", k, b"old-" + k)
        s.flush()
        s.put("t", b"a", b"new-a")  # overwrite a stored key
        s.delete("t", b"b")  # delete a stored key
        s.put("t", b"d", b"new-d")  # a key only pending
        s.put("t", b"e", b"new-e")
        s.delete("t", b"e")  # put then deleted, both pending
        s.put("u", b"z", b"z")  # another table's pending write
        assert list(s.items("t")) == [(b"a", b"new-a"), (b"c", b"old-c"), (b"d", b"new-d")]
        assert s.get("t", b"b") is None and s.get("t", b"e") is None
        assert _on_disk(path, "t") == {b"a": b"old-a", b"b": b"old-b", b"c": b"old-c"}
        s.flush()
        assert _on_disk(path, "t") == {b"a": b"new-a", b"c": b"old-c", b"d": b"new-d"}
        assert _on_disk(path, "u") == {b"z": b"z"}
    finally:
        s.close()


def test_flush_persists_across_reopen(path):
    s = SqliteStorage(path)
    s.put("t", b"a", b"1")
    s.put("t", b"b", b"2")
    s.flush()
    s.delete("t", b"a")
    s.flush()
    s.close()
    again = SqliteStorage(path)
    try:
        assert again.get("t", b"a") is None
        assert again.get("t", b"b") == b"2"
        assert dict(again.items("t")) == {b"b": b"2"}
    finally:
        again.close()


def test_close_flushes(path):
    s = SqliteStorage(path)
    s.put("t", b"a", b"1")
    s.put("t", b"b", b"2")
    s.delete("t", b"b")
    s.close()
    assert _on_disk(path, "t") == {b"a": b"1"}
    again = SqliteStorage(path)
    try:
        assert dict(again.items("t")) == {b"a": b"1"}
    finally:
        again.close()


def test_delete_of_pending_only_key(path):
    s = SqliteStorage(path)
    try:
        s.put("t", b"k", b"v")
        assert s.delete("t", b"k") is True
        assert s.get("t", b"k") is None
        assert s.delete("t", b"k") is False
        assert list(s.items("t")) == []
        s.flush()
        assert _on_disk(path, "t") == {}
        assert s.get("t", b"k") is None
    finally:
        s.close()


def test_delete_of_stored_key_reaches_disk_on_flush(path):
    s = SqliteStorage(path)
    try:
        s.put("t", b"k", b"v")
        s.flush()
        assert s.delete("t", b"k") is True
        assert s.get("t", b"k") is None
        assert _on_disk(path, "t") == {b"k": b"v"}
        s.flush()
        assert _on_disk(path, "t") == {}
    finally:
        s.close()


def test_put_after_pending_delete_wins(path):
    s = SqliteStorage(path)
    try:
        s.put("t", b"k", b"1")
        s.flush()
        s.delete("t", b"k")
        s.put("t", b"k", b"2")
        assert s.get("t", b"k") == b"2"
        s.flush()
        assert _on_disk(path, "t") == {b"k": b"2"}
    finally:
        s.close()


def test_on_dirty_called_once_per_batch(path):
    s = SqliteStorage(path)
    calls = []
    s.on_dirty = lambda: calls.append(len(calls))
    try:
        s.put("t", b"a", b"1")
        assert len(calls) == 1
        s.put("t", b"b", b"2")
        s.put("u", b"c", b"3")
        s.delete("t", b"a")
        assert len(calls) == 1  # still the same unflushed batch
        s.flush()
        assert len(calls) == 1  # flushing does not call it
        s.delete("t", b"missing")  # no change: nothing to flush
        assert len(calls) == 1
        s.delete("t", b"b")  # a stored key: a new batch
        assert len(calls) == 2
        s.put("t", b"d", b"4")
        assert len(calls) == 2
        s.flush()
        s.flush()
        s.put("t", b"e", b"5")
        assert len(calls) == 3
    finally:
        s.close()


def test_on_dirty_may_flush_at_once(path):
    s = SqliteStorage(path)
    s.on_dirty = s.flush  # write-through: on_dirty is called outside the lock
    try:
        s.put("t", b"a", b"1")
        assert _on_disk(path, "t") == {b"a": b"1"}
        s.put("t", b"b", b"2")
        assert _on_disk(path, "t") == {b"a": b"1", b"b": b"2"}
    finally:
        s.close()


def test_reopened_storage_sees_flushed_data_only(path):
    s = SqliteStorage(path)
    try:
        s.put("t", b"flushed", b"1")
        s.flush()
        s.put("t", b"pending", b"2")
        s.delete("t", b"flushed")  # pending too: the file still has it
        other = SqliteStorage(path)
        try:
            assert other.get("t", b"pending") is None
            assert other.get("t", b"flushed") == b"1"
            assert dict(other.items("t")) == {b"flushed": b"1"}
        finally:
            other.close()
    finally:
        s.close()
    last = SqliteStorage(path)
    try:
        assert dict(last.items("t")) == {b"pending": b"2"}
    finally:
        last.close()


def test_concurrent_writers_and_flushes(path):
    s = SqliteStorage(path)
    dirty = []
    s.on_dirty = lambda: dirty.append(1)

    def writer(n):
        for i in range(300):
            s.put("t", f"{n}-{i}".encode(), str(i).encode())
            if i % 3 == 0:
                s.delete("t", f"{n}-{i}".encode())

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        s.flush()
    for t in threads:
        t.join()
    expected = {f"{n}-{i}".encode(): str(i).encode()
                for n in range(4) for i in range(300) if i % 3}
    assert dict(s.items("t")) == expected
    s.close()
    assert _on_disk(path, "t") == expected
    assert dirty  # at least one batch announced


def test_failed_flush_keeps_writes_and_recovers(path):
    s = SqliteStorage(path)
    s._db.execute("PRAGMA busy_timeout=0")  # fail at once instead of after 5 s
    s.put("t", b"k", b"v")
    locker = sqlite3.connect(path, timeout=0, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(sqlite3.OperationalError):
            s.flush()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    try:
        assert s.get("t", b"k") == b"v"  # not lost for readers
        s.flush()  # and the next flush goes through
        assert _on_disk(path, "t") == {b"k": b"v"}
    finally:
        try:
            s.close()
        except sqlite3.Error:
            pass
