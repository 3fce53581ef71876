"""Clusters of several node daemons on this machine: the control plane over gRPC (the
committed protocol code, the token), membership (register, heartbeats, death) and the CLI."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import pytest
import test_cli
from quanta._private.node.control_store import ControlStore
from quanta._private.node.membership import ALIVE, DEAD, Membership
from quanta._private.node.storage import open_storage

shell = test_cli.shell  # the fixture of the CLI tests: a private TMPDIR, stops what it starts
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


# ------------------------------------------------------------------------------------------
# the protocol
# ------------------------------------------------------------------------------------------
def test_generated_protocol_code_is_current(tmp_path):
    pytest.importorskip("grpc_tools", reason="needs grpcio-tools (the core tox env has it)")
    res = subprocess.run([os.path.join(ROOT, "scripts", "gen_proto"), str(tmp_path)],
                         env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    committed = os.path.join(ROOT, "packages", "core", "src", "quanta", "_proto")
    fresh = tmp_path / "quanta" / "_proto"
    names = sorted(n for n in os.listdir(fresh) if n.endswith(".py"))
    assert names == ["control_pb2.py", "control_pb2_grpc.py"]
    stale = [n for n in names if not filecmp.cmp(fresh / n, os.path.join(committed, n),
                                                 shallow=False)]
    assert not stale, f"regenerate with scripts/gen_proto: {stale} differ from the .proto"


# ------------------------------------------------------------------------------------------
# the membership table (no processes)
# ------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _node(node_id: str, cpus: float = 2.0) -> dict:
    return {"node_id": node_id, "daemon_address": f"unix:///x/{node_id}.sock",
            "node_ip": "127.0.0.1", "hostname": "h", "is_head": False,
            "total": {"CPU": cpus}, "available": {"CPU": cpus}, "pid": 1, "session_dir": "/x"}


def test_membership_heartbeats_and_death():
    clock = Clock()
    store = ControlStore(open_storage("memory"))
    ms = Membership(store, clock=clock, dead_after_s=3.0)
    ms.register(_node("a"))
    ms.register(_node("b"))
    assert [r["node_id"] for r in ms.alive()] == ["a", "b"]
    clock.now += 2.0
    assert ms.heartbeat("a", {"CPU": 1.0})
    clock.now += 2.0  # b silent for 4 s, a for 2 s
    assert ms.sweep() == ["b"]
    assert ms.nodes["b"]["state"] == DEAD
    assert "no heartbeat for 4.0 s" in ms.nodes["b"]["death_reason"]
    assert ms.nodes["a"]["state"] == ALIVE and ms.nodes["a"]["available"] == {"CPU": 1.0}
    assert not ms.heartbeat("b", {"CPU": 2.0}), "a dead node must register again"
    assert not ms.heartbeat("nobody", {})
    ms.register(_node("b"))
    assert ms.nodes["b"]["state"] == ALIVE and ms.nodes["b"]["death_reason"] == ""
    assert ms.mark_dead("a", "left the cluster") and not ms.mark_dead("a", "again")
    assert [r["node_id"] for r in ms.all()] == ["b", "a"]  # alive first
    with pytest.raises(ValueError, match="node_id"):
        ms.register(_node(""))


def test_membership_survives_a_restart_of_the_head(tmp_path):
    clock = Clock()
    path = str(tmp_path / "control.sqlite3")
    store = ControlStore(open_storage(path))
    ms = Membership(store, clock=clock, dead_after_s=3.0)
    ms.register(_node("a"))
    ms.register(_node("b"))
    ms.mark_dead("b", "left the cluster")
    store.storage.flush()
    store.storage.close()

    clock.now += 60.0  # the head was down for a minute
    again = Membership(ControlStore(open_storage(path)), clock=clock, dead_after_s=3.0)
    assert again.nodes["a"]["state"] == ALIVE  # given dead_after_s to report again
    assert again.nodes["b"]["death_reason"] == "left the cluster"
    assert not again.heartbeat("a", {}), "a node the restarted head forgot registers again"
    clock.now += 3.5
    assert again.sweep() == ["a"]


# ------------------------------------------------------------------------------------------
# nodes started from the shell
# ------------------------------------------------------------------------------------------
def _status_nodes(shell) -> list[dict]:
    import json

    res = shell.quanta("status", "--json")
    assert res.returncode == 0, res.stderr
    nodes = json.loads(res.stdout)["cluster_nodes"]
    assert isinstance(nodes, list), nodes
    return nodes


_ON_MEMBERS = r"""
import quanta
quanta.init(address="auto")

@quanta.remote(resources={"special": 1})
def where():
    return quanta.get_runtime_context().get_node_id()

