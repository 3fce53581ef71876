"""TLS on a cluster's network ports (``quanta start --tls-cert/--tls-key/--tls-ca``): a TLS
head and member on loopback, with a CA and certificates made at test time (the
``cryptography`` package when installed, else the ``openssl`` command)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import quanta
from quanta._private import call_auth, cluster, tls, transport
from quanta._private.control_client import ControlClient

pytestmark = pytest.mark.timeout(120)

_EXT = """subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=critical,CA:FALSE
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
"""


def _openssl(d: str) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(_EXT)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        run("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "1",
            "-subj", f"/CN={ca}")
    for name, ca in (("node", "ca"), ("other", "other-ca")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", "ext.cnf")


def _cryptography(d: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(cn: str, key, issuer, issuer_key, ca: bool):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(name)
             .issuer_name(issuer.subject if issuer is not None else name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(name: str, key, cert) -> None:
        with open(os.path.join(d, f"{name}.crt"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(os.path.join(d, f"{name}.key"), os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    for ca, leaf in (("ca", "node"), ("other-ca", "other")):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = build(ca, ca_key, None, ca_key, True)
        key = ec.generate_private_key(ec.SECP256R1())
        write(ca, ca_key, ca_cert)
        write(leaf, key, build(leaf, key, ca_cert, ca_key, False))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A directory with ``ca.crt``, ``node.crt/.key`` (signed by it) and, from another CA,
    ``other-ca.crt``, ``other.crt/.key``."""
    d = str(tmp_path_factory.mktemp("tls"))
    try:
        _cryptography(d)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl command is "
                        "available to make test certificates")
        _openssl(d)
    for name in os.listdir(d):
        if name.endswith(".key"):
            os.chmod(os.path.join(d, name), 0o600)
    return d


def _files(d: str, name: str = "node", ca: str = "ca") -> tuple[str, str, str]:
    return (os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"),
            os.path.join(d, f"{ca}.crt"))


@pytest.fixture(scope="module")
def tls_cluster(certs):
    """A TLS head (1 CPU) and a TLS member (1 CPU, ``special``: 4), a driver on the head.
    At the end: every process, session directory and store directory is gone."""
    from quanta.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1}, tls=_files(certs))
    nodes = [c.head_node]
    try:
        member = c.add_node(num_cpus=1, resources={"special": 4})
        nodes.append(member)
        c.connect(namespace="tls")
        yield c, member
    finally:
        c.shutdown()
    assert not [n for n in nodes if cluster.session_pids(n.session_dir)], "processes left"
    assert not [n for n in nodes if os.path.exists(n.session_dir)]
    assert not [n for n in nodes if os.path.exists(n.object_store_dir)]


def _hostport(address: str) -> tuple[str, int]:
    return transport.parse_address(address)[1]


def _read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except (ConnectionResetError, TimeoutError):
        return got


def test_tasks_actors_and_objects_across_tls_nodes(tls_cluster):
    c, member = tls_cluster

    @quanta.remote(resources={"special": 1})
    def where():
        return quanta.get_runtime_context().get_node_id()

    @quanta.remote(resources={"special": 1})
    def total(x):
        return int(np.asarray(x).sum()), quanta.get_runtime_context().get_node_id()

    @quanta.remote(num_cpus=0, resources={"special": 1})
    class Echo:
        def node(self):
            return quanta.get_runtime_context().get_node_id()

        def echo(self, x):
            return x

        def make(self, n):
            return np.full(n, 3, dtype=np.int64)

    assert quanta.get(where.remote(), timeout=60) == member.node_id
    arr = np.arange(1_000_000, dtype=np.int64)  # 8 MB, in the head's store: pulled over TLS
    assert quanta.get(total.remote(quanta.put(arr)), timeout=60) == (int(arr.sum()),
                                                                        member.node_id)
    actor = Echo.remote()  # called from the driver through the member's relay (ROUTE)
    assert quanta.get(actor.node.remote(), timeout=60) == member.node_id
    assert [quanta.get(actor.echo.remote(i)) for i in range(20)] == list(range(20))
    big = quanta.get(actor.make.remote(1_500_000), timeout=60)  # 12 MB: head pulls it
    assert big.sum() == 4_500_000 and big.dtype == np.int64
    assert quanta.get(actor.echo.remote(b"x" * 50_000)) == b"x" * 50_000  # inline, 50 KB


