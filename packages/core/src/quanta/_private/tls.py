"""Optional TLS for a cluster's network ports: the head's gRPC port and every node's TCP port.

``quanta start --tls-cert CERT --tls-key KEY --tls-ca CA`` (on the head and on every member,
all with certificates signed by one CA). Without these options nothing here is loaded and the
ports speak cleartext (still authenticated by the cluster token).

What the CA means. Both ends of every TLS connection present a certificate and verify the
other's chain against the cluster's CA (mutual TLS, TLS 1.2 or later): **the CA defines the
cluster**, so give it a CA of its own, which signs the cluster's node certificates only. On the
node port host names are not checked (``check_hostname=False``: nodes reach each other by the
addresses they register, and any certificate of the cluster's CA is a node of the cluster).
gRPC clients also check that the head's certificate names the address they dial (an IP or DNS
subject alternative name), as gRPC always does; ``$QUANTA_TLS_SERVER_NAME`` names another
name to expect. The cluster token's challenge-response (``call_auth``) runs inside TLS,
and gRPC still checks the token on every call.

The relay. A node passes routed TCP connections on to its worker processes as descriptors
(``SCM_RIGHTS``, see ``transport.py``), and a descriptor cannot carry a TLS session. So a TLS
connection is *relayed*: one thread per connection does the TLS handshake (within
``call_auth.HANDSHAKE_TIMEOUT_S``) and the token handshake inside it, then copies bytes
between the TLS socket and one end of a ``socket.socketpair()``, while the other end is an
ordinary, already authenticated connection of the reactor (a Unix socket: routing, calls
between daemons and object pulls work on it unchanged; a routed one is handed over as
before, and the relay thread stays in the daemon). The connecting side does the same
(:func:`connect_relayed`). The cost: one more copy and one more thread wake-up per message in
each direction, and a thread per TLS connection. Object pulls (``object_transfer``) read the
TLS socket directly on the puller's side. A relay ends when either side closes and closes
both.

Configuration of processes. The daemon takes the three paths (:func:`configure` checks them:
all three or none, readable files, a key file not readable by group or others, a certificate
that matches its key). Its workers and drivers get them with the token, in one call
(``cluster_credentials``). A process outside a node (the CLI, ``init(address="host:port")``) uses
:func:`local`: ``$QUANTA_TLS_CERT``/``KEY``/``CA`` (or Ray's ``RAY_USE_TLS=1`` with
``RAY_TLS_SERVER_CERT``/``RAY_TLS_SERVER_KEY``/``RAY_TLS_CA_CERT``), else the settings of a
node started on this machine by ``quanta start`` (``<session>/tls.json``).
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import threading
from typing import Any

from quanta._private import call_auth

ENV_VARS = ("QUANTA_TLS_CERT", "QUANTA_TLS_KEY", "QUANTA_TLS_CA")
RAY_ENV_VARS = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
OPTIONS = ("--tls-cert", "--tls-key", "--tls-ca")
SESSION_FILE = "tls.json"
MAX_HANDSHAKES = 64  # TLS handshakes in progress at once on one node port; more are refused
_CHUNK = 256 << 10  # bytes per read in a relay
_LIMIT = 1 << 20  # bytes a relay buffers in one direction before it stops reading that side


class TLSConfigError(ValueError):
    """The TLS settings are incomplete, or name files that cannot be used."""


class TLSConfig:
    """The three PEM files of a node (or client): its certificate, its key, the cluster's CA.
    Builds the SSL contexts and gRPC credentials once, on first use. Thread-safe."""

    __slots__ = ("cert", "key", "ca", "_contexts", "_lock", "_handshakes")

    def __init__(self, cert: str, key: str, ca: str) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self._contexts: dict[bool, Any] = {}
        self._lock = threading.Lock()
        self._handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)

    def paths(self) -> tuple[str, str, str]:
        return self.cert, self.key, self.ca

    def __repr__(self) -> str:
        return f"TLSConfig(cert={self.cert!r}, key={self.key!r}, ca={self.ca!r})"

    def context(self, server: bool) -> Any:
        """The ``ssl.SSLContext`` of the node port's server (or client) side: mutual TLS
        1.2+, the peer's chain verified against the CA, host names not checked."""
        ctx = self._contexts.get(server)
        if ctx is not None:
            return ctx
        import ssl

        with self._lock:
            ctx = self._contexts.get(server)
            if ctx is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server
                                     else ssl.PROTOCOL_TLS_CLIENT)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(self.cert, self.key)
                ctx.load_verify_locations(cafile=self.ca)
                ctx.check_hostname = False  # the CA defines the cluster (module docstring)
                ctx.verify_mode = ssl.CERT_REQUIRED
                self._contexts[server] = ctx
        return ctx

    def _read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for path in (self.cert, self.key, self.ca):
            with open(path, "rb") as f:
                out.append(f.read())
        return out[0], out[1], out[2]

    def grpc_server_credentials(self) -> Any:
        import grpc

        cert, key, ca = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                           require_client_auth=True)

    def grpc_channel_credentials(self) -> Any:
        import grpc

        cert, key, ca = self._read()
        return grpc.ssl_channel_credentials(ca, key, cert)

    def grpc_channel_options(self) -> list[tuple[str, str]]:
        name = os.environ.get("QUANTA_TLS_SERVER_NAME")
        return [("grpc.ssl_target_name_override", name)] if name else []


