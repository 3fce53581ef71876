"""The control store's SQLite file holds the cluster's KV values (and the head's token): it,
its -wal and -shm files are private to their user (0600) whatever the umask, and a directory
that storage creates for it is 0700."""

from __future__ import annotations

import os
import stat

import pytest
from quanta._private.node.storage import SqliteStorage


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # the usual default: files 0644, directories 0755
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_wal_and_shm_are_private(tmp_path, loose_umask):
    path = str(tmp_path / "control.sqlite3")
    s = SqliteStorage(path)
    try:
        s.put("kv", b"secret", b"value")
        s.flush()
        for name in (path, path + "-wal", path + "-shm"):
            assert os.path.exists(name), name
            assert _mode(name) == 0o600, f"{name}: {oct(_mode(name))}"
    finally:
        s.close()
    assert _mode(path) == 0o600


def test_an_existing_loose_file_is_tightened(tmp_path, loose_umask):
    path = str(tmp_path / "control.sqlite3")
    s = SqliteStorage(path)
    s.put("kv", b"k", b"v")
    s.close()
    os.chmod(path, 0o644)
    for suffix in ("-wal", "-shm"):  # as an earlier run of a loose file may have left them
        with open(path + suffix, "ab"):
            pass
        os.chmod(path + suffix, 0o644)
    s = SqliteStorage(path)
    try:
        assert s.get("kv", b"k") == b"v"
        for name in (path, path + "-wal", path + "-shm"):
            assert _mode(name) == 0o600, f"{name}: {oct(_mode(name))}"
    finally:
        s.close()


def test_a_directory_storage_creates_is_private(tmp_path, loose_umask):
    parent = tmp_path / "state"
    path = str(parent / "control.sqlite3")
    s = SqliteStorage(path)
    try:
        s.put("kv", b"k", b"v")
        s.flush()
        assert _mode(str(parent)) == 0o700
        assert _mode(path) == 0o600
    finally:
        s.close()
