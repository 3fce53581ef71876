"""Node-daemon side accounting of the shared-memory object store.

Design
------
Objects live as one file per object in ``shm_dir`` (a per-session directory
under ``/dev/shm``), in the format of ``quanta._private.shm_store``.  Files are
written by whichever process creates the object (driver or worker); the
daemon never writes or parses object files.  It is told about an object once
the creator has written and renamed the file into place (:meth:`sealed`), and
from then on it owns the object's placement:

* ``used_bytes`` is the sum of the sizes of sealed objects currently in
  ``shm_dir``; it must stay <= ``capacity_bytes``.
* When a seal or a restore pushes usage over capacity, the least recently used
  objects are *spilled*: their file is moved (``shutil.move`` semantics) to the
  disk directory ``spill_dir`` under the same name.  Moving never invalidates a
  reader's existing mmap: the kernel keeps the old pages alive until the
  mapping goes away, whether the file was renamed (same filesystem) or copied
  and unlinked (across filesystems, the normal /dev/shm -> disk case).
* :meth:`restore` moves a spilled file back (spilling others first if needed)
  and returns the shm path that readers then open with ``read_object``.
* Moves across filesystems go through ``<dest>.tmp`` + ``os.rename``, so a
  reader never opens a partially restored file in ``shm_dir`` and a crash mid
  spill never leaves a truncated file under the final spill name.

Full shared memory: the capacity can be more than the filesystem of
``shm_dir`` really has free (the user asked for more, or other processes
use /dev/shm too; :meth:`__init__` warns once when the capacity exceeds the
free space).  A creator whose write into ``shm_dir`` fails with ``ENOSPC``
writes the object into ``spill_dir`` instead (``write_object(spill_dir=...)``)
and seals it as usual: :meth:`sealed` finds the file there and records the
object as spilled.  :meth:`restore` of a spilled object that ``shm_dir``
cannot take (``ENOSPC``/``EDQUOT`` while moving it back) returns its path in
``spill_dir``: readers then map the disk file (slower to fault in, still
correct).  A spill that fails (the disk is full too) is logged and leaves
the store over capacity instead of failing the seal or restore.

Recency is an ``OrderedDict`` per location (O(1) touch / pop-LRU).  "Use" is
sealing, :meth:`touch` and :meth:`restore`; the daemon calls :meth:`touch`
whenever it hands out a location for a read.

Oversized objects: an object whose size alone exceeds ``capacity_bytes`` is
still accepted and KEPT IN SHM (with a warning), after spilling everything
else that can be spilled.  Rationale: the creator has already written it to
/dev/shm, readers are about to map it, and moving it to disk at once would
only force an immediate restore (or make readers mmap a disk file, which is
slow and defeats zero-copy sharing).  Usage then temporarily exceeds capacity
until the object is deleted or becomes LRU and is spilled by a later seal.
The object just sealed/restored is never chosen as a spill victim while
anything else is resident.

Threading: the daemon runs a single-threaded event loop; this class is NOT
thread-safe and does blocking file I/O when spilling/restoring (a cross-FS
move copies the object).  Callers that need to avoid blocking the loop can run
:meth:`sealed`/:meth:`restore` in an executor, serialised.

Objects that a process wrote but never reported (crash between rename and the
seal message) and crashed writers' ``*.tmp`` files are not tracked; they are
removed by :meth:`destroy` together with the session directory.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections import OrderedDict

from quanta._private.shm_store import FULL_ERRNOS, free_bytes, object_file_name

__all__ = ["ObjectStore"]

logger = logging.getLogger(__name__)

# Errors that mean "the destination directory is full".


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _move_file(src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` so that ``dst`` appears atomically, complete.

    Same filesystem: a single ``os.rename``.  Across filesystems: copy to
    ``dst + ".tmp"``, rename into place, then unlink ``src`` (the semantics of
    ``shutil.move``, but never exposing a partial ``dst``).  On failure ``src``
    is left untouched and the temporary copy is removed.
    """
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    tmp = dst + ".tmp"
    try:
        shutil.copyfile(src, tmp)  # uses sendfile(2) on Linux
        os.rename(tmp, dst)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    os.unlink(src)


