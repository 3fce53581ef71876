"""Tests for quanta._private.resource_detect: fake cgroup v1/v2 trees under tmp_path."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from quanta._private import resource_detect as rd

GiB = 1024**3
MiB = 1024**2


def put(root, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def affinity(monkeypatch):
    """Set the number of CPUs in the (fake) affinity mask."""

    def set_affinity(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)

    set_affinity(64)
    return set_affinity


# ---------------------------------------------------------------------------------- CPUs


def test_no_cgroup_files_uses_affinity(tmp_path, affinity):
    affinity(6)
    assert rd.detect_cpu_quota(str(tmp_path)) is None
    assert rd.detect_cpus(str(tmp_path)) == 6.0


def test_affinity_smaller_than_quota(tmp_path, affinity):
    affinity(2)
    put(tmp_path, "proc/self/cgroup", "0::/\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "400000 100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 4.0
    assert rd.detect_cpus(str(tmp_path)) == 2.0


def test_no_sched_getaffinity_falls_back_to_cpu_count(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert rd.detect_cpus(str(tmp_path)) == 12.0


def test_affinity_error_falls_back_to_cpu_count(tmp_path, monkeypatch):
    def boom(pid):
        raise OSError("nope")

    monkeypatch.setattr(os, "sched_getaffinity", boom, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert rd.detect_cpus(str(tmp_path)) == 3.0


def test_cpu_count_none(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert rd.detect_cpus(str(tmp_path)) == 1.0


def test_v2_fractional_quota_rounds_down(tmp_path, affinity):
    put(tmp_path, "proc/self/cgroup", "0::/\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 1.5
    cpus = rd.detect_cpus(str(tmp_path))
    assert cpus == 1.0 and isinstance(cpus, float)


def test_v2_quota_below_one_cpu_is_at_least_one(tmp_path, affinity):
    put(tmp_path, "proc/self/cgroup", "0::/\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "50000 100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 0.5
    assert rd.detect_cpus(str(tmp_path)) == 1.0


def test_v2_max_means_no_quota(tmp_path, affinity):
    affinity(8)
    put(tmp_path, "proc/self/cgroup", "0::/\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "max 100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) is None
    assert rd.detect_cpus(str(tmp_path)) == 8.0


def test_v2_walks_own_cgroup_path(tmp_path, affinity):
    put(tmp_path, "proc/self/cgroup", "0::/user.slice/app.scope\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "max 100000\n")
    put(tmp_path, "sys/fs/cgroup/user.slice/cpu.max", "800000 100000\n")
    put(tmp_path, "sys/fs/cgroup/user.slice/app.scope/cpu.max", "300000 100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 3.0
    assert rd.detect_cpus(str(tmp_path)) == 3.0


def test_v2_stricter_ancestor_wins(tmp_path, affinity):
    put(tmp_path, "proc/self/cgroup", "0::/user.slice/app.scope\n")
    put(tmp_path, "sys/fs/cgroup/user.slice/cpu.max", "200000 100000\n")
    put(tmp_path, "sys/fs/cgroup/user.slice/app.scope/cpu.max", "max 100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 2.0


def test_v2_container_view_missing_path_reads_root(tmp_path, affinity):
    # The cgroup path names a host cgroup that is not visible; the container's own cgroup is
    # mounted at the root of /sys/fs/cgroup.
    put(tmp_path, "proc/self/cgroup", "0::/system.slice/docker-abc.scope\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "200000 100000\n")
    assert rd.detect_cpus(str(tmp_path)) == 2.0


def test_v2_dotdot_path_reads_root_only(tmp_path, affinity):
    put(tmp_path, "proc/self/cgroup", "0::/../../outside\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "300000 100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 3.0


def test_v2_garbage_is_ignored(tmp_path, affinity):
    affinity(4)
    put(tmp_path, "proc/self/cgroup", "garbage line\n0::/\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "lots of cpu\n")
    assert rd.detect_cpu_quota(str(tmp_path)) is None
    assert rd.detect_cpus(str(tmp_path)) == 4.0


def test_v2_empty_cpu_max_is_ignored(tmp_path, affinity):
    put(tmp_path, "sys/fs/cgroup/cpu.max", "   \n")
    assert rd.detect_cpu_quota(str(tmp_path)) is None


def test_v2_quota_without_cgroup_file(tmp_path, affinity):
    # No /proc/self/cgroup at all: the hierarchy root is still read.
    put(tmp_path, "sys/fs/cgroup/cpu.max", "100000 100000\n")
    assert rd.detect_cpus(str(tmp_path)) == 1.0


def test_v1_quota(tmp_path, affinity):
    affinity(16)
    put(
        tmp_path,
        "proc/self/cgroup",
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
    )
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000\n")
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 2.5
    assert rd.detect_cpus(str(tmp_path)) == 2.0


def test_v1_quota_in_own_path(tmp_path, affinity):
    put(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/job/42\n")
    put(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
    put(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    put(tmp_path, "sys/fs/cgroup/cpu/job/42/cpu.cfs_quota_us", "50000\n")
    put(tmp_path, "sys/fs/cgroup/cpu/job/42/cpu.cfs_period_us", "10000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 5.0
    assert rd.detect_cpus(str(tmp_path)) == 5.0


def test_v1_unlimited(tmp_path, affinity):
    affinity(8)
    put(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/\n")
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) is None
    assert rd.detect_cpus(str(tmp_path)) == 8.0


def test_v1_missing_period_is_ignored(tmp_path, affinity):
    put(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) is None


def test_v1_and_v2_minimum(tmp_path, affinity):
    put(tmp_path, "sys/fs/cgroup/cpu.max", "700000 100000\n")
    put(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "300000\n")
    put(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert rd.detect_cpu_quota(str(tmp_path)) == 3.0


def test_real_system_cpus():
    cpus = rd.detect_cpus()
    assert isinstance(cpus, float)
    assert cpus >= 1.0 and cpus.is_integer()
    assert cpus <= (os.cpu_count() or 1)


# ---------------------------------------------------------------------------------- memory

MEMINFO = "MemTotal:       16777216 kB\nMemFree:         1234567 kB\nMemAvailable:    8000000 kB\n"


def test_meminfo_only(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    assert rd.detect_memory_bytes(str(tmp_path)) == 16 * GiB


def test_v2_memory_max(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "proc/self/cgroup", "0::/\n")
    put(tmp_path, "sys/fs/cgroup/memory.max", f"{2 * GiB}\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == 2 * GiB


def test_v2_memory_max_unlimited(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "sys/fs/cgroup/memory.max", "max\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == 16 * GiB


def test_v2_memory_nested(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "proc/self/cgroup", "0::/a/b\n")
    put(tmp_path, "sys/fs/cgroup/memory.max", "max\n")
    put(tmp_path, "sys/fs/cgroup/a/memory.max", f"{3 * GiB}\n")
    put(tmp_path, "sys/fs/cgroup/a/b/memory.max", f"{5 * GiB}\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == 3 * GiB


def test_limit_above_host_total_is_capped(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "sys/fs/cgroup/memory.max", f"{64 * GiB}\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == 16 * GiB


def test_v1_memory_limit(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "proc/self/cgroup", "9:memory:/docker/abc\n")
    put(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{GiB}\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == GiB


def test_v1_memory_unlimited_absurd_value(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "proc/self/cgroup", "9:memory:/\n")
    put(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == 16 * GiB


def test_memory_garbage_ignored(tmp_path):
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "sys/fs/cgroup/memory.max", "lots\n")
    put(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "0\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == 16 * GiB


def test_no_meminfo_uses_limit(tmp_path):
    put(tmp_path, "sys/fs/cgroup/memory.max", f"{GiB}\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == GiB


def test_nothing_known_falls_back(tmp_path):
    assert rd.detect_memory_bytes(str(tmp_path)) == 4 * GiB


def test_malformed_meminfo(tmp_path):
    put(tmp_path, "proc/meminfo", "MemTotal: lots kB\n")
    put(tmp_path, "sys/fs/cgroup/memory.max", f"{GiB}\n")
    assert rd.detect_memory_bytes(str(tmp_path)) == GiB


def test_real_system_memory():
    mem = rd.detect_memory_bytes()
    assert isinstance(mem, int) and mem > 0


# ---------------------------------------------------------------------------------- object store


def fake_statvfs(monkeypatch, free_bytes: int) -> None:
    frsize = 4096
    monkeypatch.setattr(
        os,
        "statvfs",
        lambda path: SimpleNamespace(f_bavail=free_bytes // frsize, f_frsize=frsize),
        raising=False,
    )


def test_object_store_is_30_percent(monkeypatch):
    fake_statvfs(monkeypatch, 1000 * GiB)
    size = rd.default_object_store_bytes(10 * GiB)
    assert size == (int(10 * GiB * 0.3) // 4096) * 4096
    assert size % 4096 == 0


def test_object_store_capped_by_shm(monkeypatch):
    fake_statvfs(monkeypatch, 1 * GiB)
    size = rd.default_object_store_bytes(100 * GiB)
    # 1 GiB free minus a 10% margin
    assert size == (GiB - GiB // 10) // 4096 * 4096
    assert size < GiB


def test_object_store_small_shm_is_not_exceeded(monkeypatch):
    fake_statvfs(monkeypatch, 64 * MiB)  # Docker's default /dev/shm: no 64 MiB floor over it
    assert rd.default_object_store_bytes(100 * GiB) == 48 * MiB
    fake_statvfs(monkeypatch, 20 * MiB)
    assert rd.default_object_store_bytes(100 * GiB) == 15 * MiB
    fake_statvfs(monkeypatch, 0)
    assert rd.default_object_store_bytes(100 * GiB) == 0


def test_object_store_small_memory_has_floor(monkeypatch):
    fake_statvfs(monkeypatch, 1000 * GiB)
    assert rd.default_object_store_bytes(100 * MiB) == rd.MIN_OBJECT_STORE_BYTES == 64 * MiB


def test_object_store_200gb_cap(monkeypatch):
    fake_statvfs(monkeypatch, 10**15)
    size = rd.default_object_store_bytes(10 * 10**12)
    assert size <= rd.MAX_DEFAULT_OBJECT_STORE_BYTES
    assert size > rd.MAX_DEFAULT_OBJECT_STORE_BYTES - 4096


def test_object_store_missing_shm_dir(tmp_path):
    size = rd.default_object_store_bytes(10 * GiB, shm_dir=str(tmp_path / "nope"))
    assert size == (int(10 * GiB * 0.3) // 4096) * 4096


def test_object_store_real_dir(tmp_path):
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    size = rd.default_object_store_bytes(8 * GiB, shm_dir=str(tmp_path))
    assert size >= 64 * MiB
    assert size <= max(int(8 * GiB * 0.3), 64 * MiB)
    assert size <= max(free, 64 * MiB)
