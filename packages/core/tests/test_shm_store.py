"""Tests for the shared-memory object file format and the daemon-side object store."""

from __future__ import annotations

import gc
import logging
import mmap
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

import pytest
from quanta._private import shm_store
from quanta._private.node.object_store import ObjectStore
from quanta._private.shm_store import ObjectView, object_file_name, read_object, write_object

SHM_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") else None


@pytest.fixture
def shm_dir():
    """A fresh directory in /dev/shm (tmpfs), removed afterwards."""
    d = tempfile.mkdtemp(dir=SHM_ROOT, prefix="quanta-test-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _dumps(obj):
    buffers = []
    payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return payload, buffers


def _loads(view: ObjectView):
    return pickle.loads(view.payload, buffers=view.buffers)


# ---------------------------------------------------------------------------
# file format


def test_object_file_name():
    assert object_file_name("ABCdef0123") == "abcdef0123.qobj"
    for bad in ["", "../etc", "abc/def", "xyz", "ab cd"]:
        with pytest.raises(ValueError):
            object_file_name(bad)


def test_round_trip_bytes(shm_dir):
    path = os.path.join(shm_dir, object_file_name("aa" * 28))
    bufs = [memoryview(b"x" * 1000), pickle.PickleBuffer(bytearray(b"yz" * 77)), memoryview(b"")]
    size = write_object(path, b"meta!", b"payload-bytes", bufs)
    assert size == os.path.getsize(path)
    view = read_object(path)
    assert view.size == size
    assert view.metadata == b"meta!"
    assert isinstance(view.metadata, bytes)
    assert bytes(view.payload) == b"payload-bytes"
    assert [bytes(b) for b in view.buffers] == [b"x" * 1000, b"yz" * 77, b""]
    for b in [view.payload, *view.buffers]:
        assert b.readonly
        assert b.format == "B" and b.ndim == 1
    with pytest.raises(TypeError):
        view.buffers[0][0] = 1
    assert "buffers=3" in repr(view)


def test_round_trip_empty_sections(shm_dir):
    path = os.path.join(shm_dir, "empty.qobj")
    size = write_object(path, b"", b"", [])
    view = read_object(path)
    assert view.size == size
    assert view.metadata == b"" and bytes(view.payload) == b"" and view.buffers == []


def test_round_trip_pickle_objects(shm_dir):
    obj = {"a": [1, 2, 3], "b": b"q" * 50_000, "c": bytearray(b"r" * 10)}
    payload, buffers = _dumps(obj)
    path = os.path.join(shm_dir, "obj.qobj")
    write_object(path, b"", payload, buffers)
    assert _loads(read_object(path)) == obj


def test_memoryview_of_other_formats(shm_dir):
    import array

    arr = array.array("d", [1.5, 2.5, 3.5])
    mv2d = memoryview(bytearray(range(12))).cast("B", shape=[3, 4])
    path = os.path.join(shm_dir, "fmt.qobj")
    write_object(path, b"", b"p", [memoryview(arr), mv2d])
    view = read_object(path)
    assert bytes(view.buffers[0]) == arr.tobytes()
    assert bytes(view.buffers[1]) == bytes(range(12))


def test_non_contiguous_buffer_raises(shm_dir):
    path = os.path.join(shm_dir, "nc.qobj")
    strided = memoryview(bytearray(100))[::2]
    with pytest.raises(ValueError, match="not contiguous"):
        write_object(path, b"", b"p", [strided])
    assert os.listdir(shm_dir) == []


def test_buffers_are_64_byte_aligned(shm_dir):
    np = pytest.importorskip("numpy")
    path = os.path.join(shm_dir, "align.qobj")
    # Odd sizes everywhere so that natural packing would be misaligned.
    bufs = [memoryview(bytes(n)) for n in (1, 3, 65, 127, 4099)]
    write_object(path, b"m" * 7, b"p" * 13, bufs)
    view = read_object(path)
    for b in view.buffers:
        assert np.frombuffer(b, dtype=np.uint8).ctypes.data % shm_store.ALIGNMENT == 0
    # The file offsets in the section table are aligned too (mmap is page-aligned).
    with open(path, "rb") as f:
        raw = f.read()
    num_buffers = int.from_bytes(raw[12:16], "little")
    assert num_buffers == len(bufs)
    for i in range(num_buffers):
        entry = 24 + (2 + i) * 16
        offset = int.from_bytes(raw[entry : entry + 8], "little")
        length = int.from_bytes(raw[entry + 8 : entry + 16], "little")
        assert offset % 64 == 0
        assert length == bufs[i].nbytes


def test_atomic_write_leaves_no_tmp(shm_dir):
    path = os.path.join(shm_dir, "atomic.qobj")
    write_object(path, b"m", b"p", [memoryview(b"1" * 4096)])
    write_object(path, b"m2", b"p2", [memoryview(b"2" * 10)])  # replaces
    assert os.listdir(shm_dir) == ["atomic.qobj"]
    view = read_object(path)
    assert view.metadata == b"m2" and bytes(view.buffers[0]) == b"2" * 10


def test_failed_write_removes_tmp_and_leaves_no_file(shm_dir, monkeypatch):
    path = os.path.join(shm_dir, "fail.qobj")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shm_store.os, "pwrite", boom)
    with pytest.raises(OSError):
        write_object(path, b"m", b"p", [memoryview(b"1" * 4096)])
    assert os.listdir(shm_dir) == []


