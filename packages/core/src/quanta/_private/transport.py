"""The call plane: framed messages over Unix sockets (inside a node) and TCP (across nodes).

Design
------
Every Quanta process runs one *reactor*: a thread (or, in the node daemon, the main thread)
that owns a ``selectors`` loop, accepts connections, reads frames and dispatches them to a
handler keyed by message type. Sending does **not** go through the reactor: any thread may call
:meth:`Connection.send`, which appends the frame to the connection's outgoing buffer under a
lock and, when nothing was queued before it, writes straight to the non-blocking socket from
the calling thread. Only when the kernel buffer is full does the reactor take over the rest
(it is woken through a self-pipe and watches for writability). That keeps a synchronous call at
one syscall per direction with no thread hand-off on the sending side, which is where most of
Python RPC latency goes.

A frame is a 4-byte little-endian length followed by a pickled message. A message is a tuple
whose first item is its type (a small int from :mod:`quanta._private.messages`). Several frames
written back to back are read in one ``recv`` and dispatched in order, so bursts batch
naturally.

Addresses are ``unix:///path/to/socket`` or ``tcp://host:port``.
"""

from __future__ import annotations

import heapq
import os
import pickle
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("<I")
_RECV_SIZE = 1 << 18
_dumps = pickle.dumps
_loads = pickle.loads
_PROTOCOL = 5

Handler = Callable[["Connection", tuple], None]


class ConnectionClosed(ConnectionError):
    """Raised when sending on a connection whose peer has gone away."""


def parse_address(address: str) -> tuple[int, Any]:
    """Return ``(family, sockaddr)`` for a ``unix://`` or ``tcp://`` address.

    Raises ValueError for any other scheme.
    """
    if address.startswith("unix://"):
        return socket.AF_UNIX, address[len("unix://") :]
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        return socket.AF_INET, (host, int(port))
    raise ValueError(f"unsupported address {address!r}: expected unix://PATH or tcp://HOST:PORT")