def test_the_node_port_speaks_tls_only(tls_cluster, certs):
    c, member = tls_cluster
    for node in (c.head_node, member):
        host, port = _hostport(node.node_address)
        # a TLS client's hello is answered with a TLS record, not the cleartext greeting
        ctx = tls.TLSConfig(*_files(certs)).context(server=False)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing)
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(outgoing.read())
            first = sock.recv(5)
        assert first[:2] == b"\x16\x03", first  # a handshake record (ServerHello)
        # a cleartext client never gets the QNT1 greeting, and its proof closes the connection
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(os.urandom(call_auth.CLIENT_PROOF_SIZE))
            got = _read_until_closed(sock, timeout=10)
        assert not got.startswith(call_auth.MAGIC)
        with socket.create_connection((host, port), timeout=10) as sock, \
                pytest.raises((OSError, call_auth.AuthenticationError)):
            call_auth.client_handshake(sock, c.token)
    assert c.head_node.alive() and member.alive()


def test_a_certificate_of_another_ca_is_refused_on_both_ports(tls_cluster, certs):
    c, member = tls_cluster
    good = tls.TLSConfig(*_files(certs))
    intruders = [tls.TLSConfig(*_files(certs, "other", "ca")),  # trusts us, not trusted
                 tls.TLSConfig(*_files(certs, "other", "other-ca")),  # another cluster
                 tls.TLSConfig(*_files(certs, "node", "other-ca"))]  # does not trust us
    # the gRPC port: mutual TLS, and the token on top
    with ControlClient(c.address, c.token, tls=good) as client:
        assert client.cluster_info().head.node_id == c.head_node.node_id
    for config in [*intruders, False]:
        with ControlClient(c.address, c.token, tls=config, timeout=3) as client, \
                pytest.raises(ConnectionError):
            client.cluster_info()
    # the node port
    r = transport.Reactor(lambda conn, msg: None, token=c.token)
    r.start_thread()
    try:
        for config in intruders:
            r.tls = config
            with pytest.raises(OSError):
                conn = r.connect(member.node_address, timeout=5)
                conn.send((0,))  # TLS 1.3: a refused client certificate shows on first use
                time.sleep(0.5)
                assert not conn.closed
        r.tls = good
        r.token = "cd" * 16  # the right CA, a wrong token
        with pytest.raises(call_auth.AuthenticationError):
            r.connect(member.node_address, timeout=5)
        r.token = c.token
        conn = r.connect(member.node_address, timeout=5)
        assert not conn.closed and conn.via
    finally:
        r.stop()
        r.thread.join(5)
    assert c.head_node.alive() and member.alive()


def _socket_inodes() -> set[str]:
    """The sockets this process has open, by inode."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def _relays(old: set[threading.Thread] = frozenset()) -> list[threading.Thread]:
    """The relay threads running now, but for those in ``old``."""
    return [t for t in threading.enumerate() if t.name == "quanta-tls-relay" and t not in old]


def test_a_relay_ends_with_either_side_and_closes_both(certs):
    config = tls.TLSConfig(*_files(certs))
    listener = socket.create_server(("127.0.0.1", 0))
    before = _socket_inodes()
    old_relays = set(_relays())  # an earlier test's cluster may still hold some
    for closing in ("remote", "local"):
        done = threading.Event()
        box: dict = {}

        def serve(box=box, done=done):
            s, _ = listener.accept()
            box["tls"] = config.context(server=True).wrap_socket(s, server_side=True)
            box["plain"] = tls.connect_relayed(box["tls"])
            done.set()

        t = threading.Thread(target=serve)
        t.start()
        client = tls.client_wrap(socket.create_connection(listener.getsockname()), config)
        assert done.wait(10)
        t.join()
        plain = box["plain"]
        client.sendall(b"ping" * 100_000)
        got = b""
        plain.settimeout(10)
        while len(got) < 400_000:
            got += plain.recv(1 << 20)
        assert got == b"ping" * 100_000
        plain.sendall(b"pong")
        assert client.recv(4) == b"pong"
        if closing == "remote":
            client.close()
            assert plain.recv(10) == b""  # the relay ended: our end sees the close
            plain.close()
        else:
            plain.close()
            client.settimeout(10)
            assert client.recv(10) == b""
            client.close()
        # the relay thread ends and closes what it held: the TLS socket and its socketpair
        # end (counted by inode: other threads of this test process may open descriptors)
        deadline = time.monotonic() + 5
        while (_relays(old_relays) or _socket_inodes() - before) and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _relays(old_relays), "the relay thread is still running"
        assert box["tls"].fileno() == -1, "the relay left the TLS socket open"
        assert not _socket_inodes() - before, "the relay left a descriptor open"
    listener.close()


def test_settings_are_checked_and_named(certs, tmp_path, monkeypatch):
    cert, key, ca = _files(certs)
    assert tls.configure(None, None, None) is None
    with pytest.raises(tls.TLSConfigError, match="--tls-key, --tls-ca missing"):
        tls.configure(cert, None, None)
    with pytest.raises(tls.TLSConfigError, match="--tls-ca .*cannot read"):
        tls.configure(cert, key, str(tmp_path / "nope.crt"))
    loose = tmp_path / "loose.key"
    shutil.copy(key, loose)
    os.chmod(loose, 0o640)
    with pytest.raises(tls.TLSConfigError, match="--tls-key .*readable by other users"):
        tls.configure(cert, str(loose), ca)
    with pytest.raises(tls.TLSConfigError, match="not a usable certificate"):
        tls.configure(ca, key, ca)  # a certificate that does not match the key
    for var in (*tls.ENV_VARS, *tls.RAY_ENV_VARS, "RAY_USE_TLS"):
        monkeypatch.delenv(var, raising=False)
    assert tls.from_env() is None
    monkeypatch.setenv("RAY_USE_TLS", "1")
    for var, path in zip(tls.RAY_ENV_VARS, (cert, key, ca), strict=True):
        monkeypatch.setenv(var, path)
    assert tls.from_env().paths() == (cert, key, ca)
    monkeypatch.setenv("QUANTA_TLS_CERT", cert)
    with pytest.raises(tls.TLSConfigError, match="QUANTA_TLS_KEY"):
        tls.from_env()
    # the daemon refuses to start, naming the option; so does `quanta start`
    session = tmp_path / "session"
    session.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "quanta._private.node.daemon", "--session-dir", str(session),
         "--num-cpus", "1", "--memory", "1000000", "--object-store-memory", "1000000",
         "--tls-cert", cert, "--tls-key", str(loose), "--tls-ca", ca],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--tls-key" in out.stderr and "chmod 600" in out.stderr
    from quanta import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["start", "--head", "--tls-cert", cert])
    assert e.value.code == 2


def test_clients_outside_a_node_take_the_settings_from_the_environment(tls_cluster, certs,
                                                                         monkeypatch):
    c, _ = tls_cluster
    for var, path in zip(tls.ENV_VARS, _files(certs), strict=True):
        monkeypatch.setenv(var, path)
    with ControlClient(c.address, c.token) as client:  # e.g. init(address="host:port")
        assert len(client.list_nodes()) == 2


_MEMBER_WORK = """
import json, sys
import quanta

