"""The ``quanta`` command line (``start --head``, ``stop``, ``status``) and drivers that
connect to a node started from the shell (``init(address="auto" | "host:port")``).

Every test runs real processes with a private TMPDIR (so a private record file,
``$TMPDIR/quanta/current_cluster``), and its fixture stops whatever it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import quanta
from quanta._private import cluster

pytestmark = pytest.mark.timeout(90)

# A driver that connects (argv[1] is the address; none: init() reads QUANTA_ADDRESS /
# RAY_ADDRESS), runs a task, puts a shared-memory object and prints what it saw. It exits
# without calling shutdown() (the atexit hook disconnects it).
_DRIVER = textwrap.dedent("""
    import json, os, sys
    import quanta

    info = quanta.init(address=sys.argv[1]) if len(sys.argv) > 1 else quanta.init()

    @quanta.remote
    def double(x):
        return x * 2, os.getpid()

    value, worker = quanta.get(double.remote(21))
    big = quanta.put(b"x" * (2 << 20))
    assert len(quanta.get(big)) == 2 << 20
    print(json.dumps({"info": info, "value": value, "worker": worker,
                      "gcs": quanta.get_runtime_context().gcs_address,
                      "resources": quanta.cluster_resources()}), flush=True)
""")


class Shell:
    """Runs ``quanta ...`` and drivers with a private TMPDIR; remembers what it started."""

    def __init__(self) -> None:
        # Short: Unix socket paths under it must stay within 108 bytes.
        self.tmp = tempfile.mkdtemp(prefix="qcli-", dir="/tmp")
        self.env = dict(os.environ, TMPDIR=self.tmp, PYTHONUNBUFFERED="1")
        self.env.pop("QUANTA_ADDRESS", None)
        self.env.pop("RAY_ADDRESS", None)
        self.record_path = os.path.join(self.tmp, "quanta", "current_cluster")
        self.sessions: list[dict] = []

    def quanta(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "quanta.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def start(self, *args: str) -> dict:
        port = () if "--port" in args else ("--port", "0")  # never the shared default 6379
        res = self.quanta("start", "--head", "--num-cpus", "2", *port, *args)
        assert res.returncode == 0, res.stdout + res.stderr
        rec = self.record()
        assert rec is not None, f"no record at {self.record_path}"
        self.sessions.append(rec)
        return rec

    def join(self, head: dict, *args: str) -> dict:
        """``quanta start --address`` a member node of ``head``; returns its record."""
        before = {r["pid"] for r in self.members()}
        res = self.quanta("start", "--address", head["control_address"], "--num-cpus", "1",
                          *args)
        assert res.returncode == 0, res.stdout + res.stderr
        rec = next(r for r in self.members() if r["pid"] not in before)
        self.sessions.append(rec)
        return rec

    def members(self) -> list[dict]:
        d = os.path.join(self.tmp, "quanta", "members")
        out = []
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if name.endswith(".json"):
                with open(os.path.join(d, name)) as f:
                    out.append(json.load(f))
        return out

    def record(self) -> dict | None:
        try:
            with open(self.record_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def driver(self, *args: str, env: dict | None = None) -> dict:
        res = subprocess.run([sys.executable, "-c", _DRIVER, *args], env=env or self.env,
                             capture_output=True, text=True, timeout=60, cwd=self.tmp,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    def cleanup(self) -> None:
        """Last resort: stop what a failed test left running, by the record and by pid."""
        if self.record() is not None or self.members():
            try:
                self.quanta("stop", "--force", timeout=30)
            except Exception:  # noqa: BLE001
                pass
        for rec in self.sessions:
            for pid in cluster.session_pids(rec["session_dir"]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(rec["object_store_dir"], ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def shell():
    sh = Shell()
    try:
        yield sh
    finally:
        leaked = [(r["session_dir"], cluster.session_pids(r["session_dir"]))
                  for r in sh.sessions]
        sh.cleanup()
    leaked = [x for x in leaked if x[1]]
    assert not leaked, f"processes left running: {leaked}"


@pytest.fixture
def private_tmp(monkeypatch):
    """This process's tempfile.gettempdir() (so its record file) points to a fresh dir."""
    tmp = tempfile.mkdtemp(prefix="qcli-", dir="/tmp")
    monkeypatch.setattr(tempfile, "tempdir", tmp)
    monkeypatch.delenv("QUANTA_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if quanta.is_initialized():
        quanta.shutdown()
    yield tmp
    assert not quanta.is_initialized()
    shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------
def test_start_status_drivers_stop(shell, helpers):
    rec = shell.start()
    daemon = rec["pid"]
    assert helpers.pid_alive(daemon)
    assert rec["address"].startswith("unix://") and os.path.isdir(rec["session_dir"])

    status = shell.quanta("status")
    assert status.returncode == 0, status.stderr
    assert "0.0/2.0 CPU" in status.stdout
    assert str(daemon) in status.stdout and "Workers:" in status.stdout

    # A driver connects, runs a task, puts a shared-memory object, exits.
    out = shell.driver("auto")
    assert out["value"] == 42
    assert out["gcs"] == rec["address"]
    assert out["resources"]["CPU"] == 2.0
    node = cluster.rpc(rec["address"], "nodes")[0]
    assert out["info"] == json.loads(json.dumps(node))  # the same shape as a local node's
    assert out["info"]["DaemonAddress"] == rec["address"]

    # The daemon survives its driver; what the driver owned is freed.
    assert helpers.pid_alive(daemon)
    assert helpers.wait_until(
        lambda: cluster.rpc(rec["address"], "store_stats")["num_objects"] == 0, 10)
    assert helpers.wait_until(
        lambda: all(j["is_dead"] for j in cluster.rpc(rec["address"], "status")["jobs"]), 10)
    sockets = os.listdir(os.path.join(rec["session_dir"], "sockets"))
    assert not [s for s in sockets if s.startswith("driver-")], sockets

    # A second driver, finding the cluster through RAY_ADDRESS, still works.
    out2 = shell.driver(env=dict(shell.env, RAY_ADDRESS="auto"))
    assert out2["value"] == 42 and out2["info"]["NodeID"] == rec["node_id"]
    assert helpers.pid_alive(daemon)
    assert helpers.wait_until(
        lambda: all(j["is_dead"] for j in cluster.rpc(rec["address"], "status")["jobs"]), 10)
    status = shell.quanta("status")
    assert status.returncode == 0 and "0 running, 2 finished" in status.stdout, status.stdout

    family = {daemon, *helpers.descendants(daemon)}
    assert len(family) >= 2  # the daemon and its zygote at least
    stop = shell.quanta("stop")
    assert stop.returncode == 0, stop.stderr
    assert "Stopped" in stop.stdout and str(daemon) in stop.stdout
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in family), 10), \
        [p for p in family if helpers.pid_alive(p)]
    assert not os.path.exists(rec["object_store_dir"])
    assert not os.path.exists(rec["session_dir"])
    assert shell.record() is None

    status = shell.quanta("status")
    assert status.returncode == 1 and "no Quanta cluster is running" in status.stderr


