"""On-disk format of one large object in the node's shared-memory store.

Design
------
Large objects (>= 100 KiB serialized) are stored as ONE FILE PER OBJECT in a
per-session directory under ``/dev/shm`` (tmpfs, i.e. RAM).  Any process on the
node -- driver or worker -- that creates such an object writes the file once
with :func:`write_object` and then reports it to the node daemon ("sealed");
any process on the node reads it with :func:`read_object`, which maps the file
read-only so that out-of-band pickle buffers (numpy arrays, ...) come back as
zero-copy, read-only views into the page cache.  The daemon only does the
accounting and spilling (see ``quanta._private.node.object_store``); it never
parses these files.

File layout (all integers little-endian)::

    offset 0   header   : magic b"QUANTAOB" (8s), version (u16), flags (u16),
                          num_buffers (u32), total_size (u64)          -- 24 bytes
    offset 24  table    : (2 + num_buffers) x (offset u64, length u64) -- metadata,
                          payload, buffer 0, buffer 1, ...
               metadata : raw bytes (serializer's metadata, e.g. the format tag)
               payload  : the pickle stream (protocol 5, buffers out of band)
               padding  : zeros up to the next multiple of 64
               buffer 0 : raw bytes of the first out-of-band buffer (64-aligned)
               padding ...
               buffer N-1

Why this layout:

* Every section is addressed through the table, so the reader needs no
  knowledge of how the writer packed things (future versions can add sections
  or change the padding without breaking older readers of the same version).
* Buffers are aligned to 64 bytes (a cache line, and a multiple of every numpy
  dtype's alignment, and of AVX-512 vector width).  mmap returns page-aligned
  memory, so file offsets aligned to 64 give absolute addresses aligned to 64:
  numpy arrays rebuilt on them are "aligned" and SIMD-friendly.
* ``total_size`` is stored in the header and checked against the file size, so
  a truncated or partially copied file is rejected with ``ValueError`` instead
  of yielding garbage.
* The file is written under a temporary name in the same directory and then
  ``os.rename``-d into place, so a reader either sees no file or a complete one.
  The temporary name carries the writer's pid and thread id so that two
  writers racing on the same object (e.g. a retried task) cannot interleave.
  The temporary name always ends in ``.tmp``; a crashed writer's leftovers are
  removed with the session directory (``ObjectStore.destroy``).

Write path: the file is sized with ``os.ftruncate``, its pages are reserved
with ``os.posix_fallocate`` (so a full tmpfs answers ``ENOSPC`` at once,
before any byte is copied, and no page of a sealed file is ever a hole that
a reader's mapping would have to allocate -- a full tmpfs can therefore never
``SIGBUS`` a reader; we measured no cost for it on tmpfs), and every section is
copied with ``os.pwrite`` straight from the caller's buffer (a memoryview
slice, so no intermediate ``bytes``: exactly one copy, done by the kernel).  We
measured this against mmap + memoryview slice assignment on tmpfs: the mmap
path pays one page fault per 4 KiB of a freshly created file and was about 2x
slower (~0.5-1 GB/s vs ~2 GB/s on the development VM for 800 MB), and the
memcpy of a slice assignment holds the GIL for the whole copy whereas
``os.pwrite`` releases it -- important for workers with background threads.
Nothing is fsync-ed: the store lives in RAM and is per-session.

Full store: when the store directory cannot take the file (``ENOSPC`` or
``EDQUOT`` while creating, sizing or writing it) and the caller names the
node's spill directory (``spill_dir=``, ``<session>/spill``, the directory the
daemon spills to), the object is written there instead, under the same name;
the daemon sees where the file is when it is sealed and serves it from there
(``ObjectStore.sealed``/``restore``).  If the spill directory cannot take it
either, ``quanta.exceptions.ObjectStoreFullError`` says how many bytes were
asked for, how many are free in both directories, and what to change.  A
failed attempt never leaves a file behind in either directory.

Read path: ``mmap.ACCESS_READ`` over the whole file; the file descriptor is
closed immediately (the mapping keeps the pages alive, even after the file is
unlinked or moved to the spill directory).  Every returned view is a slice of a
single read-only ``memoryview`` of the mapping; CPython keeps the mmap object
(and therefore the mapping) alive for as long as any view, or any object built
on a view (e.g. a numpy array from ``pickle.loads(..., buffers=...)``), is
alive.  Pages are faulted in lazily -- pre-populating (MAP_POPULATE) measured
no faster for a full scan and makes partial reads pay for the whole object.
"""

