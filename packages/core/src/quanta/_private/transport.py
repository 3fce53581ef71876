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

Trust and failure. A pickle is code, so a frame is unpickled only from a peer that is trusted:
Unix sockets live in the session directory, which only the node's user can enter; every TCP
connection first passes the mutual challenge-response of :mod:`quanta._private.call_auth`
over the cluster token (:attr:`Reactor.token`), raw bytes before any frame. Reading is also the
process's *error boundary*: a frame longer than :data:`MAX_FRAME_BYTES` (``QUANTA_MAX_FRAME_BYTES``),
one that does not unpickle or is not a non-empty tuple, and a handler that raises all close
that one connection (and are logged, at most once a second per kind); nothing a peer sends
stops the process that reads it.

Addresses are ``unix:///path/to/socket``, ``tcp://host:port`` or, for a process of a
cluster node, ``tcp://host:port/<process id>``: the node's one TCP port serves every process
on it. A connection to such an address opens a TCP connection to the node's daemon and sends
one ``ROUTE`` frame naming the process; the daemon passes the connected socket to that process
over a Unix socket (``SCM_RIGHTS``, see :meth:`Reactor.listen_handoff`) and answers one byte,
after which the daemon is out of the path: the two processes talk directly. A node therefore
needs no port per worker.

TLS (optional, :attr:`Reactor.tls`, see :mod:`quanta._private.tls`). A descriptor cannot
carry a TLS session, so a TLS connection is *relayed*: a thread per connection does the TLS
and token handshakes and then copies bytes between the TLS socket and one end of a
``socketpair``; the other end is the reactor's connection, already trusted (a Unix socket),
and is routed, served or handed over exactly like any other. Without TLS nothing changes.
"""

from __future__ import annotations

import collections
import errno
import heapq
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from quanta._private import call_auth
from quanta._private.messages import ROUTE
from quanta._private.wake_timer import WakeTimer

_HEADER = struct.Struct("<I")
MAX_FRAME_BYTES = int(os.environ.get("QUANTA_MAX_FRAME_BYTES", 1 << 30))
"""The longest frame a process accepts (and sends). Values of 100 KiB and more travel in
shared memory or in chunked pulls, so only a runaway message (or a hostile one) comes near."""
ACCEPT_BACKOFF_S = 0.5  # how long a listener rests when the process is out of descriptors
_log = logging.getLogger("quanta.transport")
_last_logged: dict[str, float] = {}


def log_limited(kind: str, message: str, *, exc_info: bool = False) -> None:
    """Log ``message`` as an error unless a message of the same ``kind`` was logged less than
    a second ago (a peer that misbehaves in a loop cannot flood the log)."""
    now = time.monotonic()
    if now - _last_logged.get(kind, -2.0) >= 1.0:
        _last_logged[kind] = now
        _log.error(message, exc_info=exc_info)
_RECV_SIZE = 1 << 18
_dumps = pickle.dumps
_loads = pickle.loads
_PROTOCOL = 5

Handler = Callable[["Connection", tuple], None]


_GUARDED = {signal.SIGINT}


class Waiter:
    """A one-shot flag a thread blocks on, set from any thread (lighter than an Event).

    ``set`` marks it and wakes the waiting thread; ``clear`` re-arms it for reuse by the same
    thread. :meth:`Reactor.run_until` also wakes it to pass the reactor's lead (``granted``).
    """

    __slots__ = ("_lock", "flag", "granted", "ident")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.flag = False
        self.granted = False
        self.ident: int | None = None

    def set(self) -> None:
        self.flag = True
        self.wake()

    def is_set(self) -> bool:
        return self.flag

    def clear(self) -> None:
        self.flag = False
        self._lock.acquire(False)

    def wake(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already woken and not consumed yet
            pass

    def wait(self, timeout: float | None) -> None:
        """Sleep until woken or ``timeout``; wake-ups may be spurious (callers re-check)."""
        if timeout is None:
            self._lock.acquire()
        else:
            self._lock.acquire(timeout=max(0.0, timeout))

    def wait_set(self, deadline: float | None) -> bool:
        """Sleep until the flag is set or the monotonic ``deadline`` passes."""
        while not self.flag:
            if deadline is None:
                self.wait(None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.wait(remaining)
        return self.flag


class ConnectionClosed(ConnectionError):
    """Raised when sending on a connection whose peer has gone away."""


class FrameTooLarge(ValueError):
    """A message to send pickles to more than :data:`MAX_FRAME_BYTES`."""


def _check_size(size: int) -> None:
    if size > MAX_FRAME_BYTES:
        raise FrameTooLarge(
            f"a message of {size} bytes exceeds the call plane's frame limit of "
            f"{MAX_FRAME_BYTES} bytes (QUANTA_MAX_FRAME_BYTES); pass large values with "
            "put() instead, which stores them in shared memory")


def split_route(address: str) -> tuple[str, str | None]:
    """``("tcp://host:port", process_id)`` for a routed address, ``(address, None)`` else."""
    if address.startswith("tcp://"):
        hostport, _, target = address[len("tcp://"):].partition("/")
        return "tcp://" + hostport, target or None
    return address, None


def routed_address(node_address: str, process_id: str) -> str:
    """The address of process ``process_id`` behind the node port ``node_address``."""
    return f"{node_address}/{process_id}"


def parse_address(address: str) -> tuple[int, Any]:
    """Return ``(family, sockaddr)`` for a ``unix://`` or ``tcp://`` address (a routed
    address's process id is ignored).

    Raises ValueError for any other scheme.
    """
    if address.startswith("unix://"):
        return socket.AF_UNIX, address[len("unix://") :]
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].partition("/")[0].rpartition(":")
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
        "_auth",
        "via",
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
        # While not None, the peer has not proved it holds the cluster token: the bytes read
        # are its handshake, never frames (see call_auth).
        self._auth: call_auth.ServerHandshake | None = None
        # ``host:port`` of the TCP peer when this is the plain end of a TLS relay: such a
        # connection is a Unix socket of this process, but not a local process's
        self.via: str | None = None

    def send(self, msg: tuple) -> None:
        """Queue ``msg`` and write as much as the socket takes now. Raises ConnectionClosed,
        or FrameTooLarge for a message over the frame limit."""
        data = _dumps(msg, _PROTOCOL)
        if len(data) > MAX_FRAME_BYTES:
            _check_size(len(data))
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
        if self._auth is not None and not self._authenticate(buf):
            return
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if end - pos - 4 < size:
                if size > MAX_FRAME_BYTES:
                    self._reject("frame-size", f"announces a frame of {size} bytes, over the "
                                 f"limit of {MAX_FRAME_BYTES} (QUANTA_MAX_FRAME_BYTES)")
                    return
                break
            try:
                msg = _loads(memoryview(buf)[pos + 4 : pos + 4 + size])
            except Exception as e:  # noqa: BLE001 - the peer's bytes, not our bug
                self._reject("frame-decode", f"sent a frame that does not unpickle ({e!r})")
                return
            pos += 4 + size
            if type(msg) is not tuple or not msg:
                self._reject("frame-shape", f"sent a {type(msg).__name__} instead of a "
                             "message tuple")
                return
            try:
                dispatch(self, msg)
            except Exception:  # noqa: BLE001 - the error boundary (module docstring)
                self._reject("handler", f"sent message type {msg[0]!r} whose handling "
                             "raised", exc_info=True)
                return
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def _authenticate(self, buf: bytearray) -> bool:
        """Feed the handshake (server side). True once the peer has proved itself and the
        bytes left in ``buf`` are frames; False while waiting for more, or when it failed
        (the connection is closed then)."""
        if len(buf) < call_auth.CLIENT_PROOF_SIZE:
            return False
        answer = self._auth.answer(bytes(buf[:call_auth.CLIENT_PROOF_SIZE]))
        if answer is None:
            self._reject("auth", "did not prove it holds the cluster token")
            return False
        self._auth = None
        del buf[:call_auth.CLIENT_PROOF_SIZE]
        try:
            self.send_raw(answer)
        except ConnectionClosed:
            return False
        return True

    def _reject(self, kind: str, what: str, *, exc_info: bool = False) -> None:
        """Log why (rate-limited) and close this connection only."""
        log_limited(kind, f"quanta: closing the connection from {self.describe()}: it {what}",
                    exc_info=exc_info)
        self.close()

    def describe(self) -> str:
        """Who the peer is, for messages: its address, and what the owner knows of it."""
        try:
            where = self.sock.getpeername()
        except OSError:
            where = "?"
        if self.via is not None:
            where = f"{self.via} (over TLS)"
        elif self.sock.family == socket.AF_UNIX:
            where = "a local process"
        return f"{where}" + (f" ({self.peer})" if self.peer is not None else "")

    def detach(self) -> socket.socket:
        """Take the socket away from this connection and the reactor (no ``on_close``
        callbacks run, nothing more is dispatched): the caller owns it now. Reactor thread
        only."""
        with self._lock:
            self.closed = True
        self.reactor._forget(self)
        return self.sock

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


def hand_over(channel: socket.socket, sock: socket.socket) -> None:
    """Pass ``sock`` to the process behind ``channel`` (a connected Unix socket to its
    :meth:`Reactor.listen_handoff` path). Raises OSError when that process is gone."""
    socket.send_fds(channel, [b"\x01"], [sock.fileno()])


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from the blocking socket ``sock``. Raises EOFError when the peer
    closes it first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"the peer closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def frame(msg: tuple) -> bytes:
    """Pickle and frame ``msg`` once so it can be sent to several connections."""
    data = _dumps(msg, _PROTOCOL)
    _check_size(len(data))
    return _HEADER.pack(len(data)) + data


class Reactor:
    """A selector loop: accepts, reads, dispatches, runs timers and cross-thread callbacks.

    ``dispatch(conn, msg)`` is called on the reactor thread for every message received.
    Run it with :meth:`run_forever` on the current thread or :meth:`start_thread`.

    ``token`` is the cluster token: required to listen on TCP (every accepted connection must
    prove it holds it) and to connect to a TCP address; Unix sockets need none.
    ``tls`` (a :class:`quanta._private.tls.TLSConfig`, or None): TCP connections, accepted and
    opened, are mutual TLS, relayed (module docstring).
    """

    def __init__(self, dispatch: Handler, token: str | None = None, tls: Any = None) -> None:
        self.dispatch = dispatch
        self.token = token
        self.tls = tls
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
        self._starved: set[socket.socket] = set()  # listeners paused for want of descriptors
        # Leader/follower state (see run_until). Without a wake timer (not Linux) the reactor
        # thread is always the one polling, and waiting threads just sleep.
        self._timer = WakeTimer.create()
        self._lf_lock = threading.Lock()
        self._leader: int | None = None
        self._borrowers: collections.deque[Waiter] = collections.deque()
        self._main_ident = threading.main_thread().ident

    # -- connections -------------------------------------------------------------------
    def listen(self, address: str, on_accept: Callable[[Connection], None] | None = None) -> str:
        """Listen on ``address`` (a tcp port of 0 picks a free one). Returns the bound address."""
        family, sockaddr = parse_address(address)
        if family == socket.AF_INET and not self.token:
            raise ValueError("listening on TCP needs a cluster token (Reactor.token): every "
                             "TCP connection must authenticate before its first frame")
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
        """Open a connection to ``address`` (blocking connect) and register it. Any thread.

        For a routed address (``tcp://host:port/<process id>``) the node's daemon hands the
        connection to that process first; ConnectionRefusedError when it has no such process.
        A TCP connection authenticates first (call_auth.AuthenticationError when it fails).
        """
        family, sockaddr = parse_address(address)
        target = split_route(address)[1]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        tls = self.tls if family == socket.AF_INET else None
        try:
            sock.connect(sockaddr)
            if family == socket.AF_INET:
                if tls is not None:  # the plain end of the relay will not be TCP
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = call_auth.secure_client(sock, self.token, tls)
            if target is not None:
                sock.sendall(frame((ROUTE, target)))
                answer = sock.recv(1)
                if answer != b"\x01":
                    raise ConnectionRefusedError(
                        f"the node at {sockaddr[0]}:{sockaddr[1]} has no process {target} "
                        "(it exited)" if answer == b"\x00" else
                        f"the node at {sockaddr[0]}:{sockaddr[1]} closed the connection")
        except OSError:
            sock.close()
            raise
        if tls is not None:
            from quanta._private import tls as _tls

            sock.settimeout(None)
            sock = _tls.connect_relayed(sock)
        conn = Connection(sock, self)
        if tls is not None:
            conn.via = f"{sockaddr[0]}:{sockaddr[1]}"
        self.register(conn)
        return conn

    def adopt(self, sock: socket.socket, on_accept: Callable[[Connection], None] | None,
              via: str) -> None:
        """Serve ``sock``, the plain end of an authenticated TLS relay from ``via``, like an
        accepted connection. Reactor thread only."""
        if self._stopping:
            sock.close()
            return
        conn = Connection(sock, self)
        conn.via = via
        self._sel.register(conn._fd, selectors.EVENT_READ, conn)
        if on_accept is not None:
            on_accept(conn)

    def listen_handoff(self, path: str, on_conn: Callable[[Connection], None]) -> None:
        """Accept sockets passed by the node daemon (``SCM_RIGHTS``) on the Unix socket
        ``path``: each arrives as a new registered Connection given to ``on_conn``. Only the
        node's daemon connects here (the session directory is the user's own)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(8)
        sock.setblocking(False)
        self.listeners.append(sock)
        self._sel.register(sock, selectors.EVENT_READ, ("handoff-accept", on_conn))

    def _accept_handoff(self, lsock: socket.socket, on_conn: Callable[[Connection], None]) -> None:
        while True:
            try:
                sock, _ = lsock.accept()
            except OSError:
                return
            sock.setblocking(False)
            self.listeners.append(sock)
            self._sel.register(sock, selectors.EVENT_READ, ("handoff", on_conn))

    def _receive_handoff(self, sock: socket.socket, on_conn: Callable[[Connection], None]) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 64, 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        for fd in fds:
            conn = Connection(socket.socket(fileno=fd), self)
            self._sel.register(conn._fd, selectors.EVENT_READ, conn)
            on_conn(conn)
        if not data:
            self._sel.unregister(sock)
            self.listeners.remove(sock)
            sock.close()

    def register(self, conn: Connection) -> None:
        if self.thread_id is None or self.is_leader():
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
        if self._leader is None and self._timer is not None:
            self._timer.arm(0.0)  # nobody polls right now: wake the reactor thread

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the reactor after ``delay`` seconds. Polling thread only."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._timer_seq, fn))

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.call_soon_threadsafe(lambda: None)
        if self._timer is not None:
            self._timer.arm(0.0)

    def is_leader(self) -> bool:
        """True on the thread that currently polls and dispatches (inside a handler, say)."""
        if self._timer is None:
            return threading.get_ident() == self.thread_id
        return self._leader == threading.get_ident()

    # -- the loop -----------------------------------------------------------------------
    def start_thread(self, name: str = "quanta-reactor") -> None:
        self.thread = threading.Thread(target=self.run_forever, name=name, daemon=True)
        self.thread.start()
        while self.thread_id is None:
            time.sleep(0.0005)

    def poll_once(self, timeout: float | None, guard_signals: bool = False) -> None:
        """Wait up to ``timeout`` for I/O, then read, dispatch, run callbacks and due timers.

        Only the leader calls this. With ``guard_signals`` (the main thread leading) SIGINT is
        held back while messages are being dispatched, so a Python signal handler that raises
        (Ctrl-C, a task's cancel) does so in ``select`` or after the batch, never half-way
        through a handler."""
        if self._timers:
            due = max(0.0, self._timers[0][0] - time.monotonic())
            timeout = due if timeout is None else min(timeout, due)
        ready = self._sel.select(timeout)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _GUARDED) if guard_signals else None
        try:
            dispatch = self.dispatch
            for key, events in ready:
                data = key.data
                if data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                if type(data) is tuple:
                    kind = data[0]
                    if kind == "accept":
                        self._accept(key.fileobj, data[1])
                    elif kind == "handoff":
                        self._receive_handoff(key.fileobj, data[1])
                    else:
                        self._accept_handoff(key.fileobj, data[1])
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
        finally:
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def run_forever(self) -> None:
        """The reactor thread's loop (the daemon runs it on its main thread).

        With a wake timer, this thread polls only while no other thread does: a thread that
        blocks in :meth:`run_until` takes the lead over, and when it leaves, this thread gets it
        back only after the lead has stayed free for ``WakeTimer.GRACE`` seconds. A caller that
        returns and comes back to wait again within that grace (a loop of synchronous calls)
        therefore polls its own replies, without any hand-off between threads."""
        me = self.thread_id = threading.get_ident()
        timer = self._timer
        if timer is None:
            while not self._stopping:
                self.poll_once(None)
            self._close_all()
            return
        while not self._stopping:
            with self._lf_lock:
                lead = self._leader is None
                if lead:
                    self._leader = me
            if not lead:
                timer.wait()
                continue
            try:
                while not self._stopping and not self._borrowers:
                    self.poll_once(None)
            finally:
                self._release_lead()
        while True:  # let a waiting thread finish its poll before the sockets close
            with self._lf_lock:
                if self._leader is None:
                    self._leader = me
                    break
            time.sleep(0.001)
        self._close_all()

    def run_until(self, waiter: Waiter, timeout: float | None = None) -> bool:
        """Block until ``waiter`` is set or ``timeout`` passes; return whether it was set.

        The calling thread polls the connections itself when nobody else does (and then
        dispatches the message that sets its own waiter: no thread hand-off). When the reactor
        thread is polling, it hands the lead over; when another waiting thread leads, this one
        sleeps until its waiter is set or the lead is passed to it."""
        timer = self._timer
        deadline = None if timeout is None else time.monotonic() + timeout
        if timer is None or self._stopping or self.is_leader():
            return waiter.wait_set(deadline)
        me = threading.get_ident()
        guard = me == self._main_ident
        while not waiter.flag:
            with self._lf_lock:
                lead = self._leader is None
                if lead:
                    self._leader = me
                else:
                    poke = self._leader == self.thread_id and not self._borrowers
                    waiter.granted = False
                    waiter.ident = me
                    self._borrowers.append(waiter)
            if not lead:
                if poke:
                    self._poke()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is None or remaining > 0:
                    waiter.wait(remaining)
                with self._lf_lock:
                    lead = waiter.granted
                    if not lead:
                        try:
                            self._borrowers.remove(waiter)
                        except ValueError:
                            pass
                if not lead:
                    if waiter.flag or self._stopping or (
                            deadline is not None and time.monotonic() >= deadline):
                        return waiter.wait_set(deadline) if self._stopping else waiter.flag
                    continue
            try:
                while not waiter.flag and not self._stopping:
                    if deadline is None:
                        self.poll_once(None, guard)
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self.poll_once(remaining, guard)
            finally:
                self._release_lead()
            return waiter.flag
        return True

    def _release_lead(self) -> None:
        """Pass the lead to the first waiting thread, or leave it free (see run_forever)."""
        with self._lf_lock:
            if self._borrowers:
                nxt = self._borrowers.popleft()
                self._leader = nxt.ident
                nxt.granted = True
                nxt.wake()
                return
            self._leader = None
            soon = bool(self._pending) or self._stopping
        self._timer.arm(0.0 if soon else WakeTimer.GRACE)

    def _poke(self) -> None:
        with self._pending_lock:
            if not self._wake_closed:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass

    def _accept(self, lsock: socket.socket, on_accept: Callable[[Connection], None] | None) -> None:
        for _ in range(64):  # then let the other ready sockets have their turn
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(lsock, on_accept, e)
                return
            if lsock in self._starved:
                self._starved.discard(lsock)
                _log.warning("quanta: accepting connections on %r again", lsock.getsockname())
            if self.tls is not None and sock.family != socket.AF_UNIX:
                from quanta._private import tls as _tls

                _tls.serve(self, sock, on_accept)  # handshakes and relay on a thread
                continue
            conn = Connection(sock, self)
            if sock.family != socket.AF_UNIX:
                conn._auth = call_auth.ServerHandshake(self.token.encode())
                try:
                    sock.send(conn._auth.hello)  # 36 bytes into an empty send buffer
                except OSError:
                    sock.close()
                    continue
                self.call_later(call_auth.HANDSHAKE_TIMEOUT_S, lambda c=conn: self._expire(c))
            self._sel.register(conn._fd, selectors.EVENT_READ, conn)
            if on_accept is not None:
                on_accept(conn)

    def _expire(self, conn: Connection) -> None:
        if conn._auth is not None and not conn.closed:
            conn._reject("auth-timeout", "did not authenticate within "
                         f"{call_auth.HANDSHAKE_TIMEOUT_S:g} s")

    def _pause_accepting(self, lsock: socket.socket,
                         on_accept: Callable[[Connection], None] | None, err: OSError) -> None:
        """Out of descriptors (or kernel memory): the pending connection stays in the backlog
        and keeps the listener readable, so stop watching it for a while instead of spinning.
        The connections already open are served as before."""
        import resource

        if lsock not in self._starved:  # one message per episode, not one per retry
            self._starved.add(lsock)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            _log.error(
                "quanta: cannot accept connections on %r: %s (this process may open %s files: "
                "RLIMIT_NOFILE, hard limit %s). New workers and clients wait; the connections "
                "open now are served. Retrying every %g s; raise the limit (ulimit -n) or run "
                "fewer actors on this node.", lsock.getsockname(), err.strerror, soft, hard,
                ACCEPT_BACKOFF_S)
        try:
            self._sel.unregister(lsock)
        except (KeyError, ValueError):
            return

        def resume() -> None:
            if lsock.fileno() >= 0 and not self._stopping:
                self._sel.register(lsock, selectors.EVENT_READ, ("accept", on_accept))

        self.call_later(ACCEPT_BACKOFF_S, resume)

    def release_descriptors(self) -> None:
        """Close every socket this reactor holds, without callbacks: for a process about to
        exit, so that its clean-up finds descriptors free even at the open-file limit."""
        for key in list(self._sel.get_map().values()):
            if isinstance(key.data, Connection):
                key.data.closed = True
                try:
                    key.data.sock.close()
                except OSError:
                    pass
        for sock in self.listeners:
            try:
                sock.close()
            except OSError:
                pass

    def _close_all(self) -> None:
        if self._timer is not None:
            self._timer.close()
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