print(quanta.get(where.remote(), timeout=30), quanta.cluster_resources()["CPU"])
"""


def test_nodes_join_report_and_die(shell, helpers):
    head = shell.start("--num-cpus", "1")
    token_file = os.path.join(head["session_dir"], "cluster_token")
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    m1 = shell.join(head, "--resources", '{"special": 2}')
    m2 = shell.join(head)
    nodes = {n["node_id"]: n for n in _status_nodes(shell)}
    assert set(nodes) == {head["node_id"], m1["node_id"], m2["node_id"]}
    assert all(n["state"] == "ALIVE" for n in nodes.values())
    assert nodes[head["node_id"]]["is_head"] and not nodes[m1["node_id"]]["is_head"]
    assert nodes[m1["node_id"]]["total"]["special"] == 2.0

    text = shell.quanta("status").stdout
    assert "3 alive, 0 dead" in text and "member" in text

    # A driver on the head runs work on the members that have what it needs.
    res = subprocess.run([sys.executable, "-c", _ON_MEMBERS], env=shell.env, cwd=shell.tmp,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    special, cpus = res.stdout.split()[-2:]
    assert special == m1["node_id"] and cpus == "3.0"

    # A node daemon that dies without a word is marked dead within a few seconds.
    os.kill(m1["pid"], signal.SIGKILL)
    assert helpers.wait_until(
        lambda: {n["node_id"]: n for n in _status_nodes(shell)}[m1["node_id"]]["state"] == "DEAD",
        10)
    dead = {n["node_id"]: n for n in _status_nodes(shell)}[m1["node_id"]]
    assert "no heartbeat" in dead["death_reason"]
    assert "2 alive, 1 dead" in shell.quanta("status").stdout

    # One that is stopped says goodbye: dead at once, with the reason.
    res = shell.quanta("stop")
    assert res.returncode == 0, res.stderr
    assert f"Member node (pid {m2['pid']}" in res.stdout and "Stopped the Quanta cluster" in \
        res.stdout
    for rec in (head, m1, m2):
        assert helpers.wait_until(lambda rec=rec: not helpers.pid_alive(rec["pid"]), 10)
    assert shell.members() == [] and shell.record() is None


_ON_A_MEMBER_MACHINE = r"""
import json
import quanta
from quanta.util.placement_group import placement_group, placement_group_table
from quanta.util.scheduling_strategies import NodeAffinitySchedulingStrategy
quanta.init(address=__import__("sys").argv[1], namespace="far")
me = quanta.get_runtime_context().get_node_id()

@quanta.remote(num_cpus=0)
def seen():
    ctx = quanta.get_runtime_context()
    return ctx.namespace, ctx.get_node_id()

head = next(n["NodeID"] for n in quanta.nodes() if n["NodeID"] != me)
on_head = seen.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, False))
pg = placement_group([{"CPU": 1}], lifetime=None)
quanta.get(pg.ready(), timeout=30)
print(json.dumps({"node": me, "seen": quanta.get(on_head.remote(), timeout=30),
                  "pg": placement_group_table(pg)["state"]}))
"""


def test_a_driver_on_a_machine_with_only_a_member_node(shell, helpers):
    head = shell.start("--num-cpus", "1")
    with open(os.path.join(head["session_dir"], "cluster_token")) as f:
        token = f.read().strip()
    # "another machine": a TMPDIR of its own, so no record of the head there
    far = tempfile.mkdtemp(prefix="qfar-", dir="/tmp")
    far_env = dict(shell.env, TMPDIR=far)
    try:
        res = subprocess.run([sys.executable, "-m", "quanta.cli", "start", "--address",
                              head["control_address"], "--num-cpus", "1", "--token", token],
                             env=far_env, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout + res.stderr
        for address in ("auto", head["control_address"]):
            run = subprocess.run([sys.executable, "-c", _ON_A_MEMBER_MACHINE, address],
                                 env=far_env, cwd=far, capture_output=True, text=True,
                                 timeout=60, stdin=subprocess.DEVNULL)
            assert run.returncode == 0, run.stdout + run.stderr
            out = json.loads(run.stdout.strip().splitlines()[-1])
            assert out["node"] != head["node_id"]  # the driver runs on the member
            assert out["seen"] == ["far", head["node_id"]]  # its namespace, known cluster-wide
            assert out["pg"] == "CREATED"
        # the head lists the member's jobs, finished, and removed their groups
        def settled() -> bool:
            status = json.loads(shell.quanta("status", "--json").stdout)
            return (len(status["jobs"]) == 2 and all(j["is_dead"] for j in status["jobs"])
                    and status["created_placement_groups"] == 0)

        assert helpers.wait_until(settled, 10)
    finally:
        subprocess.run([sys.executable, "-m", "quanta.cli", "stop"], env=far_env,
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        shutil.rmtree(far, ignore_errors=True)
    assert shell.quanta("stop").returncode == 0


def test_a_wrong_token_is_refused(shell):
    head = shell.start()
    res = shell.quanta("start", "--address", head["control_address"], "--num-cpus", "1",
                       "--token", "0123456789abcdef0123456789abcdef")
    assert res.returncode == 1
    assert "refused the cluster token" in res.stderr and "Traceback" not in res.stderr
    assert shell.members() == []
    assert [n["node_id"] for n in _status_nodes(shell)] == [head["node_id"]]
    res = shell.quanta("start", "--address", head["control_address"], "--token", "short")
    assert res.returncode == 2 and "--token" in res.stderr
    res = shell.quanta("start", "--head", "--token", "short")
    assert res.returncode == 2 and "--token" in res.stderr
    # the right token, given explicitly, works (from QUANTA_CLUSTER_TOKEN too)
    with open(os.path.join(head["session_dir"], "cluster_token")) as f:
        token = f.read().strip()
    assert shell.join(head, "--token", token)["node_id"]
    assert len(_status_nodes(shell)) == 2
    assert shell.quanta("stop").returncode == 0


def test_join_with_no_head_there(shell):
    head = shell.start()
    address = head["control_address"]
    assert shell.quanta("stop").returncode == 0
    env_token = "ab" * 16
    res = subprocess.run([sys.executable, "-m", "quanta.cli", "start", "--address", address,
                          "--num-cpus", "1"],
                         env=dict(shell.env, QUANTA_CLUSTER_TOKEN=env_token),
                         capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert res.returncode == 1
    assert "did not answer" in res.stderr or "cannot register" in res.stderr, res.stderr
    assert shell.members() == []


_KEEP_STATE = r"""
import json, sys
import quanta
from quanta.experimental import internal_kv
from quanta.util.placement_group import get_placement_group, placement_group
quanta.init(address="auto", namespace="app")
if sys.argv[1] == "first":
    pg = placement_group([{"CPU": 1}], name="keep", lifetime="detached")
    quanta.get(pg.ready(), timeout=30)
    placement_group([{"CPU": 1}], name="mine")  # not detached: goes with this driver
    internal_kv._internal_kv_put(b"model", b"v1", namespace="app")
    out = {}