from __future__ import annotations

import errno
import mmap
import os
import pickle
import struct
import threading
from collections.abc import Sequence

__all__ = [
    "ALIGNMENT",
    "FORMAT_VERSION",
    "MAGIC",
    "ObjectView",
    "free_bytes",
    "object_file_name",
    "read_object",
    "write_object",
]

MAGIC = b"QUANTAOB"
FORMAT_VERSION = 1
ALIGNMENT = 64
OBJECT_FILE_SUFFIX = ".qobj"
TMP_SUFFIX = ".tmp"

_HEADER = struct.Struct("<8sHHIQ")  # magic, version, flags, num_buffers, total_size
_ENTRY = struct.Struct("<QQ")  # offset, length
# Linux caps a single read/write at 0x7ffff000 bytes; stay well below it.
_MAX_WRITE_CHUNK = 1 << 30
_HEX_DIGITS = frozenset("0123456789abcdef")
# The errors that mean "this directory is full": write the object elsewhere.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # "the filesystem is full"
# posix_fallocate is an optimisation where the filesystem does not support it.
_NO_FALLOCATE_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def _align(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


def object_file_name(object_id_hex: str) -> str:
    """Return the file name (no directory) of the object ``object_id_hex``.

    The name is the lower-cased hex id plus ``.qobj``.  Only hex digits are
    accepted (``ValueError`` otherwise), so a name can never escape its
    directory.  Temporary files written by :func:`write_object` end in
    ``.tmp`` and therefore never collide with object file names.
    """
    if not isinstance(object_id_hex, str):
        raise TypeError(f"object id must be a hex str, got {type(object_id_hex).__name__}")
    hex_id = object_id_hex.lower()
    if not hex_id or not _HEX_DIGITS.issuperset(hex_id):
        raise ValueError(f"invalid object id {object_id_hex!r}: expected a non-empty hex string")
    return hex_id + OBJECT_FILE_SUFFIX


def _as_byte_view(buf: object, what: str) -> memoryview:
    """Return a contiguous, 1-D, format 'B' view of ``buf`` without copying.

    ``PickleBuffer.raw()`` handles C- and Fortran-contiguous buffers of any
    format and shape, and raises ``BufferError`` for non-contiguous ones.
    """
    try:
        if isinstance(buf, pickle.PickleBuffer):
            return buf.raw()
        if isinstance(buf, memoryview) and buf.format == "B" and buf.ndim == 1:
            if buf.contiguous:
                return buf
        return pickle.PickleBuffer(buf).raw()  # type: ignore[arg-type]
    except BufferError as e:
        raise ValueError(f"{what} is not contiguous: {e}") from None
    except TypeError as e:
        raise TypeError(
            f"{what} must be bytes-like (memoryview, PickleBuffer, bytes), got {type(buf).__name__}"
        ) from e


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (handles short writes; releases the GIL)."""
    pos = 0
    n = data.nbytes
    while pos < n:
        end = min(n, pos + _MAX_WRITE_CHUNK)
        written = os.pwrite(fd, data[pos:end], offset + pos)
        if written <= 0:  # pragma: no cover - tmpfs full raises OSError(ENOSPC) instead
            raise OSError(f"short write at offset {offset + pos}")
        pos += written


def _preallocate(fd: int, size: int) -> None:
    """Reserve every page of the file's ``size`` bytes now (``ENOSPC`` here, not later)."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in _NO_FALLOCATE_ERRNOS:
            raise


def free_bytes(directory: str) -> int | None:
    """Bytes an unprivileged writer can still put in ``directory``'s filesystem (``statvfs``:
    ``f_bavail * f_frsize``), or None when it cannot be examined."""
    try:
        st = os.statvfs(directory)
    except (AttributeError, OSError, ValueError):
        return None
    return st.f_bavail * st.f_frsize


def _full_error(path: str, size: int, spill_path: str, error: OSError) -> Exception:
    from quanta.exceptions import ObjectStoreFullError

    def free(d: str) -> str:
        n = free_bytes(d)
        return "an unknown number of" if n is None else str(n)

    store_dir = os.path.dirname(path) or "."
    spill_dir = os.path.dirname(spill_path) or "."
    name = os.path.basename(path)
    if name.endswith(OBJECT_FILE_SUFFIX):
        name = name[: -len(OBJECT_FILE_SUFFIX)]
    return ObjectStoreFullError(
        f"Cannot store object {name} of {size} bytes: the object store directory {store_dir} "
        f"has {free(store_dir)} bytes free and the spill directory {spill_dir} has "
        f"{free(spill_dir)} bytes free ({error.strerror or error}). To make room: drop the refs to "
        "objects you no longer need (del ref); give the node a bigger shared-memory "
        "filesystem (/dev/shm; in Docker, --shm-size=...); set object_store_memory= (init) or "
        "--object-store-memory (quanta start) below the free shared memory, so that older "
        "objects are spilled to disk sooner; or free disk space for the spill directory."
    )


def write_object(
    path: str,
    metadata: bytes,
    payload: bytes | bytearray | memoryview,
    buffers: Sequence[memoryview | pickle.PickleBuffer],
    reuse: str | None = None,
    spill_dir: str | None = None,
) -> int:
    """Atomically write one object file at ``path``; return its size in bytes.

    ``reuse`` names a file nobody maps any more (a recycled object file): it is renamed into
    place and overwritten, so the copy lands on memory pages that are already resident, which
    is several times faster than faulting in fresh tmpfs pages. If it is gone, a new file is
    made.

    ``metadata`` and ``payload`` are bytes-like; ``buffers`` are the pickle
    protocol-5 out-of-band buffers, as ``pickle.PickleBuffer`` or
    ``memoryview`` objects of any format/shape as long as they are contiguous
    (C or Fortran order); a non-contiguous buffer raises ``ValueError``.
    Each buffer's bytes are copied exactly once, straight from the caller's
    memory into the file.

    The file is first written as ``<path>.<pid>-<thread>.tmp`` in the same
    directory and renamed to ``path`` when complete, so readers never observe
    a partial file; an existing file at ``path`` is replaced.  On error the
    temporary file is removed and the exception propagates (e.g.
    ``OSError(ENOSPC)`` when /dev/shm is full).  The caller must keep the
    buffers' memory unchanged for the duration of the call.

    ``spill_dir`` (the node's spill directory): when ``path``'s directory is full
    (``ENOSPC``/``EDQUOT``), the object is written to ``spill_dir`` under the same file name
    instead, and when that fails too (any ``OSError``),
    ``quanta.exceptions.ObjectStoreFullError`` is raised, naming the sizes.  Without
    ``spill_dir`` the ``OSError`` propagates.
    """
    meta_view = _as_byte_view(metadata, "metadata")
    payload_view = _as_byte_view(payload, "payload")
    views = [_as_byte_view(b, f"out-of-band buffer {i}") for i, b in enumerate(buffers)]

    num_buffers = len(views)
    table_end = _HEADER.size + _ENTRY.size * (2 + num_buffers)
    entries: list[tuple[int, int]] = []
    meta_off = table_end
    entries.append((meta_off, meta_view.nbytes))
    payload_off = meta_off + meta_view.nbytes
    entries.append((payload_off, payload_view.nbytes))
    end = payload_off + payload_view.nbytes
    for v in views:
        off = _align(end)
        entries.append((off, v.nbytes))
        end = off + v.nbytes
    total_size = end

    prefix = bytearray(table_end)
    _HEADER.pack_into(prefix, 0, MAGIC, FORMAT_VERSION, 0, num_buffers, total_size)
    for i, (off, length) in enumerate(entries):
        _ENTRY.pack_into(prefix, _HEADER.size + i * _ENTRY.size, off, length)

    sections = [(meta_view, meta_off), (payload_view, payload_off)]
    sections += [(v, off) for v, (off, _) in zip(views, entries[2:], strict=True)]
    try:
        _write_file(path, memoryview(prefix), sections, total_size, reuse)
    except OSError as e:
        if spill_dir is None or e.errno not in FULL_ERRNOS:
            raise
        spill_path = os.path.join(spill_dir, os.path.basename(path))
        try:
            _write_file(spill_path, memoryview(prefix), sections, total_size, None)
        except OSError as e2:
            raise _full_error(path, total_size, spill_path, e2) from e
        # An older copy of the object in the store directory must not shadow this one.
        try:
            os.unlink(path)
        except OSError:
            pass
    return total_size


def _write_file(
    path: str,
    prefix: memoryview,
    sections: list[tuple[memoryview, int]],
    total_size: int,
    reuse: str | None,
) -> None:
    """Write ``prefix`` at 0 and each (view, offset) of ``sections`` into a temporary file,
    then rename it to ``path``; on any error the temporary file is removed."""
    tmp_path = f"{path}.{os.getpid()}-{threading.get_ident()}{TMP_SUFFIX}"
    # os.open() file descriptors are non-inheritable (PEP 446): no O_CLOEXEC needed.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if reuse is not None:
        try:
            os.rename(reuse, tmp_path)
            flags = os.O_WRONLY
        except OSError:
            pass
    try:
        fd = os.open(tmp_path, flags, 0o600)
        try:
            # Size first: the final size is right even when the last section is
            # empty (and a reused file shrinks).  Then reserve every page, the
            # alignment gaps' included: a full tmpfs fails here (ENOSPC), before
            # any copy, and no page of the sealed file is a hole that a reader's
            # mapping would have to allocate (SIGBUS on a full tmpfs).
            os.ftruncate(fd, total_size)
            _preallocate(fd, total_size)
            _pwrite_all(fd, prefix, 0)
            for view, off in sections:
                if view.nbytes:
                    _pwrite_all(fd, view, off)
        finally:
            os.close(fd)
        os.rename(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise


class ObjectView:
    """A read-only, zero-copy view of one object file (see :func:`read_object`).

    Attributes:
        metadata: the metadata section, copied into a (small) ``bytes``.
        payload: the pickle stream, a read-only ``memoryview`` into the mapping.
        buffers: the out-of-band buffers, read-only 1-D ``memoryview`` objects
            (format ``'B'``) into the mapping, each 64-byte aligned; pass them
            as ``pickle.loads(view.payload, buffers=view.buffers)``.
        size: the size of the object file in bytes.
        path: the path the object was read from.

    The mapping is released when the last of ``payload``/``buffers`` -- and
    every object built on them, such as numpy arrays -- is garbage collected;
    it stays valid if the file is unlinked or moved in the meantime.
    """

    __slots__ = ("buffers", "metadata", "path", "payload", "size")

    def __init__(
        self,
        path: str,
        metadata: bytes,
        payload: memoryview,
        buffers: list[memoryview],
        size: int,
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.payload = payload
        self.buffers = buffers
        self.size = size

    def __repr__(self) -> str:
        return (
            f"ObjectView(path={self.path!r}, size={self.size}, "
            f"payload={self.payload.nbytes}B, buffers={len(self.buffers)})"
        )


def read_object(path: str) -> ObjectView:
    """Map the object file at ``path`` read-only and return an :class:`ObjectView`.

    Raises ``FileNotFoundError`` if the file does not exist and ``ValueError``
    if it is not a valid object file (bad magic, unsupported version,
    truncated, or inconsistent offsets).  No data is copied except the
    metadata; pages are faulted in lazily on access.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER.size:
            raise ValueError(
                f"{path}: not a quanta object file (truncated: {size} bytes, "
                f"header is {_HEADER.size})"
            )
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)

    whole = memoryview(mm)
    sections: list[memoryview] = []
    try:
        magic, version, _flags, num_buffers, total_size = _HEADER.unpack_from(whole, 0)
        if magic != MAGIC:
            raise ValueError(f"{path}: not a quanta object file (bad magic {bytes(magic)!r})")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: unsupported object file version {version} (expected {FORMAT_VERSION})"
            )
        if total_size != size:
            raise ValueError(
                f"{path}: object file is truncated or corrupt "
                f"(header says {total_size} bytes, file has {size})"
            )
        table_end = _HEADER.size + _ENTRY.size * (2 + num_buffers)
        if table_end > size:
            raise ValueError(f"{path}: object file is corrupt (section table exceeds file)")
        for i in range(2 + num_buffers):
            off, length = _ENTRY.unpack_from(whole, _HEADER.size + i * _ENTRY.size)
            if off < table_end or off + length > size:
                raise ValueError(
                    f"{path}: object file is corrupt (section {i} [{off}, {off + length}) "
                    f"outside [{table_end}, {size}))"
                )
            sections.append(whole[off : off + length])
    except BaseException:
        for section in sections:
            section.release()
        whole.release()
        mm.close()
        raise
    metadata = bytes(sections[0])
    sections[0].release()
    return ObjectView(path, metadata, sections[1], sections[2:], size)
