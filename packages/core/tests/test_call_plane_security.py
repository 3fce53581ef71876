"""The call plane as a network service: nothing from a TCP peer is unpickled before it proves
it holds the cluster token, and no frame, however malformed, stops the process that reads it
(transport.py's error boundary, call_auth.py's handshake)."""

from __future__ import annotations

import os
import pickle
import random
import socket
import struct
import time

import pytest
import quanta
from quanta._private import call_auth, cluster, transport
from quanta._private import messages as m
from quanta._private.testing import pid_alive

_HEADER = struct.Struct("<I")


class _RunsCommand:
    """A pickle that runs a shell command when loaded: what an attacker would send."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _tcp(address: str, timeout: float = 5.0) -> socket.socket:
    family, sockaddr = transport.parse_address(address)
    sock = socket.create_connection(sockaddr, timeout=timeout)
    return sock


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes the connection (fails on a timeout)."""
    sock.settimeout(timeout)
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _call(sock: socket.socket, method: str, *args):
    sock.sendall(transport.frame((m.CALL, 7, method, args)))
    size = _HEADER.unpack(transport.recv_exact(sock, 4))[0]
    reply = pickle.loads(transport.recv_exact(sock, size))
    assert reply[:3] == (m.REPLY, 7, True), reply
    return reply[3]


@pytest.fixture
def head(make_cluster):
    c, _ = make_cluster({"num_cpus": 1})
    return c


def _works(c) -> None:
    """The node still serves a new driver's tasks."""
    c.connect(namespace="check")
    try:
        @quanta.remote(num_cpus=0)
        def add(a, b):
            return a + b

        assert quanta.get(add.remote(1, 2), timeout=60) == 3
    finally:
        quanta.shutdown()


def test_a_pickle_sent_without_the_handshake_is_never_loaded(head, tmp_path):
    marker = tmp_path / "ran"
    evil = pickle.dumps(_RunsCommand(f"touch {marker}"))
    for payload in (evil, pickle.dumps((m.CALL, 1, "kv_get", (_RunsCommand(f"touch {marker}"),)))):
        with _tcp(head.head_node.node_address) as sock:
            sock.sendall(_HEADER.pack(len(payload)) + payload)
            got = _read_until_closed(sock, timeout=call_auth.HANDSHAKE_TIMEOUT_S + 5)
        # the server's greeting and nothing else: no reply, no frame
        assert got[:4] == call_auth.MAGIC and len(got) == call_auth.SERVER_HELLO_SIZE
    # had the daemon loaded either pickle, it would have run the command before the close
    assert not marker.exists()
    assert head.head_node.alive()
    _works(head)


def test_a_wrong_token_is_refused_and_a_right_one_is_served(head):
    with _tcp(head.head_node.node_address) as sock, pytest.raises(call_auth.AuthenticationError):
        call_auth.client_handshake(sock, "ab" * 16)
    with _tcp(head.head_node.node_address) as sock:
        call_auth.client_handshake(sock, head.token)
        nodes = _call(sock, "nodes")
    assert [n["NodeID"] for n in nodes] == [head.head_node.node_id]
    # a ROUTE without the handshake is not handed to the process it names
    with _tcp(head.head_node.node_address) as sock:
        sock.sendall(transport.frame((m.ROUTE, "driver-x")))
        got = _read_until_closed(sock, timeout=call_auth.HANDSHAKE_TIMEOUT_S + 5)
    assert len(got) == call_auth.SERVER_HELLO_SIZE


def test_a_process_without_the_token_cannot_connect_over_tcp(head):
    r = transport.Reactor(lambda c, msg: None)
    r.start_thread()
    try:
        with pytest.raises(call_auth.AuthenticationError, match="no cluster token"):
            r.connect(head.head_node.node_address)
        r.token = "cd" * 16
        with pytest.raises(call_auth.AuthenticationError):
            r.connect(head.head_node.node_address)
        r.token = head.token
        conn = r.connect(head.head_node.node_address)
        assert not conn.closed
    finally:
        r.stop()
        r.thread.join(5)


def test_a_silent_connection_is_closed_after_the_handshake_timeout(monkeypatch, make_cluster):
    monkeypatch.setenv("QUANTA_HANDSHAKE_TIMEOUT_S", "1")
    c, _ = make_cluster({"num_cpus": 1})
    with _tcp(c.head_node.node_address) as sock:
        start = time.monotonic()
        got = _read_until_closed(sock, timeout=10)
        assert time.monotonic() - start < 8
    assert len(got) == call_auth.SERVER_HELLO_SIZE