# -- configuration -------------------------------------------------------------------------
def configure(cert: str | None, key: str | None, ca: str | None,
              names: tuple[str, str, str] = OPTIONS) -> TLSConfig | None:
    """The settings of ``cert``/``key``/``ca`` (None when none is given), checked: all three
    or none, each a readable file, the key not readable by group or others, the certificate
    matching the key, the CA loadable. Raises TLSConfigError naming the option (``names``)."""
    given = [bool(v) for v in (cert, key, ca)]
    if not any(given):
        return None
    if not all(given):
        missing = [n for n, g in zip(names, given, strict=True) if not g]
        raise TLSConfigError(f"TLS needs {', '.join(names)} together: {', '.join(missing)} "
                             "missing")
    paths = [os.path.abspath(p) for p in (cert, key, ca)]
    for name, path in zip(names, paths, strict=True):
        try:
            with open(path, "rb") as f:
                if not f.read(1):
                    raise TLSConfigError(f"{name} {path}: the file is empty")
        except OSError as e:
            raise TLSConfigError(f"{name} {path}: cannot read it: {e.strerror or e}") from None
    mode = os.stat(paths[1]).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TLSConfigError(f"{names[1]} {paths[1]}: the private key is readable by other "
                             f"users (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    config = TLSConfig(*paths)
    import ssl

    try:
        config.context(server=True)
        config.context(server=False)
    except ssl.SSLError as e:
        raise TLSConfigError(f"{names[0]} {paths[0]} / {names[1]} {paths[1]} / {names[2]} "
                             f"{paths[2]}: not a usable certificate, key (matching it) and CA "
                             f"in PEM: {e}") from None
    return config


def load(paths: Any) -> TLSConfig | None:
    """The settings a node daemon gave its process (``cluster_credentials``): paths or None."""
    return TLSConfig(*paths) if paths else None


def from_env(environ: dict[str, str] | None = None) -> TLSConfig | None:
    """``$QUANTA_TLS_CERT``/``KEY``/``CA``, else Ray's ``RAY_USE_TLS=1`` with
    ``RAY_TLS_SERVER_CERT``/``RAY_TLS_SERVER_KEY``/``RAY_TLS_CA_CERT``; None when unset."""
    env = os.environ if environ is None else environ
    if any(env.get(v) for v in ENV_VARS):
        return configure(*(env.get(v) for v in ENV_VARS), names=ENV_VARS)
    if env.get("RAY_USE_TLS", "").lower() in ("1", "true", "yes"):
        return configure(*(env.get(v) for v in RAY_ENV_VARS), names=RAY_ENV_VARS)
    return None


def write_session(session_dir: str, config: TLSConfig | None) -> None:
    """Record the node's settings in its session directory (for :func:`local`)."""
    if config is None:
        return
    path = os.path.join(session_dir, SESSION_FILE)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"cert": config.cert, "key": config.key, "ca": config.ca}, f)
    os.replace(path + ".tmp", path)