def test_missing_file_raises_file_not_found(shm_dir):
    with pytest.raises(FileNotFoundError):
        read_object(os.path.join(shm_dir, "nope.qobj"))


@pytest.mark.parametrize(
    "content",
    [b"", b"short", b"NOTQUANTA" + bytes(100), b"\x00" * 4096],
    ids=["empty", "short", "bad-magic", "zeros"],
)
def test_bad_file_raises_value_error(shm_dir, content):
    path = os.path.join(shm_dir, "bad.qobj")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match="quanta object file"):
        read_object(path)


def test_truncated_and_corrupt_files_raise_value_error(shm_dir):
    path = os.path.join(shm_dir, "t.qobj")
    size = write_object(path, b"m", b"payload", [memoryview(b"z" * 1000)])
    with open(path, "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(ValueError, match="truncated"):
        read_object(path)

    write_object(path, b"m", b"payload", [memoryview(b"z" * 1000)])
    with open(path, "r+b") as f:  # bump the version field
        f.seek(8)
        f.write((99).to_bytes(2, "little"))
    with pytest.raises(ValueError, match="version"):
        read_object(path)

    write_object(path, b"m", b"payload", [memoryview(b"z" * 1000)])
    with open(path, "r+b") as f:  # claim a huge number of buffers
        f.seek(12)
        f.write((10**6).to_bytes(4, "little"))
    with pytest.raises(ValueError, match="corrupt"):
        read_object(path)

    write_object(path, b"m", b"payload", [memoryview(b"z" * 1000)])
    with open(path, "r+b") as f:  # point the buffer section past the end
        f.seek(24 + 2 * 16)
        f.write((10**9).to_bytes(8, "little"))
    with pytest.raises(ValueError, match="corrupt"):
        read_object(path)


def test_numpy_zero_copy_read_only_and_survives_unlink(shm_dir):
    np = pytest.importorskip("numpy")
    original = {"x": np.arange(100_000, dtype=np.float64), "y": np.ones((300, 200), np.int32)}
    payload, buffers = _dumps(original)
    assert len(buffers) == 2
    path = os.path.join(shm_dir, object_file_name("ab" * 28))
    write_object(path, b"", payload, buffers)

    view = read_object(path)
    first = _loads(view)
    second = _loads(view)
    for key, arr in first.items():
        np.testing.assert_array_equal(arr, original[key])
        assert not arr.flags.writeable
        assert arr.flags.aligned
        with pytest.raises(ValueError):
            arr[0] = 0
        # Two independent unpicklings share memory: nothing was copied.
        assert np.shares_memory(arr, second[key])
        # The base chain ends in the mmap of the object file.
        base = arr
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
        assert not np.shares_memory(arr, original[key])

    del view, second
    os.unlink(path)
    gc.collect()
    assert os.listdir(shm_dir) == []
    for key, arr in first.items():
        np.testing.assert_array_equal(arr, original[key])
    assert float(first["x"].sum()) == float(original["x"].sum())


def test_numpy_fortran_order_round_trip(shm_dir):
    np = pytest.importorskip("numpy")
    arr = np.asfortranarray(np.arange(60, dtype=np.int16).reshape(6, 10))
    payload, buffers = _dumps(arr)
    path = os.path.join(shm_dir, "f.qobj")
    write_object(path, b"", payload, buffers)
    out = _loads(read_object(path))
    np.testing.assert_array_equal(out, arr)
    assert out.flags.f_contiguous


def test_numpy_memoryview_buffers(shm_dir):
    np = pytest.importorskip("numpy")
    arr = np.arange(1000, dtype=np.float32).reshape(10, 100)
    path = os.path.join(shm_dir, "mv.qobj")
    write_object(path, b"", b"p", [memoryview(arr)])
    got = np.frombuffer(read_object(path).buffers[0], dtype=np.float32).reshape(10, 100)
    np.testing.assert_array_equal(got, arr)
    with pytest.raises(ValueError, match="not contiguous"):
        write_object(path, b"", b"p", [memoryview(arr[:, ::2])])


def test_written_by_another_process(shm_dir):
    path = os.path.join(shm_dir, "child.qobj")
    src_dir = os.path.dirname(os.path.dirname(shm_store.__file__))
    code = (
        "import sys; from quanta._private.shm_store import write_object; "
        "write_object(sys.argv[1], b'meta', b'payload', [memoryview(b'c' * 200_000)])"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(src_dir))
    subprocess.run([sys.executable, "-c", code, path], check=True, env=env, timeout=60)
    view = read_object(path)
    assert view.metadata == b"meta" and bytes(view.buffers[0]) == b"c" * 200_000


# ---------------------------------------------------------------------------
# object store


@pytest.fixture(params=["disk-spill", "shm-spill"])
def make_store(request, shm_dir, tmp_path):
    """Factory for stores; spill dir on disk (cross-filesystem move) or on tmpfs (rename)."""
    stores = []
    extra_dirs = []

    def make(capacity: int) -> ObjectStore:
        if request.param == "disk-spill":
            spill = str(tmp_path / f"spill{len(stores)}")
        else:
            spill = tempfile.mkdtemp(dir=SHM_ROOT, prefix="quanta-test-spill-")
            extra_dirs.append(spill)
        store = ObjectStore(os.path.join(shm_dir, f"store{len(stores)}"), capacity, spill)
        stores.append(store)
        return store

    try:
        yield make
    finally:
        for store in stores:
            store.destroy()
        for d in extra_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _oid(i: int) -> str:
    return f"{i:056x}"


def _put(store: ObjectStore, i: int, nbytes: int = 1000) -> int:
    """Write object i (content derived from i) and report it sealed; return its size."""
    size = write_object(
        store.path_for(_oid(i)), b"meta%d" % i, b"payload%d" % i, [memoryview(bytes([i]) * nbytes)]
    )
    store.sealed(_oid(i), size)
    return size


def _check_content(path: str, i: int, nbytes: int = 1000) -> None:
    view = read_object(path)
    assert view.metadata == b"meta%d" % i
    assert bytes(view.payload) == b"payload%d" % i
    assert bytes(view.buffers[0]) == bytes([i]) * nbytes


def _obj_size() -> int:
    with tempfile.TemporaryDirectory(dir=SHM_ROOT) as d:
        return write_object(os.path.join(d, "x"), b"meta1", b"payload1", [memoryview(bytes(1000))])


SIZE = _obj_size()


def test_store_basic_accounting(make_store):
    store = make_store(10 * SIZE)
    assert os.path.isdir(store.shm_dir) and os.path.isdir(store.spill_dir)
    assert store.path_for(_oid(1)) == os.path.join(store.shm_dir, object_file_name(_oid(1)))
    for i in range(1, 4):
        assert _put(store, i) == SIZE
    assert store.used_bytes == 3 * SIZE
    assert store.spilled_bytes == 0
    assert store.capacity_bytes == 10 * SIZE
    assert store.num_objects == 3
    assert store.contains(_oid(2)) and store.contains(_oid(2).upper())
    assert not store.contains(_oid(9))
    assert not store.is_spilled(_oid(1))
    stats = store.stats()
    assert stats["used_bytes"] == 3 * SIZE and stats["num_objects"] == 3
    assert stats["num_spilled"] == 0 and stats["capacity_bytes"] == 10 * SIZE
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")


def test_spill_lru_order(make_store):
    store = make_store(3 * SIZE)
    for i in range(1, 5):
        _put(store, i)
    # Object 1 was least recently used: it is spilled, the rest stay.
    assert store.is_spilled(_oid(1))
    assert not os.path.exists(store.path_for(_oid(1)))
    assert os.listdir(store.spill_dir) == [object_file_name(_oid(1))]
    assert [store.is_spilled(_oid(i)) for i in (2, 3, 4)] == [False] * 3
    assert store.used_bytes == 3 * SIZE
    assert store.spilled_bytes == SIZE
    assert store.num_objects == 4
    _put(store, 5)
    assert store.is_spilled(_oid(2))
    assert store.stats()["num_spills_total"] == 2


def test_touch_changes_spill_order(make_store):
    store = make_store(3 * SIZE)
    for i in range(1, 4):
        _put(store, i)
    store.touch(_oid(1))
    store.touch(_oid(99))  # unknown: ignored
    _put(store, 4)
    assert not store.is_spilled(_oid(1))
    assert store.is_spilled(_oid(2))
    # Order is now 3, 1, 4 (LRU first); touching 3 makes 1 the LRU.
    store.touch(_oid(3))
    _put(store, 5)
    assert store.is_spilled(_oid(1))
    assert not store.is_spilled(_oid(3)) and not store.is_spilled(_oid(4))


def test_restore_brings_object_back_intact(make_store):
    store = make_store(2 * SIZE)
    for i in range(1, 4):
        _put(store, i)
    assert store.is_spilled(_oid(1))
    path = store.restore(_oid(1))
    assert path == store.path_for(_oid(1))
    assert not store.is_spilled(_oid(1))
    _check_content(path, 1)
    # Making room spilled the LRU resident object (2), not 3.
    assert store.is_spilled(_oid(2)) and not store.is_spilled(_oid(3))
    assert store.used_bytes == 2 * SIZE and store.spilled_bytes == SIZE
    assert sorted(os.listdir(store.spill_dir)) == [object_file_name(_oid(2))]
    assert store.stats()["num_restores_total"] == 1
    # Restoring a resident object is a touch: now 3 is LRU.
    assert store.restore(_oid(1)) == path
    _put(store, 4)
    assert store.is_spilled(_oid(3)) and not store.is_spilled(_oid(1))
    for i in (2, 3):
        _check_content(store.restore(_oid(i)), i)


def test_restore_unknown_raises_key_error(make_store):
    store = make_store(SIZE)
    with pytest.raises(KeyError, match=_oid(7)):
        store.restore(_oid(7))
    _put(store, 7)
    store.delete(_oid(7))
    with pytest.raises(KeyError, match="not in this node's object store"):
        store.restore(_oid(7))


def test_delete_frees_usage(make_store):
    store = make_store(2 * SIZE)
    for i in range(1, 4):
        _put(store, i)
    assert store.is_spilled(_oid(1))
    store.delete(_oid(1))  # spilled
    store.delete(_oid(2))  # resident
    store.delete(_oid(42))  # unknown: no error
    assert store.num_objects == 1
    assert store.used_bytes == SIZE and store.spilled_bytes == 0
    assert os.listdir(store.spill_dir) == []
    assert os.listdir(store.shm_dir) == [object_file_name(_oid(3))]
    assert not store.contains(_oid(1)) and not store.contains(_oid(2))
    # Room was freed: a new object does not spill anything.
    _put(store, 4)
    assert store.spilled_bytes == 0


def test_just_sealed_object_is_not_spilled(make_store):
    store = make_store(5 * SIZE // 2)
    _put(store, 1)
    _put(store, 2)
    big = _put(store, 3, nbytes=2 * 1000)
    assert store.is_spilled(_oid(1)) and store.is_spilled(_oid(2))
    assert not store.is_spilled(_oid(3))
    assert store.used_bytes == big <= store.capacity_bytes


def test_oversized_object_stays_in_shm_with_warning(make_store, caplog):
    store = make_store(2 * SIZE)
    _put(store, 1)
    with caplog.at_level(logging.WARNING, logger="quanta._private.node.object_store"):
        big = _put(store, 2, nbytes=10_000)
    assert big > store.capacity_bytes
    assert not store.is_spilled(_oid(2)) and store.is_spilled(_oid(1))
    assert store.used_bytes == big
    assert any("exceeds the object store capacity" in r.message for r in caplog.records)
    _check_content(store.path_for(_oid(2)), 2, nbytes=10_000)
    # Restoring the small one spills the oversized one (it is LRU now).
    _check_content(store.restore(_oid(1)), 1)
    assert store.is_spilled(_oid(2))
    # Restoring the oversized one again works, over capacity.
    with caplog.at_level(logging.WARNING, logger="quanta._private.node.object_store"):
        _check_content(store.restore(_oid(2)), 2, nbytes=10_000)
    assert store.is_spilled(_oid(1)) and store.used_bytes == big


def test_reseal_updates_size(make_store):
    store = make_store(3 * SIZE)
    for i in range(1, 5):
        _put(store, i)
    assert store.is_spilled(_oid(1))
    # Object 1 is rewritten in shm (e.g. reconstructed) and sealed again.
    _put(store, 1, nbytes=500)
    assert not store.is_spilled(_oid(1))
    assert not os.path.exists(os.path.join(store.spill_dir, object_file_name(_oid(1))))
    _check_content(store.path_for(_oid(1)), 1, nbytes=500)
    assert store.num_objects == 4
    assert store.used_bytes + store.spilled_bytes == 3 * SIZE + os.path.getsize(
        store.path_for(_oid(1))
    )


def test_reader_mapping_survives_spill_and_delete(make_store):
    np = pytest.importorskip("numpy")
    store = make_store(1)  # tiny: every new object spills the previous one
    arr = np.arange(50_000, dtype=np.int64)
    payload, buffers = _dumps(arr)
    oid = _oid(1)
    store.sealed(oid, write_object(store.path_for(oid), b"", payload, buffers))
    mapped = _loads(read_object(store.path_for(oid)))
    _put(store, 2)
    assert store.is_spilled(oid)
    np.testing.assert_array_equal(mapped, arr)
    restored = _loads(read_object(store.restore(oid)))
    store.delete(oid)
    gc.collect()
    np.testing.assert_array_equal(mapped, arr)
    np.testing.assert_array_equal(restored, arr)


def test_destroy_leaves_nothing(make_store):
    store = make_store(2 * SIZE)
    for i in range(1, 5):
        _put(store, i)
    # An object that was written but never reported, and a crashed writer's tmp file.
    write_object(store.path_for(_oid(77)), b"", b"p", [memoryview(b"u" * 100)])
    with open(store.path_for(_oid(78)) + ".123-456.tmp", "wb") as f:
        f.write(b"partial")
    assert store.spilled_bytes > 0
    store.destroy()
    assert not os.path.exists(store.shm_dir)
    assert not os.path.exists(store.spill_dir)
    assert store.num_objects == 0 and store.used_bytes == 0 and store.spilled_bytes == 0
    store.destroy()  # idempotent
    store.delete(_oid(1))  # harmless
    with pytest.raises(RuntimeError):
        store.sealed(_oid(5), 10)
    with pytest.raises(RuntimeError):
        store.restore(_oid(1))


def test_store_rejects_bad_arguments(shm_dir):
    with pytest.raises(ValueError):
        ObjectStore(os.path.join(shm_dir, "a"), -1, os.path.join(shm_dir, "b"))
    with pytest.raises(ValueError):
        ObjectStore(os.path.join(shm_dir, "a"), 10, os.path.join(shm_dir, "a"))
    store = ObjectStore(os.path.join(shm_dir, "a"), 10, os.path.join(shm_dir, "b"))
    try:
        with pytest.raises(ValueError):
            store.sealed(_oid(1), -5)
        with pytest.raises(ValueError):
            store.sealed("not-hex", 5)
    finally:
        store.destroy()
