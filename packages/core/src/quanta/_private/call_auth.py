"""Mutual authentication of a TCP connection of the call and data planes, before any frame.

Every TCP connection to a node's port starts with this exchange of fixed-size raw bytes
(nothing is unpickled until it succeeds), with ``token`` the cluster's shared secret:

1. server -> client: ``MAGIC`` + a fresh 32-byte nonce ``ns``                (36 bytes)
2. client -> server: a fresh 32-byte nonce ``nc`` + HMAC(token, "client" ns nc) (64 bytes)
3. server -> client: HMAC(token, "server" nc ns)                              (32 bytes)

Each side proves it holds the token over the other side's fresh nonce, so a recorded exchange
cannot be replayed, and the two proofs differ by their label, so one side's proof cannot be
reflected back as the other's. Digests are compared in constant time. A server that receives a
wrong proof closes the connection without answering; a client that receives a wrong proof (or
a server that is not a Quanta node) raises :class:`AuthenticationError`.

The server's side runs inside the reactor on a non-blocking socket
(:class:`ServerHandshake`, fed by ``Connection``); the client's side blocks
(:func:`client_handshake`), since clients connect from a thread that waits anyway. With TLS
(``tls.py``) the exchange runs inside the TLS session, on blocking sockets on both sides
(:func:`server_handshake` on the relay's thread).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from typing import Any

MAGIC = b"QNT1"
NONCE_SIZE = 32
DIGEST_SIZE = 32
SERVER_HELLO_SIZE = len(MAGIC) + NONCE_SIZE
CLIENT_PROOF_SIZE = NONCE_SIZE + DIGEST_SIZE
# a server closes a connection that has not proved itself by then
HANDSHAKE_TIMEOUT_S = float(os.environ.get("QUANTA_HANDSHAKE_TIMEOUT_S", 10.0))


class AuthenticationError(ConnectionError):
    """The other end of a TCP connection did not prove it holds the cluster token."""


def _proof(token: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(token, label + first + second, hashlib.sha256).digest()


class ServerHandshake:
    """The accepting side of one connection's handshake (see the module docstring)."""

    __slots__ = ("_token", "_nonce", "hello")

    def __init__(self, token: bytes) -> None:
        self._token = token
        self._nonce = os.urandom(NONCE_SIZE)
        self.hello = MAGIC + self._nonce  # sent first, as soon as the connection is accepted

    def answer(self, client_proof: bytes) -> bytes | None:
        """The server's proof for the client's ``CLIENT_PROOF_SIZE`` bytes, or None when the
        client does not hold the token."""
        nc, digest = client_proof[:NONCE_SIZE], client_proof[NONCE_SIZE:CLIENT_PROOF_SIZE]
        if len(digest) != DIGEST_SIZE or not hmac.compare_digest(
                digest, _proof(self._token, b"client", self._nonce, nc)):
            return None
        return _proof(self._token, b"server", nc, self._nonce)


def _recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AuthenticationError(
                f"the node closed the connection during authentication ({what}): it "
                "expects another cluster token, or is not a Quanta node port")
        buf += chunk
    return bytes(buf)


def client_handshake(sock: socket.socket, token: str | bytes | None) -> None:
    """Authenticate the connected blocking socket ``sock`` to the node port it reached, and
    that node to us. Raises AuthenticationError (or OSError, socket.timeout) on failure."""
    if not token:
        raise AuthenticationError(_NO_TOKEN)
    key = token.encode() if isinstance(token, str) else token
    hello = _recv_exact(sock, SERVER_HELLO_SIZE, "hello")
    if hello[:len(MAGIC)] != MAGIC:
        raise AuthenticationError("the peer is not a Quanta node port (wrong greeting)")
    ns = hello[len(MAGIC):]
    nc = os.urandom(NONCE_SIZE)
    sock.sendall(nc + _proof(key, b"client", ns, nc))
    answer = _recv_exact(sock, DIGEST_SIZE, "proof")
    if not hmac.compare_digest(answer, _proof(key, b"server", nc, ns)):
        raise AuthenticationError("the node did not prove it holds the cluster token")


_NO_TOKEN = ("this process has no cluster token, so it cannot open TCP connections to other "
             "nodes (a process learns the token from its node daemon when the node is part "
             "of a cluster)")


def secure_client(sock: socket.socket, token: str | None, tls: Any = None) -> socket.socket:
    """Make the connected blocking TCP socket ``sock`` a trusted channel to the node port it
    reached: TLS first when ``tls`` (a ``tls.TLSConfig``) is given, then the token's
    handshake. Returns the socket to use from now on (the TLS one, with TLS); on failure
    closes it and raises AuthenticationError (or OSError, ssl.SSLError, socket.timeout)."""
    if tls is not None:
        if not token:  # fail as without TLS, before a TLS handshake that cannot help
            raise AuthenticationError(_NO_TOKEN)
        from quanta._private import tls as _tls

        sock = _tls.client_wrap(sock, tls)
    try:
        client_handshake(sock, token)
    except BaseException:
        sock.close()
        raise
    return sock


def server_handshake(sock: socket.socket, token: bytes) -> None:
    """The accepting side on the blocking socket ``sock`` (a TLS connection's relay thread).
    Raises AuthenticationError (or OSError, socket.timeout) when the client fails."""
    hs = ServerHandshake(token)
    sock.sendall(hs.hello)
    try:
        proof = _recv_exact(sock, CLIENT_PROOF_SIZE, "proof")
    except AuthenticationError:
        raise AuthenticationError("the client closed the connection before it proved it "
                                  "holds the cluster token") from None
    answer = hs.answer(proof)
    if answer is None:
        raise AuthenticationError("the client did not prove it holds the cluster token")
    sock.sendall(answer)