def test_killed_driver_leaves_the_node_running(shell, helpers):
    rec = shell.start()
    script = textwrap.dedent("""
        import os, sys, time
        import quanta
        quanta.init(address="auto")

        @quanta.remote
        def pid():
            return os.getpid()

        keep = [quanta.put(b"x" * (2 << 20)) for _ in range(3)]
        print(quanta.get(pid.remote()), flush=True)
        time.sleep(1000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=shell.env, cwd=shell.tmp,
                            stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"driver printed {line!r} (exit code {proc.poll()})"
        assert cluster.rpc(rec["address"], "store_stats")["num_objects"] == 3
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    # The node lives on, frees what the dead driver owned and marks its job finished.
    assert helpers.wait_until(
        lambda: cluster.rpc(rec["address"], "store_stats")["num_objects"] == 0, 10)
    assert helpers.wait_until(
        lambda: all(j["is_dead"] for j in cluster.rpc(rec["address"], "status")["jobs"]), 10)
    assert helpers.pid_alive(rec["pid"])
    assert shell.driver("auto")["value"] == 42
    assert shell.quanta("stop").returncode == 0


def test_second_head_fails(shell):
    rec = shell.start()
    res = shell.quanta("start", "--head", "--num-cpus", "1", "--port", "0")
    assert res.returncode == 1
    assert "already running" in res.stderr and str(rec["pid"]) in res.stderr
    assert "Traceback" not in res.stderr
    assert shell.record() == rec  # the first one is still the recorded one
    assert cluster.probe(rec) is not None
    res = shell.quanta("stop")
    assert res.returncode == 0 and shell.record() is None


def test_port_and_stale_record(shell, helpers):
    # A record left by a daemon that is gone: status says so, start replaces it.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    os.makedirs(os.path.dirname(shell.record_path))
    stale = {"address": f"unix://{shell.tmp}/nowhere.sock", "pid": gone.pid,
             "node_id": "0" * 32, "session_dir": f"{shell.tmp}/quanta-session-gone"}
    with open(shell.record_path, "w") as f:
        json.dump(stale, f)
    status = shell.quanta("status")
    assert status.returncode == 1 and "is gone" in status.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = shell.start("--port", str(port), "--node-ip-address", "127.0.0.1")
    assert rec["pid"] != gone.pid
    assert rec["control_address"] == f"127.0.0.1:{port}"
    # Over TCP: the driver learns the node's local Unix address and uses it.
    out = shell.driver(f"127.0.0.1:{port}")
    assert out["value"] == 42 and out["gcs"] == rec["address"]
    out = shell.driver(f"tcp://127.0.0.1:{port}")
    assert out["info"]["NodeID"] == rec["node_id"]
    assert shell.quanta("stop").returncode == 0
    assert helpers.wait_until(lambda: not helpers.pid_alive(rec["pid"]), 10)


def test_port_in_use(shell):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = shell.quanta("start", "--head", "--num-cpus", "1", "--port", str(port),
                           "--node-ip-address", "127.0.0.1")
    assert res.returncode == 1
    assert "cannot listen on" in res.stderr and "Traceback" not in res.stderr
    assert shell.record() is None
    assert not [n for n in os.listdir(shell.tmp) if n.startswith("quanta-session-")]


def test_stop_force_and_stale(shell, helpers):
    rec = shell.start()
    family = {rec["pid"], *helpers.descendants(rec["pid"])}
    res = shell.quanta("stop", "--force")
    assert res.returncode == 0 and "Killed" in res.stdout, res.stdout + res.stderr
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in family), 10)
    assert not os.path.exists(rec["object_store_dir"])
    assert not os.path.exists(rec["session_dir"])
    assert shell.record() is None

    # stop with a stale record: cleans it up, exit 0
    os.makedirs(os.path.dirname(shell.record_path), exist_ok=True)
    with open(shell.record_path, "w") as f:
        json.dump(dict(rec, address=f"unix://{shell.tmp}/nowhere.sock"), f)
    res = shell.quanta("stop")
    assert res.returncode == 0 and "no longer running" in res.stdout
    assert shell.record() is None


@pytest.mark.parametrize("how", ["stop", "sigint"])
def test_block_stays_in_foreground(shell, helpers, how):
    cmd = [sys.executable, "-m", "quanta.cli", "start", "--head", "--num-cpus", "1", "--port", "0", "--block"]
    proc = subprocess.Popen(cmd, env=shell.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert helpers.wait_until(
            lambda: shell.record() is not None or proc.poll() is not None, 30)
        rec = shell.record()
        assert rec is not None, proc.communicate(timeout=10)
        shell.sessions.append(rec)
        assert cluster.probe(rec) is not None
        time.sleep(0.2)
        assert proc.poll() is None  # still in the foreground
        if how == "stop":
            assert shell.quanta("stop").returncode == 0
        else:  # Ctrl-C in its terminal
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err
        assert helpers.wait_until(lambda: not helpers.pid_alive(rec["pid"]), 10)
        assert not os.path.exists(rec["session_dir"])
        assert shell.record() is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nothing_running(shell):
    res = shell.quanta("status")
    assert res.returncode == 1
    assert "no Quanta cluster is running" in res.stderr and "quanta start --head" in res.stderr
    res = shell.quanta("stop")
    assert res.returncode == 0 and "No Quanta cluster is running" in res.stdout
    res = shell.quanta("start", "--address=10.1.2.3:6379")  # no head here: no token either
    assert res.returncode == 2
    assert "no cluster token" in res.stderr and "Traceback" not in res.stderr
    res = shell.quanta("start")
    assert res.returncode == 2 and "--head" in res.stderr
    res = shell.quanta("start", "--head", "--resources", "[1]")
    assert res.returncode == 2 and "--resources" in res.stderr
    assert shell.record() is None


# ------------------------------------------------------------------------------------------
# init(address=...) errors, in this process
# ------------------------------------------------------------------------------------------
def test_init_auto_with_nothing_running(private_tmp):
    path = os.path.join(private_tmp, "quanta", "current_cluster")
    with pytest.raises(ConnectionError) as e:
        quanta.init(address="auto")
    assert path in str(e.value) and "quanta start --head" in str(e.value)

    # a record whose daemon is gone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump({"address": f"unix://{private_tmp}/nowhere.sock", "pid": gone.pid}, f)
    with pytest.raises(ConnectionError) as e:
        quanta.init(address="auto")
    assert "not running" in str(e.value) and path in str(e.value)
    assert "quanta start --head" in str(e.value)

    with pytest.raises(ConnectionError):
        quanta.init(address=f"unix://{private_tmp}/nowhere.sock")
    with pytest.raises(ValueError, match="ray://"):
        quanta.init(address="ray://127.0.0.1:10001")
    with pytest.raises(ValueError, match="expected"):
        quanta.init(address="not an address")


def test_init_address_with_resources_is_an_error(private_tmp, monkeypatch):
    with pytest.raises(ValueError, match="cannot be set when connecting to an existing cluster"):
        quanta.init(address="auto", num_cpus=2)
    with pytest.raises(ValueError, match="object_store_memory="):
        quanta.init(address="127.0.0.1:6379", object_store_memory=10**9)
    monkeypatch.setenv("QUANTA_ADDRESS", "auto")
    with pytest.raises(ValueError, match="cannot be set when connecting"):
        quanta.init(num_gpus=1)