# -- malformed frames ------------------------------------------------------------------------
def _malformed_frames() -> list[tuple[str, bytes]]:
    def framed(data: bytes) -> bytes:
        return _HEADER.pack(len(data)) + data

    def msg(obj) -> bytes:
        return framed(pickle.dumps(obj))

    return [
        ("not a pickle", framed(b"\x00\x01garbage that is not a pickle\xff")),
        ("truncated pickle", framed(pickle.dumps((m.CALL, 1, "nodes", ()))[:-3])),
        ("a pickled int", msg(12345)),
        ("an empty tuple", msg(())),
        ("a short CALL", msg((m.CALL, 1))),
        ("a CALL whose method is not a str", msg((m.CALL, 1, 5, ()))),
        ("a CALL whose args are not a tuple", msg((m.CALL, 1, "nodes", 5))),
        ("a CALL of an unknown method", msg((m.CALL, 1, "no_such_method", ()))),
        ("a CALL with wrong arguments", msg((m.CALL, 1, "nodes", (1, 2, 3)))),
        ("an unknown NOTIFY", msg((m.NOTIFY, "no_such_method", ()))),
        ("a short NOTIFY", msg((m.NOTIFY,))),
        ("a NOTIFY with wrong arguments", msg((m.NOTIFY, "job_started", (1,)))),
        ("a malformed OBJECT_SEALED", msg((m.OBJECT_SEALED,))),
        ("an OBJECT_SEALED of nonsense", msg((m.OBJECT_SEALED, 5, "big"))),
        ("a malformed OBJECT_FREE", msg((m.OBJECT_FREE, 5))),
        ("an OBJECT_FREE of nonsense", msg((m.OBJECT_FREE, [1, None], "x", 3))),
        ("a malformed LEASE_REQUEST", msg((m.LEASE_REQUEST, 1, "cpu"))),
        ("a malformed LEASE_RETURN", msg((m.LEASE_RETURN,))),
        ("an unknown message type", msg((999, "x"))),
        ("a message type that is not an int", msg(("CALL", 1, "nodes", ()))),
        ("a malformed ROUTE", msg((m.ROUTE,))),
        ("a 4 GB length prefix", _HEADER.pack(0xFFFFFFFF) + b"x" * 65536),
    ]


def _random_frames(count: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    kinds = [m.CALL, m.NOTIFY, m.LEASE_REQUEST, m.LEASE_RETURN, m.LEASE_CANCEL, m.OBJECT_SEALED,
             m.OBJECT_FREE, m.WORKER_BLOCKED, m.WORKER_UNBLOCKED, m.REPLY, m.OBJECT_PULL]
    junk = [None, 0, -1, 2**70, "", "x" * 70, b"\x00", [], {}, (), 1.5, float("nan"), [None],
            {"CPU": -1}, {"CPU": "a"}]
    out = []
    for _ in range(count):
        if rnd.random() < 0.3:
            data = rnd.randbytes(rnd.randrange(0, 200))
        else:
            items = [rnd.choice(kinds)] + [rnd.choice(junk) for _ in range(rnd.randrange(0, 6))]
            data = pickle.dumps(tuple(items))
        out.append(_HEADER.pack(len(data)) + data)
    return out


def _send_each(connect, frames: list[tuple[str, bytes]], daemon_pid: int) -> None:
    for what, data in frames:
        with connect() as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                _read_until_closed(sock, timeout=10)
            except OSError:  # the daemon closed it first (it may: the frame was bad)
                pass
        assert pid_alive(daemon_pid), f"the daemon died of {what}"


def test_malformed_frames_on_the_unix_socket_leave_the_daemon_serving(start_quanta):
    info = start_quanta(num_cpus=1)
    from quanta._private import api

    pid = api._session.proc.pid
    path = info["DaemonAddress"][len("unix://"):]

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        return s

    rss = _rss_kib(pid)
    _send_each(connect, _malformed_frames(), pid)
    _send_each(connect, [("random", f) for f in _random_frames(150, seed=12)], pid)
    assert _rss_kib(pid) - rss < 100 * 1024  # the 4 GB prefix was not buffered

    @quanta.remote
    def echo(x):
        return x

    big = b"y" * (1 << 20)
    assert quanta.get(echo.remote(big), timeout=60) == big
    assert quanta.get(quanta.put(big), timeout=60) == big


def test_malformed_frames_on_the_node_port_leave_the_node_serving(head):
    pid = head.head_node.pid

    def connect() -> socket.socket:
        s = _tcp(head.head_node.node_address, timeout=10)
        call_auth.client_handshake(s, head.token)
        return s

    _send_each(connect, _malformed_frames(), pid)
    _send_each(connect, [("random", f) for f in _random_frames(100, seed=34)], pid)
    # unauthenticated garbage, of every size around the handshake's
    for n in (0, 1, 35, 64, 65, 4096):
        with _tcp(head.head_node.node_address) as sock:
            sock.sendall(os.urandom(n))
            sock.shutdown(socket.SHUT_WR)
            _read_until_closed(sock, timeout=call_auth.HANDSHAKE_TIMEOUT_S + 5)
    assert head.head_node.alive()
    _works(head)


def test_a_call_whose_handler_raises_is_answered_with_the_error(start_quanta):
    info = start_quanta(num_cpus=1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(info["DaemonAddress"][len("unix://"):])
        sock.sendall(transport.frame((m.CALL, 3, "no_such_method", ())))
        size = _HEADER.unpack(transport.recv_exact(sock, 4))[0]
        reply = pickle.loads(transport.recv_exact(sock, size))
        assert reply[:3] == (m.REPLY, 3, False)
        assert "no_such_method" in str(reply[3])
        # the same connection goes on serving
        assert any(n["NodeID"] == info["NodeID"] for n in _call(sock, "nodes"))
    assert cluster.rpc(info["DaemonAddress"], "nodes")