class Connection:
    """One bidirectional framed connection. Thread-safe :meth:`send`; reads happen on the reactor.

    ``peer`` is free for the owner of the connection to attach what it knows of the other side
    (for instance the peer's listening address after a handshake).
    """

    __slots__ = (
        "sock",
        "reactor",
        "_out",
        "_lock",
        "_inbuf",
        "closed",
        "peer",
        "on_close",
        "_fd",
        "_want_write",
    )

    def __init__(self, sock: socket.socket, reactor: Reactor) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._fd = sock.fileno()
        self.reactor = reactor
        self._out = bytearray()
        self._lock = threading.Lock()
        self._inbuf = bytearray()
        self.closed = False
        self.peer: Any = None
        self.on_close: list[Callable[[Connection], None]] = []
        self._want_write = False

    def send(self, msg: tuple) -> None:
        """Queue ``msg`` and write as much as the socket takes now. Raises ConnectionClosed."""
        data = _dumps(msg, _PROTOCOL)
        self.send_raw(_HEADER.pack(len(data)) + data)

    def send_raw(self, frame: bytes) -> None:
        """Send an already framed message (see :func:`frame`)."""
        with self._lock:
            if self.closed:
                raise ConnectionClosed("connection is closed")
            if self._out:
                self._out += frame
                return
            try:
                n = self.sock.send(frame)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._out.clear()
                self.reactor.call_soon_threadsafe(self.close)
                raise ConnectionClosed(str(exc)) from exc
            if n == len(frame):
                return
            self._out += memoryview(frame)[n:]
            if not self._want_write:
                self._want_write = True
                self.reactor.call_soon_threadsafe(self._watch_write)

    def _watch_write(self) -> None:
        if not self.closed:
            self.reactor._modify(self, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _on_writable(self) -> None:
        with self._lock:
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._out.clear()
                n = -1
            if n >= 0:
                del self._out[:n]
            if n >= 0 and self._out:
                return
            self._want_write = False
        if n < 0:
            self.close()
            return
        self.reactor._modify(self, selectors.EVENT_READ)

    def _on_readable(self, dispatch: Handler) -> None:
        try:
            data = self.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        buf = self._inbuf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if end - pos - 4 < size:
                break
            msg = _loads(memoryview(buf)[pos + 4 : pos + 4 + size])
            pos += 4 + size
            dispatch(self, msg)
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def close(self) -> None:
        """Close the socket and run the ``on_close`` callbacks once. Reactor thread only."""
        if self.closed:
            return
        with self._lock:
            self.closed = True
        self.reactor._forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        for cb in self.on_close:
            cb(self)


def frame(msg: tuple) -> bytes:
    """Pickle and frame ``msg`` once so it can be sent to several connections."""
    data = _dumps(msg, _PROTOCOL)
    return _HEADER.pack(len(data)) + data


class Reactor:
    """A selector loop: accepts, reads, dispatches, runs timers and cross-thread callbacks.

    ``dispatch(conn, msg)`` is called on the reactor thread for every message received.
    Run it with :meth:`run_forever` on the current thread or :meth:`start_thread`.
    """

    def __init__(self, dispatch: Handler) -> None:
        self.dispatch = dispatch
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: list[Callable[[], None]] = []
        self._pending_lock = threading.Lock()
        self._wake_closed = False
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        self._stopping = False
        self.thread: threading.Thread | None = None
        self.thread_id: int | None = None
        self.listeners: list[socket.socket] = []

    # -- connections -------------------------------------------------------------------
    def listen(self, address: str, on_accept: Callable[[Connection], None] | None = None) -> str:
        """Listen on ``address`` (a tcp port of 0 picks a free one). Returns the bound address."""
        family, sockaddr = parse_address(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(512)
        sock.setblocking(False)
        self.listeners.append(sock)
        self._sel.register(sock, selectors.EVENT_READ, ("accept", on_accept))
        if family == socket.AF_INET:
            host, port = sock.getsockname()[:2]
            return f"tcp://{host}:{port}"
        return address

    def connect(self, address: str, timeout: float = 10.0) -> Connection:
        """Open a connection to ``address`` (blocking connect) and register it. Any thread."""
        family, sockaddr = parse_address(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        conn = Connection(sock, self)
        self.register(conn)
        return conn

    def register(self, conn: Connection) -> None:
        if self.thread_id is None or threading.get_ident() == self.thread_id:
            self._sel.register(conn._fd, selectors.EVENT_READ, conn)
        else:
            done = threading.Event()

            def reg() -> None:
                self._sel.register(conn._fd, selectors.EVENT_READ, conn)
                done.set()

            self.call_soon_threadsafe(reg)
            done.wait()

    def _modify(self, conn: Connection, events: int) -> None:
        try:
            self._sel.modify(conn._fd, events, conn)
        except (KeyError, ValueError):
            pass

    def _forget(self, conn: Connection) -> None:
        try:
            self._sel.unregister(conn._fd)
        except (KeyError, ValueError):
            pass

    # -- callbacks and timers -------------------------------------------------------------
    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        with self._pending_lock:
            self._pending.append(fn)
            # The pipe is closed under this lock too, so we never write to a closed (or
            # reused) descriptor once the loop has ended.
            if len(self._pending) == 1 and not self._wake_closed:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the reactor after ``delay`` seconds. Reactor thread only."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._timer_seq, fn))

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.call_soon_threadsafe(lambda: None)

    # -- the loop -----------------------------------------------------------------------
    def start_thread(self, name: str = "quanta-reactor") -> None:
        self.thread = threading.Thread(target=self.run_forever, name=name, daemon=True)
        self.thread.start()
        while self.thread_id is None:
            time.sleep(0.0005)

    def run_forever(self) -> None:
        self.thread_id = threading.get_ident()
        sel = self._sel
        dispatch = self.dispatch
        while not self._stopping:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, events in sel.select(timeout):
                data = key.data
                if data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                if type(data) is tuple:
                    self._accept(key.fileobj, data[1])
                    continue
                if events & selectors.EVENT_WRITE:
                    data._on_writable()
                if events & selectors.EVENT_READ and not data.closed:
                    data._on_readable(dispatch)
            if self._pending:
                with self._pending_lock:
                    pending, self._pending = self._pending, []
                for fn in pending:
                    fn()
            if self._timers:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, fn = heapq.heappop(self._timers)
                    fn()
        self._close_all()

    def _accept(self, lsock: socket.socket, on_accept: Callable[[Connection], None] | None) -> None:
        while True:
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn = Connection(sock, self)
            self._sel.register(conn._fd, selectors.EVENT_READ, conn)
            if on_accept is not None:
                on_accept(conn)

    def _close_all(self) -> None:
        for key in list(self._sel.get_map().values()):
            if isinstance(key.data, Connection):
                key.data.close()
        for sock in self.listeners:
            try:
                sock.close()
            except OSError:
                pass
        self._sel.close()
        with self._pending_lock:
            self._wake_closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