def read_session(session_dir: str) -> TLSConfig | None:
    try:
        with open(os.path.join(session_dir, SESSION_FILE)) as f:
            rec = json.load(f)
        return TLSConfig(rec["cert"], rec["key"], rec["ca"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def local() -> TLSConfig | None:
    """The TLS settings a process outside a node presents: the environment's
    (:func:`from_env`), else those of the head (or a member) ``quanta start`` recorded on this
    machine; None when there are none (cleartext)."""
    config = from_env()
    if config is not None:
        return config
    from quanta._private import cluster

    recs = [cluster.read_record(), *cluster.read_members()]
    for rec in recs:
        if rec and rec.get("session_dir"):
            config = read_session(rec["session_dir"])
            if config is not None:
                return config
    return None


# -- connections ---------------------------------------------------------------------------
def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def client_wrap(sock: socket.socket, config: TLSConfig) -> Any:
    """TLS over the connected blocking ``sock`` (its timeout bounds the handshake). Returns
    the ``ssl.SSLSocket`` (``sock`` is consumed); raises ssl.SSLError / OSError."""
    return config.context(server=False).wrap_socket(sock)


def connect_relayed(sock: Any) -> socket.socket:
    """Relay the TLS socket ``sock`` (authenticated already) through a new thread; returns the
    plain end for the caller's reactor."""
    ours, theirs = socket.socketpair()
    try:
        threading.Thread(target=relay, args=(sock, ours), name="quanta-tls-relay",
                         daemon=True).start()
    except RuntimeError as e:  # no thread to be had
        for s in (sock, ours, theirs):
            s.close()
        raise OSError(f"cannot start a TLS relay thread: {e}") from None
    return theirs


def serve(reactor: Any, sock: socket.socket, on_accept: Any) -> None:
    """Take the accepted TCP ``sock`` of ``reactor`` (whose ``tls`` is set): on a thread, TLS
    handshake, then the token's handshake inside it, then relay; the plain end joins the
    reactor as a trusted connection (``Reactor.adopt``). A failure closes it, logged."""
    from quanta._private.transport import log_limited

    config: TLSConfig = reactor.tls
    if not config._handshakes.acquire(blocking=False):
        log_limited("tls-busy", f"quanta: closing the connection from {_peer(sock)}: "
                    f"{MAX_HANDSHAKES} TLS handshakes are in progress already")
        sock.close()
        return
    try:
        threading.Thread(target=_serve, args=(reactor, config, sock, on_accept),
                         name="quanta-tls-relay", daemon=True).start()
    except RuntimeError as e:  # no thread to be had: this connection only is refused
        config._handshakes.release()
        log_limited("tls-thread", f"quanta: closing the connection from {_peer(sock)}: {e}")
        sock.close()


def _serve(reactor: Any, config: TLSConfig, sock: socket.socket, on_accept: Any) -> None:
    from quanta._private.transport import log_limited

    where = _peer(sock)
    tls = None
    try:
        try:
            sock.setblocking(True)
            sock.settimeout(call_auth.HANDSHAKE_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = config.context(server=True).wrap_socket(sock, server_side=True)
            call_auth.server_handshake(tls, reactor.token.encode())
            tls.settimeout(None)
        finally:
            config._handshakes.release()
    except (OSError, ValueError) as e:
        log_limited("tls-auth", f"quanta: closing the connection from {where}: TLS or token "
                    f"handshake failed: {e}")
        (tls or sock).close()
        return
    ours, theirs = socket.socketpair()
    reactor.call_soon_threadsafe(lambda: reactor.adopt(theirs, on_accept, where))
    relay(tls, ours)


def relay(tls: Any, plain: socket.socket) -> None:
    """Copy bytes both ways between the TLS socket ``tls`` and ``plain`` until either side
    closes (or fails); then close both. Runs on its own thread."""
    import ssl

    want_read, want_write = ssl.SSLWantReadError, ssl.SSLWantWriteError
    to_tls = bytearray()
    to_plain = bytearray()
    tls_eof = plain_eof = False
    retry = 0  # the length of a TLS write to repeat (OpenSSL wants the same one again)
    read_wants_write = False
    try:
        tls.setblocking(False)
        plain.setblocking(False)
        tfd, pfd = tls.fileno(), plain.fileno()
        poller = select.poll()
        registered: dict[int, int] = {}
        while True:
            # TLS -> plain: read until OpenSSL has nothing left (its buffer included)
            read_wants_write = False
            while not tls_eof and len(to_plain) < _LIMIT:
                try:
                    data = tls.recv(_CHUNK)
                except want_read:
                    break
                except want_write:
                    read_wants_write = True
                    break
                if not data:
                    tls_eof = True
                    break
                to_plain += data
            if to_plain:
                try:
                    n = plain.send(to_plain)
                    del to_plain[:n]
                except (BlockingIOError, InterruptedError):
                    pass
            # plain -> TLS
            while not plain_eof and len(to_tls) < _LIMIT:
                try:
                    data = plain.recv(_CHUNK)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    plain_eof = True
                    break
                to_tls += data
            while to_tls:
                n = retry or min(len(to_tls), _CHUNK)
                try:
                    sent = tls.send(to_tls[:n])
                except (want_write, want_read):
                    retry = n
                    break
                retry = 0
                del to_tls[:sent]
            if (tls_eof and not to_plain) or (plain_eof and not to_tls):
                return
            events = {tfd: 0, pfd: 0}
            if not tls_eof and len(to_plain) < _LIMIT:
                events[tfd] |= select.POLLIN
            if to_tls or read_wants_write:
                events[tfd] |= select.POLLOUT | select.POLLIN
            if not plain_eof and len(to_tls) < _LIMIT:
                events[pfd] |= select.POLLIN
            if to_plain:
                events[pfd] |= select.POLLOUT
            for fd, ev in events.items():  # a side nothing is wanted from is not watched
                if registered.get(fd) != ev:  # (its hang-up would wake us in a loop)
                    if ev:
                        if fd in registered:
                            poller.modify(fd, ev)
                        else:
                            poller.register(fd, ev)
                        registered[fd] = ev
                    elif fd in registered:
                        poller.unregister(fd)
                        del registered[fd]
            for _, ev in poller.poll():
                if ev & (select.POLLERR | select.POLLNVAL) and not ev & select.POLLIN:
                    return
    except (OSError, ValueError):
        return  # a side broke (reset, TLS error): the relay ends
    finally:
        for s in (tls, plain):
            try:
                s.close()
            except OSError:
                pass
