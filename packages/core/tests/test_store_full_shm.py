"""A full shared-memory filesystem: objects fall back to the spill directory on disk, a store
that cannot take an object anywhere raises ObjectStoreFullError naming the sizes, the default
capacity never exceeds the free shared memory, and nothing is left behind.

The node tests run a driver in a private mount namespace (``unshare --mount``) whose
``/dev/shm`` is a small tmpfs (and, for the disk-full case, whose ``TMPDIR`` -- the session
and spill directory -- is a small tmpfs too): nothing of those mounts is visible outside the
namespace, and they vanish with it. They are skipped where ``unshare``/``mount`` is not
permitted."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
from quanta import exceptions as exc
from quanta._private import shm_store
from quanta._private.node import object_store as object_store_mod
from quanta._private.node.object_store import ObjectStore
from quanta._private.shm_store import object_file_name, read_object, write_object

MiB = 1024 * 1024
SHM_SIZE = 20 * MiB
BIG = 30 * MiB  # larger than the whole small /dev/shm
SPILL_SIZE = 8 * MiB  # a spill "disk" too small for BIG as well


def _oid(i: int) -> str:
    return f"{i:056x}"


# ----------------------------------------------------------------------------------------
# running a script in a private mount namespace with a small /dev/shm
# ----------------------------------------------------------------------------------------
def _namespace_error() -> str | None:
    """Why a private mount namespace with a tmpfs cannot be made here (None when it can)."""
    if sys.platform != "linux":
        return "needs Linux mount namespaces"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare(1)/mount(8) not installed"
    d = tempfile.mkdtemp(prefix="quanta-test-ns-")
    try:
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size=1m tmpfs {d} && touch {d}/probe"],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare --mount failed: {e}"
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if r.returncode != 0:
        return f"unshare --mount + mount -t tmpfs not permitted: {r.stderr.strip()}"
    return None


_NS_ERROR = _namespace_error()
needs_namespace = pytest.mark.skipif(_NS_ERROR is not None, reason=str(_NS_ERROR))

_PRELUDE = """
import json, os, sys
report = {}
def done():
    print("REPORT " + json.dumps(report), flush=True)
