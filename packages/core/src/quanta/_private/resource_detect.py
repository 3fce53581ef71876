"""What this process may really use: CPUs, memory and a default object-store size.

Design
------
Ray sizes a node from the host (``os.cpu_count()``, total RAM; ray#27958), so inside a
container limited to 2 CPUs on a 64-core host it starts 64 workers and thrashes. Here every
figure is the *minimum* of what the kernel will actually let this process use:

* CPUs: the scheduler affinity mask (``taskset``, ``--cpuset-cpus``), the cgroup v2 quota
  (``cpu.max``) and the cgroup v1 CFS quota (``cpu.cfs_quota_us / cpu.cfs_period_us``).
* Memory: ``MemTotal`` from ``/proc/meminfo``, cgroup v2 ``memory.max`` and cgroup v1
  ``memory.limit_in_bytes``.

cgroup files are read at the hierarchy root *and* along the process's own cgroup path taken
from ``/proc/self/cgroup``; every ancestor's limit applies, so the smallest one wins. Paths
that do not exist (a container's view often names a host path, e.g. ``/docker/<id>``, while
the container's own cgroup is mounted at the root) are skipped; paths with ``..`` (a cgroup
namespace looking at an outside cgroup) are not walked, only the root is read.

Every file path is relative to a ``root`` argument (default ``"/"``) so tests can build fake
``proc/`` and ``sys/fs/cgroup/`` trees in a temporary directory. The scheduler affinity is not
a file; tests replace ``os.sched_getaffinity`` / ``os.cpu_count``.

Nothing here raises on unreadable or malformed files: a figure that cannot be read is simply
not a limit. Standard library only, nothing imported beyond ``os``.
"""

from __future__ import annotations

import os

from quanta._private.shm_store import free_bytes

__all__ = [
    "MIN_OBJECT_STORE_BYTES",
    "MAX_DEFAULT_OBJECT_STORE_BYTES",
    "detect_cpu_quota",
    "detect_cpus",
    "detect_memory_bytes",
    "default_object_store_bytes",
]

MIN_OBJECT_STORE_BYTES = 64 * 1024 * 1024
"""The default object store is never smaller than this (64 MiB)."""

MAX_DEFAULT_OBJECT_STORE_BYTES = 200 * 10**9
"""The default object store is never larger than this (200 GB, as in Ray)."""

OBJECT_STORE_MEMORY_FRACTION = 0.3
"""Share of the process's usable memory given to the object store by default."""

_SHM_MIN_MARGIN_BYTES = 16 * 1024 * 1024
_PAGE = 4096
# cgroup v1 says "unlimited" with a huge number (2**63 - page size, rounded); anything this
# large is not a real limit.
_ABSURD_MEMORY_BYTES = 1 << 62
# Used only if neither /proc/meminfo, sysconf nor any cgroup gives a figure.
_FALLBACK_MEMORY_BYTES = 4 * 1024**3

_CGROUP_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
_CGROUP_V1_MEMORY_DIRS = ("memory",)


# --------------------------------------------------------------------------------------------
# small file helpers


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="strict") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _own_cgroups(root: str) -> tuple[str | None, dict[str, str]]:
    """Parse ``proc/self/cgroup``: the v2 path (``0::/path``) and v1 controller -> path."""
    v2: str | None = None
    v1: dict[str, str] = {}
    text = _read(os.path.join(root, "proc/self/cgroup"))
    if not text:
        return v2, v1
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2 = path
        else:
            for c in controllers.split(","):
                if c:
                    v1[c] = path
    return v2, v1


def _walk(base: str, cgroup_path: str | None) -> list[str]:
    """Directories to read, from the process's own cgroup up to ``base`` (deepest first)."""
    if not cgroup_path:
        return [base]
    parts = [p for p in cgroup_path.split("/") if p and p != "."]
    if ".." in parts:
        return [base]
    return [os.path.join(base, *parts[:i]) for i in range(len(parts), 0, -1)] + [base]


def _cgroup_dirs(
    root: str, v2_subdirs: tuple[str, ...], v1_subdirs: tuple[str, ...], v1_controller: str
) -> tuple[list[str], list[str]]:
    """(v2 dirs, v1 dirs) that may hold limit files for one controller, deduplicated."""
    v2_path, v1_paths = _own_cgroups(root)
    cg = os.path.join(root, "sys/fs/cgroup")
    v2_dirs: list[str] = []
    for sub in v2_subdirs:
        v2_dirs.extend(_walk(os.path.join(cg, sub) if sub else cg, v2_path))
    v1_dirs: list[str] = []
    for sub in v1_subdirs:
        v1_dirs.extend(_walk(os.path.join(cg, sub), v1_paths.get(v1_controller)))
    return list(dict.fromkeys(v2_dirs)), list(dict.fromkeys(v1_dirs))


def _min(values: list[float]) -> float | None:
    return min(values) if values else None


# --------------------------------------------------------------------------------------------
# CPUs


def _affinity_cpus() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows have no sched_getaffinity
        n = 0
    if n <= 0:
        n = os.cpu_count() or 1
    return n