quanta.init(address=sys.argv[1])

@quanta.remote(resources={"special": 1})
def where(data):
    return quanta.get_runtime_context().get_node_id(), len(data)

@quanta.remote(resources={"special": 1})
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

node, size = quanta.get(where.remote(b"z" * (3 << 20)))
c = Counter.remote()
calls = quanta.get([c.incr.remote() for _ in range(3)])
back = quanta.get(quanta.remote(resources={"special": 1})(lambda: b"y" * (5 << 20)).remote())
print(json.dumps({"node": node, "size": size, "calls": calls, "back": len(back)}), flush=True)
"""


def test_a_tls_cluster_started_as_the_readme_says(certs):
    """`quanta start --head --tls-*`, a member joining with `--token-file` and the same
    options, and a driver with `init(address="auto")` and with the head's `HOST:PORT`: work
    runs on the member, through TLS."""
    from test_cli import Shell

    sh = Shell()
    tls_args = ("--tls-cert", _files(certs)[0], "--tls-key", _files(certs)[1],
                "--tls-ca", _files(certs)[2])
    try:
        head = sh.start(*tls_args)
        token_file = os.path.join(head["session_dir"], "cluster_token")
        member = sh.join(head, "--token-file", token_file, "--num-cpus", "2",
                         "--resources", '{"special": 4}',
                         *tls_args)
        for address in ("auto", head["control_address"]):
            res = subprocess.run([sys.executable, "-c", _MEMBER_WORK, address], env=sh.env,
                                 capture_output=True, text=True, timeout=90, cwd=sh.tmp,
                                 stdin=subprocess.DEVNULL)
            assert res.returncode == 0, res.stdout + res.stderr[-3000:]
            out = json.loads(res.stdout.strip().splitlines()[-1])
            assert out == {"node": member["node_id"], "size": 3 << 20, "calls": [1, 2, 3],
                           "back": 5 << 20}, out
        # the node ports speak TLS only: a cleartext client gets no greeting
        for rec in (head, member):
            node = next(n for n in cluster.rpc(rec["address"], "nodes")
                        if n["NodeID"] == rec["node_id"])
            with socket.create_connection(_hostport(node["NodeAddress"]), timeout=5) as s:
                s.sendall(b"\x00" * 64)
                assert not _read_until_closed(s, 15).startswith(b"QNT1")
        res = sh.quanta("stop")
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        leaked = [r["session_dir"] for r in sh.sessions if cluster.session_pids(r["session_dir"])]
        sh.cleanup()
    assert not leaked, f"processes left running: {leaked}"