"""


def _run_small_shm(script: str, *, spill_tmpfs: bool = False, timeout: float = 180) -> tuple:
    """Run ``script`` (python, with ``report``/``done()``) in a private mount namespace whose
    /dev/shm is a SHM_SIZE tmpfs; with ``spill_tmpfs`` TMPDIR (session dir, spill dir) is a
    SPILL_SIZE tmpfs. Returns (report dict, stderr, leftovers in /dev/shm and TMPDIR).
    Every process it starts is killed at the end; every file it makes is removed."""
    work = tempfile.mkdtemp(prefix="quanta-test-fullshm-")
    try:
        tmpdir = os.path.join(work, "tmp")
        os.mkdir(tmpdir)
        path = os.path.join(work, "script.py")
        with open(path, "w") as f:
            f.write(_PRELUDE + textwrap.dedent(script))
        mounts = f"mount -t tmpfs -o size={SHM_SIZE} tmpfs /dev/shm"
        if spill_tmpfs:
            mounts += f" && mount -t tmpfs -o size={SPILL_SIZE} tmpfs {tmpdir}"
        # After the script: what is left in the small filesystems (they go with the namespace).
        check = f"echo LEFT_SHM $(ls -A /dev/shm); echo LEFT_TMP $(ls -A {tmpdir})"
        env = dict(os.environ, TMPDIR=tmpdir, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'{mounts} && "$0" "$1"; rc=$?; {check}; exit $rc', sys.executable, path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"the script timed out:\n{out}\n{err}")
        finally:
            try:  # anything of the run still alive (there should be nothing)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        lines = out.splitlines()
        reports = [ln[len("REPORT "):] for ln in lines if ln.startswith("REPORT ")]
        assert proc.returncode == 0 and reports, f"script failed ({proc.returncode}):\n{out}\n{err}"
        left = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1:] for ln in lines
                if ln.startswith(("LEFT_SHM", "LEFT_TMP"))}
        return json.loads(reports[-1]), err, left
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _assert_nothing_left(left: dict) -> None:
    assert left.get("LEFT_SHM") in ([], [""]), f"left in /dev/shm: {left}"
    assert left.get("LEFT_TMP") in ([], [""]), f"left in TMPDIR: {left}"


# ----------------------------------------------------------------------------------------
# real nodes on a small /dev/shm
# ----------------------------------------------------------------------------------------
@needs_namespace
def test_put_and_task_return_larger_than_free_shm_are_spilled_to_disk():
    report, err, left = _run_small_shm(f"""
        import quanta as ray
        from quanta._private.worker_state import current_core_worker
        BIG = {BIG}
        ray.init(num_cpus=1)
        data = bytes(range(256)) * (BIG // 256)
        ref = ray.put(data)
        report["put_ok"] = ray.get(ref) == data

        @ray.remote
        def make(n):
            return bytes(reversed(range(256))) * (n // 256)

        r = make.remote(BIG)
        report["task_ok"] = ray.get(r) == bytes(reversed(range(256))) * (BIG // 256)

        @ray.remote
        def length(x):
            return len(x)

        report["arg_ok"] = ray.get(length.remote(ref)) == BIG
        stats = current_core_worker().call_daemon("store_stats")
        report["written_to_spill"] = stats["num_written_to_spill_total"]
        del ref, r
        ray.shutdown()
        done()
    """)
    assert report["put_ok"] and report["task_ok"] and report["arg_ok"], report
    assert report["written_to_spill"] >= 2, report
    assert "Errno 28" not in err and "SIGBUS" not in err, err
    _assert_nothing_left(left)


@needs_namespace
def test_an_object_pulled_from_another_node_into_a_full_shm_is_kept_on_disk():
    report, err, left = _run_small_shm(f"""
        import quanta as ray
        from quanta.cluster_utils import Cluster
        from quanta._private.worker_state import current_core_worker
        SIZE = 12 * {MiB}   # fits the small /dev/shm once, not twice
        c = Cluster(initialize_head=True, head_node_args={{"num_cpus": 0}})
        c.add_node(num_cpus=1, resources={{"member": 1}})
        c.connect()

        @ray.remote(resources={{"member": 1}})
        def make(n):
            return bytes(range(256)) * (n // 256)

        r = make.remote(SIZE)   # made in the member's store, pulled into the head's
        report["pulled_ok"] = ray.get(r) == bytes(range(256)) * (SIZE // 256)
        report["again_ok"] = len(ray.get(r)) == SIZE   # a second read of the kept copy
        stats = current_core_worker().call_daemon("store_stats")
        report["spilled"] = stats["num_spilled"]
        del r
        ray.shutdown()
        c.shutdown()
        done()
    """)
    assert report["pulled_ok"] and report["again_ok"], (report, err[-3000:])
    assert report["spilled"] >= 1, report
    _assert_nothing_left(left)


@needs_namespace
def test_put_raises_object_store_full_when_spill_disk_is_full_too():
    report, err, left = _run_small_shm(f"""
        import quanta as ray
        from quanta import exceptions as exc
        BIG = {BIG}
        ray.init(num_cpus=1)
        try:
            ray.put(b"x" * BIG)
        except exc.ObjectStoreFullError as e:
            report["put_error"] = str(e)
        except BaseException as e:
            report["put_error_other"] = repr(e)

        @ray.remote
        def make(n):
            return b"y" * n

        try:
            ray.get(make.remote(BIG))
        except exc.ObjectStoreFullError as e:
            report["task_error"] = str(e)
        except BaseException as e:
            report["task_error_other"] = repr(e)
        report["small_ok"] = ray.get(ray.put(b"z" * (1024 * 1024))) == b"z" * (1024 * 1024)
        report["shm_files"] = sorted(
            os.path.join(d, n) for d, _, names in os.walk("/dev/shm") for n in names)
        ray.shutdown()
        done()
    """, spill_tmpfs=True)
    assert "put_error" in report, report
    msg = report["put_error"]
    assert "bytes free" in msg and "spill directory" in msg and "object_store_memory" in msg
    assert "of 314" in msg  # 31457xxx bytes asked for (BIG plus the file's header)
    assert "task_error" in report, report
    assert "bytes free" in report["task_error"]
    assert report["small_ok"]
    # No half-written object file in the store directory: only the small object's.
    assert not [p for p in report["shm_files"] if p.endswith(".tmp")], report
    _assert_nothing_left(left)


@needs_namespace
def test_default_capacity_fits_a_small_shm_and_asking_for_more_warns_once():
    report, err, left = _run_small_shm("""
        import quanta as ray
        from quanta._private import resource_detect
        st = os.statvfs("/dev/shm")
        report["free"] = st.f_bavail * st.f_frsize
        report["default"] = resource_detect.default_object_store_bytes(64 * 1024**3)
        ray.init(num_cpus=1)
        report["node_store"] = ray.cluster_resources()["object_store_memory"]
        ray.shutdown()
        print("---", file=sys.stderr, flush=True)
        ray.init(num_cpus=1, object_store_memory=200 * 1024 * 1024)
        ray.get(ray.put(b"a" * (2 * 1024 * 1024)))
        ray.shutdown()
        done()
    """)
    assert 0 < report["default"] <= report["free"], report
    assert report["node_store"] <= report["free"], report
    first, second = err.split("---", 1)
    assert "exceeds the free space" not in first, first
    assert second.count("exceeds the free space of /dev/shm") == 1, second
    _assert_nothing_left(left)


# ----------------------------------------------------------------------------------------
# the file writer and the store's accounting (no node)
# ----------------------------------------------------------------------------------------
@needs_namespace
def test_write_object_falls_back_to_spill_dir_and_leaves_nothing_in_full_shm():
    """A real small tmpfs: the object goes to spill_dir whole; a too-small spill dir gives
    ObjectStoreFullError; neither attempt leaves a file in the tmpfs."""
    report, err, left = _run_small_shm(f"""
        import tempfile
        from quanta import exceptions as exc
        from quanta._private.shm_store import read_object, write_object
        shm = tempfile.mkdtemp(dir="/dev/shm")
        spill = tempfile.mkdtemp()
        data = memoryview(os.urandom(1024 * 1024) * ({BIG} // (1024 * 1024)))
        size = write_object(os.path.join(shm, "ab.qobj"), b"m", b"p", [data], spill_dir=spill)
        report["shm_after_fallback"] = os.listdir(shm)
        report["spill_after_fallback"] = os.listdir(spill)
        view = read_object(os.path.join(spill, "ab.qobj"))
        report["round_trip"] = bytes(view.buffers[0]) == bytes(data) and view.size == size
        del view
        try:  # plain write_object (no spill_dir): the OSError, and no file
            write_object(os.path.join(shm, "cd.qobj"), b"", b"p", [data])
        except OSError as e:
            report["plain_errno"] = e.errno
        report["shm_after_plain"] = os.listdir(shm)
        os.unlink(os.path.join(spill, "ab.qobj"))
        os.rmdir(spill)
        os.rmdir(shm)
        done()
    """)
    assert report["shm_after_fallback"] == [], report
    assert report["spill_after_fallback"] == ["ab.qobj"], report
    assert report["round_trip"], report
    assert report["plain_errno"] == errno.ENOSPC, report
    assert report["shm_after_plain"] == [], report
    _assert_nothing_left(left)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_object_spill_dir_full_too_raises_object_store_full(tmp_path, monkeypatch):
    shm, spill = tmp_path / "shm", tmp_path / "spill"
    shm.mkdir()
    spill.mkdir()
    monkeypatch.setattr(shm_store, "_preallocate", _enospc)
    with pytest.raises(exc.ObjectStoreFullError) as info:
        write_object(str(shm / object_file_name("ab")), b"", b"p", [memoryview(b"u" * 5000)],
                     spill_dir=str(spill))
    msg = str(info.value)
    assert "object ab of 5" in msg and "bytes free" in msg and str(spill) in msg
    assert "object_store_memory" in msg and "/dev/shm" in msg
    assert isinstance(info.value.__cause__, OSError)
    assert os.listdir(shm) == [] and os.listdir(spill) == []


def test_write_object_preallocates_pages(tmp_path, monkeypatch):
    """posix_fallocate reserves the file's pages before any byte is copied."""
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")
    calls = []
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, off, n: (calls.append((off, n)),
                                                                  real(fd, off, n))[1])
    size = write_object(str(tmp_path / "x.qobj"), b"m", b"p", [memoryview(b"u" * 5000)])
    assert calls == [(0, size)]


def test_sealed_records_object_written_to_spill_dir(tmp_path):
    store = ObjectStore(str(tmp_path / "shm"), 10 * MiB, str(tmp_path / "spill"))
    try:
        oid = _oid(1)
        size = write_object(os.path.join(store.spill_dir, object_file_name(oid)), b"", b"p",
                            [memoryview(b"q" * 1000)])
        store.sealed(oid, size)
        assert store.is_spilled(oid) and store.used_bytes == 0 and store.spilled_bytes == size
        assert store.stats()["num_written_to_spill_total"] == 1
        path = store.restore(oid)  # shm has room: moved back
        assert path == store.path_for(oid) and not store.is_spilled(oid)
        assert bytes(read_object(path).buffers[0]) == b"q" * 1000
    finally:
        store.destroy()


def test_restore_into_full_shm_serves_from_spill_dir(tmp_path, monkeypatch, caplog):
    store = ObjectStore(str(tmp_path / "shm"), 10 * MiB, str(tmp_path / "spill"))
    try:
        oid = _oid(2)
        size = write_object(os.path.join(store.spill_dir, object_file_name(oid)), b"", b"p",
                            [memoryview(b"r" * 1000)])
        store.sealed(oid, size)
        real_move = object_store_mod._move_file

        def move(src, dst):
            if dst.startswith(store.shm_dir):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_move(src, dst)

        monkeypatch.setattr(object_store_mod, "_move_file", move)
        with caplog.at_level(logging.WARNING, logger=object_store_mod.__name__):
            path = store.restore(oid)
            assert store.restore(oid) == path
        assert path == os.path.join(store.spill_dir, object_file_name(oid))
        assert store.is_spilled(oid)
        assert bytes(read_object(path).buffers[0]) == b"r" * 1000
        assert sum("is full" in r.message for r in caplog.records) == 1
        assert os.listdir(store.shm_dir) == []
    finally:
        store.destroy()


def test_failed_spill_keeps_store_over_capacity(tmp_path, monkeypatch, caplog):
    store = ObjectStore(str(tmp_path / "shm"), 1500, str(tmp_path / "spill"))
    try:
        sizes = []
        for i in (1, 2):
            oid = _oid(i)
            sizes.append(write_object(store.path_for(oid), b"", b"p", [memoryview(b"s" * 1000)]))
        store.sealed(_oid(1), sizes[0])
        monkeypatch.setattr(object_store_mod, "_move_file", _enospc)
        with caplog.at_level(logging.WARNING, logger=object_store_mod.__name__):
            store.sealed(_oid(2), sizes[1])  # spilling object 1 fails: logged, not raised
        assert not store.is_spilled(_oid(1)) and store.used_bytes == sum(sizes)
        assert any("cannot spill" in r.message for r in caplog.records)
    finally:
        store.destroy()


def test_capacity_over_free_space_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(object_store_mod, "free_bytes", lambda d: 10 * MiB)
    with caplog.at_level(logging.WARNING, logger=object_store_mod.__name__):
        store = ObjectStore(str(tmp_path / "shm"), 100 * MiB, str(tmp_path / "spill"))
        store.destroy()
        store = ObjectStore(str(tmp_path / "shm"), 5 * MiB, str(tmp_path / "spill"))
        store.destroy()
    warned = [r.message for r in caplog.records if "exceeds the free space" in r.message]
    assert len(warned) == 1 and "104857600" in warned[0] and "10485760" in warned[0]