else:
    pg = get_placement_group("keep")
    quanta.get(pg.ready(), timeout=30)
    out = {"kv": internal_kv._internal_kv_get(b"model", namespace="app").decode(),
           "cpu": quanta.available_resources().get("CPU", 0.0),
           "names": sorted(v["name"] for v in quanta.util.placement_group_table().values()
                           if v["state"] != "REMOVED")}
print(json.dumps(out))
"""


def test_a_head_restarted_on_its_storage_keeps_its_state(shell, tmp_path):
    import json

    storage = str(tmp_path / "control.sqlite3")

    def driver(which: str) -> dict:
        res = subprocess.run([sys.executable, "-c", _KEEP_STATE, which], env=shell.env,
                             capture_output=True, text=True, timeout=60, cwd=shell.tmp,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    first = shell.start("--storage", storage)
    driver("first")
    assert shell.quanta("stop").returncode == 0
    assert os.path.exists(storage)

    again = shell.start("--storage", storage)
    # the same node port: the addresses surviving nodes hold for the head stay right
    assert again["node_address"] == first["node_address"]
    out = driver("second")
    assert out["kv"] == "v1"
    assert out["names"] == ["keep"]  # the detached group is reserved again, not the other
    assert out["cpu"] == 1.0  # 2 CPUs, 1 in the group
    status = json.loads(shell.quanta("status", "--json").stdout)
    assert len(status["jobs"]) == 2 and all(j["is_dead"] for j in status["jobs"])
    assert shell.quanta("stop").returncode == 0
    res = shell.quanta("start", "--address", "127.0.0.1:1", "--storage", storage)
    assert res.returncode == 2 and "--storage is for the head" in res.stderr


def test_internal_kv(quanta_node):
    from quanta.experimental import internal_kv as kv

    assert kv._internal_kv_initialized()
    assert kv._internal_kv_put("a/1", b"x") is False
    assert kv._internal_kv_put(b"a/1", "y", overwrite=False) is True
    assert kv._internal_kv_get("a/1") == b"x"
    assert kv._internal_kv_put(b"a/2", b"z", namespace="other") is False
    assert kv._internal_kv_get(b"a/2") is None and kv._internal_kv_exists(b"a/2", namespace="other")
    kv._internal_kv_put(b"a/3", b"w")
    assert sorted(kv._internal_kv_list(b"a/")) == [b"a/1", b"a/3"]
    assert kv._internal_kv_del(b"a/", del_by_prefix=True) == 2
    assert kv._internal_kv_list(b"a/") == [] and kv._internal_kv_del(b"a/1") == 0
    with pytest.raises(TypeError, match="key must be bytes or str"):
        kv._internal_kv_get(1)


_GROUPS = r"""
import quanta
from quanta.util.placement_group import placement_group
quanta.init(address="auto", namespace="app")
ok = placement_group([{"CPU": 1}], name="fits", lifetime="detached")
quanta.get(ok.ready(), timeout=30)
placement_group([{"CPU": 100}], name="huge", lifetime="detached")
"""


def test_status_lists_pending_and_infeasible_placement_groups(shell):
    shell.start()
    res = subprocess.run([sys.executable, "-c", _GROUPS], env=shell.env, capture_output=True,
                         text=True, timeout=60, cwd=shell.tmp, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    text = shell.quanta("status").stdout
    assert "1 created, 1 pending (1 can never be reserved)" in text, text
    assert "'huge' PACK" in text and "infeasible: The bundles need" in text
    assert "_group_" not in text  # the group's own resources are not listed one by one
    assert "1.0/2.0 CPU" in text  # the reserved CPU counts as used
    assert shell.quanta("stop").returncode == 0
