"""The Cluster test helper: real node daemons on this machine joined to one head."""

from __future__ import annotations

import os
import signal
import time

import pytest
import quanta
from quanta._private import cluster
from quanta.cluster_utils import Cluster


@pytest.fixture
def three_nodes(make_cluster):
    c, (a, b) = make_cluster({"num_cpus": 2}, {"num_cpus": 1, "resources": {"special": 1}},
                             {"num_cpus": 1})
    return c, a, b


def test_nodes_join_and_a_killed_one_is_marked_dead(three_nodes, helpers):
    c, a, b = three_nodes
    states = c.node_states()
    assert {n.node_id for n in c.list_all_nodes()} == set(states)
    assert states[c.head_node.node_id]["is_head"]
    assert states[a.node_id]["total"]["special"] == 1.0
    c.remove_node(a, allow_graceful=False)  # like a machine that crashed
    assert helpers.wait_until(lambda: c.node_states()[a.node_id]["state"] == "DEAD", 10)
    assert "no heartbeat" in c.node_states()[a.node_id]["death_reason"]
    c.remove_node(b)  # stopped: it says goodbye, dead at once
    assert c.node_states()[b.node_id]["state"] == "DEAD"
    assert c.node_states()[c.head_node.node_id]["state"] == "ALIVE"


def test_a_driver_connects_to_the_head(three_nodes):
    c, _, _ = three_nodes
    c.connect(namespace="t")
    try:
        @quanta.remote
        def double(x):
            return 2 * x

        assert quanta.get(double.remote(21)) == 42
        assert quanta.get_runtime_context().get_node_id() == c.head_node.node_id
    finally:
        quanta.shutdown()
        c._connected = False


def test_a_member_outlives_a_pause_of_the_head(helpers):
    c = Cluster(initialize_head=True)
    try:
        a = c.add_node()
        os.kill(c.head_node.pid, signal.SIGSTOP)  # the head stops answering for a while
        try:
            time.sleep(1.5)  # shorter than the 3 s after which the head gives a node up
            assert a.alive()
        finally:
            os.kill(c.head_node.pid, signal.SIGCONT)
        c.wait_for_nodes()
        assert c.node_states()[a.node_id]["state"] == "ALIVE"
    finally:
        c.shutdown()


def test_add_node_checks_its_arguments():
    c = Cluster()
    with pytest.raises(TypeError, match="num_cpu"):
        c.add_node(num_cpu=1)
    with pytest.raises(RuntimeError, match="no head node"):
        _ = c.address
    with pytest.raises(ValueError, match="initialize_head"):
        Cluster(connect=True)


def test_nodes_lists_every_node_of_the_cluster(three_nodes, helpers):
    c, a, b = three_nodes
    c.connect(namespace="t")
    try:
        nodes = {n["NodeID"]: n for n in quanta.nodes()}
        assert set(nodes) == {n.node_id for n in c.list_all_nodes()}
        assert quanta.nodes()[0]["NodeID"] == c.head_node.node_id  # the driver's node first
        assert all(n["Alive"] for n in nodes.values())
        assert nodes[a.node_id]["Resources"]["special"] == 1.0
        # the cluster's resources are every alive node's, summed
        assert helpers.wait_until(
            lambda: quanta.cluster_resources().get("special") == 1.0, 10)
        c.remove_node(b, allow_graceful=False)
        assert helpers.wait_until(
            lambda: not {n["NodeID"]: n for n in quanta.nodes()}[b.node_id]["Alive"], 10)
        gone = {n["NodeID"]: n for n in quanta.nodes()}[b.node_id]
        assert gone["Resources"] == {} and "no heartbeat" in gone["DeathReason"]
    finally:
        quanta.shutdown()
        c._connected = False


def test_an_object_is_pulled_from_another_node(three_nodes):
    import numpy as np

    c, a, _ = three_nodes
    c.connect(namespace="t")
    try:
        arr = np.arange(6_000_000, dtype=np.int64)  # 48 MB: in the head's shared memory
        ref = quanta.put(arr)
        hexid = ref.hex()
        head = cluster.rpc(c.head_node.address, "nodes")[0]
        path = cluster.rpc(a.address, "pull_object", head["NodeAddress"], hexid, timeout=60)
        src = os.path.join(c.head_node.object_store_dir, os.path.basename(path))
        with open(src, "rb") as f1, open(path, "rb") as f2:
            assert f1.read() == f2.read()
        stats = cluster.rpc(a.address, "store_stats")
        assert stats["num_objects"] == 1 and stats["used_bytes"] == os.path.getsize(path)
        assert not [n for n in os.listdir(a.object_store_dir) if n.endswith(".tmp")]
        # pulling it again is answered from the store
        assert cluster.rpc(a.address, "pull_object", head["NodeAddress"], hexid) == path
        with pytest.raises(Exception, match="cannot send object 00ff"):
            cluster.rpc(a.address, "pull_object", head["NodeAddress"], "00ff" * 7, timeout=30)
        del ref
    finally:
        quanta.shutdown()
        c._connected = False