def _cpu_max_v2(path: str) -> float | None:
    text = _read(path)
    if not text:
        return None
    fields = text.split()
    if len(fields) < 1 or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def detect_cpu_quota(root: str = "/") -> float | None:
    """The CPU bandwidth quota of this process's cgroups in CPUs (may be fractional, e.g.
    ``1.5``), or ``None`` if there is no quota. The smallest of cgroup v2 ``cpu.max`` and
    cgroup v1 ``cpu.cfs_quota_us / cpu.cfs_period_us`` over the own cgroup and its ancestors.
    The affinity mask is *not* considered here; see :func:`detect_cpus`."""
    v2_dirs, v1_dirs = _cgroup_dirs(root, ("",), _CGROUP_V1_CPU_DIRS, "cpu")
    quotas: list[float] = []
    for d in v2_dirs:
        q = _cpu_max_v2(os.path.join(d, "cpu.max"))
        if q is not None:
            quotas.append(q)
    for d in v1_dirs:
        quota = _read_int(os.path.join(d, "cpu.cfs_quota_us"))
        period = _read_int(os.path.join(d, "cpu.cfs_period_us"))
        if quota is not None and period and quota > 0 and period > 0:
            quotas.append(quota / period)
    return _min(quotas)


def detect_cpus(root: str = "/") -> float:
    """How many CPUs this process may use, as the default ``num_cpus`` of a node.

    The minimum of ``len(os.sched_getaffinity(0))`` (``os.cpu_count()`` where affinity is not
    available) and the cgroup quota (:func:`detect_cpu_quota`), **rounded down to a whole
    number, and never less than 1.0**. It is returned as a float (e.g. ``2.0``) because
    resource amounts are floats, but it is always integral: Ray's ``num_cpus`` default is a
    count of worker slots, and a quota of 1.5 CPUs can run one CPU-bound task at full speed,
    not two. A quota below one CPU (e.g. ``0.5``) still yields ``1.0`` so that a task with the
    default ``num_cpus=1`` can run at all (slowly). Use :func:`detect_cpu_quota` for the exact,
    possibly fractional quota.
    """
    n: float = float(_affinity_cpus())
    quota = detect_cpu_quota(root)
    if quota is not None:
        n = min(n, quota)
    return float(max(1, int(n)))


# --------------------------------------------------------------------------------------------
# memory


def _meminfo_total(root: str) -> int | None:
    text = _read(os.path.join(root, "proc/meminfo"))
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            try:
                value = int(fields[1])
            except (IndexError, ValueError):
                return None
            unit = fields[2].lower() if len(fields) > 2 else "kb"
            return value * 1024 if unit == "kb" else value
    return None


def _sysconf_total() -> int | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    if pages > 0 and page_size > 0:
        return pages * page_size
    return None


def _memory_limit(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    if value <= 0 or value >= _ABSURD_MEMORY_BYTES:
        return None
    return value


def detect_memory_bytes(root: str = "/") -> int:
    """Bytes of memory this process may use: the minimum of ``MemTotal`` in
    ``proc/meminfo`` and the cgroup limits (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)
    on the own cgroup and its ancestors. ``"max"``, non-positive values and absurdly large v1
    values (``>= 2**62``, v1's way of saying unlimited) are not limits.

    If ``proc/meminfo`` cannot be read and ``root`` is ``"/"`` the host total comes from
    ``os.sysconf`` (macOS). If nothing at all is known, 4 GiB is returned.
    """
    host = _meminfo_total(root)
    if host is None and os.path.abspath(root) == "/":
        host = _sysconf_total()
    v2_dirs, v1_dirs = _cgroup_dirs(root, ("",), _CGROUP_V1_MEMORY_DIRS, "memory")
    limits: list[int] = []
    if host is not None and host > 0:
        limits.append(host)
    for d in v2_dirs:
        v = _memory_limit(os.path.join(d, "memory.max"))
        if v is not None:
            limits.append(v)
    for d in v1_dirs:
        v = _memory_limit(os.path.join(d, "memory.limit_in_bytes"))
        if v is not None:
            limits.append(v)
    return min(limits) if limits else _FALLBACK_MEMORY_BYTES


# --------------------------------------------------------------------------------------------
# object store


def default_object_store_bytes(memory_bytes: int, shm_dir: str = "/dev/shm") -> int:
    """The default object-store size for a node with ``memory_bytes`` of usable memory.

    30% of ``memory_bytes``, at most 200 GB and at least 64 MiB
    (:data:`MIN_OBJECT_STORE_BYTES`), then at most the space really free in ``shm_dir``
    (``os.statvfs``: ``f_bavail * f_frsize``) minus a safety margin: 10% of that free space,
    at least 16 MiB (but never more than a quarter of it, so a small ``/dev/shm`` such as
    Docker's 64 MB still gets most of its room). The 64 MiB floor never overrides the free
    space: a store sized past it would only fail with ``ENOSPC`` (objects that do not fit
    go to the spill directory on disk). If ``shm_dir`` cannot be examined (it does not
    exist, as on macOS) the shared-memory cap is skipped. The result is rounded down to a
    multiple of 4096 (and is 0 when ``shm_dir`` is full).
    """
    size = min(int(memory_bytes * OBJECT_STORE_MEMORY_FRACTION), MAX_DEFAULT_OBJECT_STORE_BYTES)
    size = max(size, MIN_OBJECT_STORE_BYTES)
    free = free_bytes(shm_dir)
    if free is not None:
        margin = max(free // 10, min(_SHM_MIN_MARGIN_BYTES, free // 4))
        size = min(size, free - margin)
    size -= size % _PAGE
    return max(size, 0)