class ObjectStore:
    """Capacity accounting, LRU spilling and restoring for one node's object files.

    Args:
        shm_dir: directory for resident objects (normally
            ``/dev/shm/quanta-<session>``); created if missing.
        capacity_bytes: the most bytes of sealed objects to keep in ``shm_dir``
            before spilling (>= 0).
        spill_dir: directory on disk for spilled objects; created if missing.
            Must differ from ``shm_dir``.

    Object ids are hex strings (see ``shm_store.object_file_name``); they are
    normalised to lower case.  All sizes are the object file sizes in bytes
    as reported by the creator (``write_object``'s return value).
    """

    def __init__(self, shm_dir: str, capacity_bytes: int, spill_dir: str) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        shm_dir = os.path.abspath(shm_dir)
        spill_dir = os.path.abspath(spill_dir)
        if os.path.realpath(shm_dir) == os.path.realpath(spill_dir):
            raise ValueError(f"shm_dir and spill_dir must differ (both are {shm_dir!r})")
        os.makedirs(shm_dir, mode=0o700, exist_ok=True)
        os.makedirs(spill_dir, mode=0o700, exist_ok=True)
        self._shm_dir = shm_dir
        self._spill_dir = spill_dir
        self._capacity = int(capacity_bytes)
        # id -> size, least recently used first.
        self._resident: OrderedDict[str, int] = OrderedDict()
        self._spilled: OrderedDict[str, int] = OrderedDict()
        self._used = 0
        self._spilled_bytes = 0
        self._destroyed = False
        # Cumulative counters, for stats().
        self._num_spills = 0
        self._num_restores = 0
        self._bytes_spilled_total = 0
        self._bytes_restored_total = 0
        self._num_written_to_spill = 0  # creators that found shm_dir full
        self._num_served_from_spill = 0  # restores that shm_dir could not take
        self._warned_full = False
        free = free_bytes(shm_dir)
        if free is not None and self._capacity > free:
            logger.warning(
                "object store capacity (%d bytes) exceeds the free space of %s (%d bytes): "
                "objects that do not fit are written to the spill directory %s on disk "
                "(slower). Lower object_store_memory / --object-store-memory or enlarge "
                "that filesystem (/dev/shm; Docker: --shm-size).",
                self._capacity, shm_dir, free, spill_dir)

    # -- paths -------------------------------------------------------------

    @property
    def shm_dir(self) -> str:
        return self._shm_dir

    @property
    def spill_dir(self) -> str:
        return self._spill_dir

    def path_for(self, object_id_hex: str) -> str:
        """Return the path in ``shm_dir`` where the object is (or is to be) written."""
        return os.path.join(self._shm_dir, object_file_name(object_id_hex))

    def _spill_path(self, object_id_hex: str) -> str:
        return os.path.join(self._spill_dir, object_file_name(object_id_hex))

    # -- accounting --------------------------------------------------------

    @property
    def capacity_bytes(self) -> int:
        """Configured capacity of ``shm_dir`` in bytes."""
        return self._capacity

    @property
    def used_bytes(self) -> int:
        """Bytes of sealed objects resident in ``shm_dir`` (may exceed capacity, see module doc)."""
        return self._used

    @property
    def spilled_bytes(self) -> int:
        """Bytes of objects currently in ``spill_dir``."""
        return self._spilled_bytes

    @property
    def num_objects(self) -> int:
        """Number of known objects, resident or spilled."""
        return len(self._resident) + len(self._spilled)

    def object_ids(self) -> list[str]:
        """The ids (lower-case hex) of every known object, resident or spilled."""
        return [*self._resident, *self._spilled]

    def contains(self, object_id_hex: str) -> bool:
        """True if the object is known (resident or spilled)."""
        oid = object_id_hex.lower()
        return oid in self._resident or oid in self._spilled

    def is_spilled(self, object_id_hex: str) -> bool:
        """True if the object is known and currently in ``spill_dir``."""
        return object_id_hex.lower() in self._spilled

    def stats(self) -> dict[str, int]:
        """Return a snapshot of counters (all ints, safe to serialise)."""
        return {
            "capacity_bytes": self._capacity,
            "used_bytes": self._used,
            "spilled_bytes": self._spilled_bytes,
            "num_objects": self.num_objects,
            "num_resident": len(self._resident),
            "num_spilled": len(self._spilled),
            "num_spills_total": self._num_spills,
            "num_restores_total": self._num_restores,
            "bytes_spilled_total": self._bytes_spilled_total,
            "bytes_restored_total": self._bytes_restored_total,
            "num_written_to_spill_total": self._num_written_to_spill,
            "num_served_from_spill_total": self._num_served_from_spill,
        }

    # -- lifecycle ---------------------------------------------------------

    def _check_alive(self) -> None:
        if self._destroyed:
            raise RuntimeError("ObjectStore has been destroyed")

    def sealed(self, object_id_hex: str, size: int) -> None:
        """Record that the object's file is complete at ``path_for(id)``.

        Marks it most recently used, adds ``size`` to ``used_bytes`` and, if
        usage exceeds capacity, spills least recently used objects (never this
        one while others are resident).  Sealing an id that is already known
        replaces its accounting with the new size (e.g. an object that was
        reconstructed and rewritten); a stale spilled copy is removed.
        A spill that fails is logged (see :meth:`_make_room`).

        A creator that found ``shm_dir`` full wrote the file into ``spill_dir``
        instead (``write_object(spill_dir=...)``): when the file is there and
        not in ``shm_dir``, the object is recorded as spilled.
        """
        self._check_alive()
        if size < 0:
            raise ValueError(f"object size must be >= 0, got {size}")
        oid = object_id_hex.lower()
        object_file_name(oid)  # validate the id
        was_spilled = oid in self._spilled
        self.forget(oid)
        if not os.path.exists(self.path_for(oid)) and os.path.exists(self._spill_path(oid)):
            self._spilled[oid] = size
            self._spilled_bytes += size
            self._num_written_to_spill += 1
            self._warn_full(oid, size, "was written to")
            return
        if was_spilled:
            _unlink_quiet(self._spill_path(oid))
        self._resident[oid] = size
        self._used += size
        self._make_room(0, protect=oid)

    def touch(self, object_id_hex: str) -> None:
        """Mark the object as most recently used.  Unknown ids are ignored."""
        oid = object_id_hex.lower()
        if oid in self._resident:
            self._resident.move_to_end(oid)
        elif oid in self._spilled:
            self._spilled.move_to_end(oid)

    def restore(self, object_id_hex: str) -> str:
        """Ensure the object is in ``shm_dir`` and return its path there.

        A resident object is just touched.  A spilled one is moved back (the
        path appears atomically, complete), after spilling least recently used
        objects to make room; if it alone exceeds capacity it is restored
        anyway, with a warning.  The object becomes most recently used.
        If ``shm_dir`` is full (the move fails with ``ENOSPC``/``EDQUOT``), the
        object stays spilled and its path in ``spill_dir`` is returned: readers
        map it there.

        Raises ``KeyError`` if the id is unknown (never sealed, or deleted).
        If the spilled file has vanished, the object is forgotten and
        ``FileNotFoundError`` is raised.
        """
        self._check_alive()
        oid = object_id_hex.lower()
        if oid in self._resident:
            self._resident.move_to_end(oid)
            return self.path_for(oid)
        size = self._spilled.get(oid)
        if size is None:
            raise KeyError(
                f"object {object_id_hex} is not in this node's object store "
                "(never sealed here, or already deleted)"
            )
        self._make_room(size, protect=oid)
        dst = self.path_for(oid)
        try:
            _move_file(self._spill_path(oid), dst)
        except FileNotFoundError:
            del self._spilled[oid]
            self._spilled_bytes -= size
            logger.error("spilled object %s vanished from %s", oid, self._spill_dir)
            raise
        except OSError as e:
            if e.errno not in FULL_ERRNOS:
                raise
            self._spilled.move_to_end(oid)
            self._num_served_from_spill += 1
            self._warn_full(oid, size, "is read from")
            return self._spill_path(oid)
        del self._spilled[oid]
        self._spilled_bytes -= size
        self._resident[oid] = size
        self._used += size
        self._num_restores += 1
        self._bytes_restored_total += size
        return dst

    def forget(self, object_id_hex: str) -> None:
        """Drop the object from the accounting but leave the files alone: its owner took the
        file back to recycle it (see ``CoreWorker._recycle``)."""
        oid = object_id_hex.lower()
        size = self._resident.pop(oid, None)
        if size is not None:
            self._used -= size
        size = self._spilled.pop(oid, None)
        if size is not None:
            self._spilled_bytes -= size

    def delete(self, object_id_hex: str) -> None:
        """Forget the object and remove its file from ``shm_dir`` and ``spill_dir``.

        Unknown ids are not an error (the file at ``path_for(id)`` is still
        removed if present, which cleans up an object whose seal never
        arrived).  Readers that already mapped the object keep a valid mapping.
        """
        oid = object_id_hex.lower()
        self.forget(oid)
        if self._destroyed:
            return
        _unlink_quiet(self.path_for(oid))
        _unlink_quiet(self._spill_path(oid))

    def destroy(self) -> None:
        """Remove ``shm_dir`` and ``spill_dir`` with everything in them.

        Called at node shutdown; afterwards nothing of this store remains in
        /dev/shm (including unreported objects and leftover ``*.tmp`` files).
        Idempotent.  After it, :meth:`sealed` and :meth:`restore` raise
        ``RuntimeError``; queries report an empty store.
        """
        self._destroyed = True
        self._resident.clear()
        self._spilled.clear()
        self._used = 0
        self._spilled_bytes = 0
        for d in (self._shm_dir, self._spill_dir):
            shutil.rmtree(d, ignore_errors=True)
            if os.path.exists(d):
                logger.warning("could not fully remove object store directory %s", d)

    # -- spilling ----------------------------------------------------------

    def _warn_full(self, oid: str, size: int, how: str) -> None:
        """Log, once per store, that ``shm_dir`` is full and objects live on disk."""
        if self._warned_full:
            return
        self._warned_full = True
        free = free_bytes(self._shm_dir)
        logger.warning(
            "the object store directory %s is full (%s bytes free, %d bytes used by sealed "
            "objects, capacity %d bytes): object %s (%d bytes) %s the spill directory %s on "
            "disk, and so will other objects that do not fit (slower). Lower "
            "object_store_memory / --object-store-memory below the free shared memory or "
            "enlarge that filesystem (/dev/shm; Docker: --shm-size). Logged once.",
            self._shm_dir, "unknown" if free is None else free, self._used, self._capacity,
            oid, size, how, self._spill_dir)

    def _make_room(self, incoming: int, protect: str) -> None:
        """Spill LRU resident objects until ``used + incoming <= capacity``.

        ``protect`` is never spilled.  If nothing else is left to spill, or a
        spill fails (the spill disk is full too), the store stays over capacity
        and a warning is logged.
        """
        while self._used + incoming > self._capacity:
            victim = next((oid for oid in self._resident if oid != protect), None)
            if victim is None:
                logger.warning(
                    "object %s (%d bytes) exceeds the object store capacity (%d bytes); "
                    "keeping it in shared memory over capacity",
                    protect,
                    self._resident.get(protect, incoming),
                    self._capacity,
                )
                return
            try:
                self._spill(victim)
            except OSError as e:
                logger.warning(
                    "cannot spill object %s to %s (%s); the object store stays over its "
                    "capacity (%d of %d bytes used)", victim, self._spill_dir, e, self._used,
                    self._capacity)
                return

    def _spill(self, oid: str) -> None:
        size = self._resident[oid]
        try:
            _move_file(self.path_for(oid), self._spill_path(oid))
        except FileNotFoundError:
            # The file was removed behind our back: forget the object.
            del self._resident[oid]
            self._used -= size
            logger.error(
                "object %s vanished from %s before it could be spilled", oid, self._shm_dir
            )
            return
        del self._resident[oid]
        self._used -= size
        self._spilled[oid] = size
        self._spilled_bytes += size
        self._num_spills += 1
        self._bytes_spilled_total += size
