"""Moving an object's file from one node daemon to another: the data plane across nodes.

A daemon that needs an object another node holds *pulls* it. It opens a TCP connection to
the holder's node port (the daemon's call-plane TCP listener, ``--node-manager-port``),
authenticates with the cluster token like every call-plane connection (``call_auth``) and
sends one framed ``OBJECT_PULL`` message with the object's id. The holder's reactor resolves
the object (restoring it from the spill directory if need be), opens its file and hands the
connection to a sender thread, which answers with an 8-byte signed size (-1: an error text
follows) and then the file's bytes with ``socket.sendfile`` (the kernel copies from the page
cache; no user-space buffer). The puller receives chunk by chunk into one reused buffer
and writes each chunk to the destination file (under a temporary name in the store
directory), and renames it into place when complete; the daemon then seals it like a local
object. An object is therefore never held whole in either daemon's memory, and the files are
identical (the format of ``shm_store.py`` travels as is).

Both sides run on threads: a transfer never blocks a reactor.

With TLS (``tls.py``) the puller wraps its socket in TLS before the token's handshake and
reads the TLS socket directly; the holder accepted the connection through its TLS relay, so
its sender thread still ``sendfile``s, into the relay's socketpair, and the relay encrypts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from typing import Any

from quanta._private import call_auth
from quanta._private import messages as m
from quanta._private.transport import Connection, frame, parse_address, recv_exact

_SIZE = struct.Struct("<q")
CHUNK = 8 << 20  # bytes per receive and write
BUFFER = 4 << 20  # socket buffer asked for on both sides (the kernel may cap it)


class TransferError(RuntimeError):
    """The holder could not send the object (unknown, or lost), or the connection broke."""


# -- the holder's side ---------------------------------------------------------------------
def serve_pull(conn: Connection, open_object: Any, hexid: str) -> None:
    """Answer an ``OBJECT_PULL`` on ``conn`` (reactor thread). ``open_object(hexid)`` returns
    an open file descriptor of the object's file or raises with a message for the puller."""
    sock = conn.detach()  # the connection leaves the reactor: a thread owns it now
    try:
        fd = open_object(hexid)
        error = None
    except Exception as e:  # noqa: BLE001 - told to the puller
        fd, error = None, f"{type(e).__name__}: {e}"
    threading.Thread(target=_send, args=(sock, fd, error), name="quanta-object-send",
                     daemon=True).start()


def _send(sock: socket.socket, fd: int | None, error: str | None) -> None:
    try:
        sock.setblocking(True)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        if fd is None:
            data = (error or "unknown error").encode()
            sock.sendall(_SIZE.pack(-1) + _SIZE.pack(len(data)) + data)
            return
        size = os.fstat(fd).st_size
        sock.sendall(_SIZE.pack(size))
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = None
            sock.sendfile(f, 0, size)
    except OSError:
        pass  # the puller went away: it reports the failure on its side
    finally:
        if fd is not None:
            os.close(fd)
        try:
            sock.close()
        except OSError:
            pass


# -- the puller's side ---------------------------------------------------------------------
def pull(address: str, hexid: str, dest_path: str, puller: str = "",
         timeout: float = 60.0, *, token: str | None, tls: Any = None) -> int:
    """Copy object ``hexid`` from the daemon at ``address`` (``tcp://host:port``) to
    ``dest_path`` (written under a temporary name, renamed when complete). Returns its size.
    ``puller`` (this node's address) lets the holder free the copy with the object.
    ``token``: the cluster token the connection authenticates with; ``tls``: this node's
    ``TLSConfig`` when the cluster uses TLS.
    Raises TransferError (with the holder's reason) or OSError (AuthenticationError)."""
    family, sockaddr = parse_address(address)
    tmp = f"{dest_path}.pull-{os.getpid()}-{threading.get_ident()}.tmp"
    sock = socket.socket(family, socket.SOCK_STREAM)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: sock.close())  # the TLS socket, once it wraps this one
        sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        sock.connect(sockaddr)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = call_auth.secure_client(sock, token, tls)
        sock.sendall(frame((m.OBJECT_PULL, hexid, puller)))
        try:
            (size,) = _SIZE.unpack(recv_exact(sock, _SIZE.size))
            if size < 0:
                (n,) = _SIZE.unpack(recv_exact(sock, _SIZE.size))
                reason = recv_exact(sock, n).decode(errors="replace")
        except EOFError:
            raise TransferError("the sending node closed the connection") from None
        if size < 0:
            raise TransferError(f"the node at {address} cannot send object {hexid}: {reason}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Through one reused buffer and pwrite, not into a mapping of the file: writing
            # a fresh tmpfs file by mapping pays a page fault per 4 KiB (about 1 GB/s here),
            # the write path allocates its pages about twice as fast.
            buf = bytearray(min(CHUNK, size) or 1)
            view = memoryview(buf)
            got = 0
            while got < size:
                n = sock.recv_into(view[:min(CHUNK, size - got)])
                if not n:
                    raise TransferError(
                        f"the node at {address} closed the connection after {got} of "
                        f"{size} bytes of object {hexid}")
                done = 0
                while done < n:
                    done += os.pwrite(fd, view[done:n], got + done)
                got += n
        except BaseException:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
    os.rename(tmp, dest_path)
    return size


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
