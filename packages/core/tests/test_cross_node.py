"""Work across nodes: real node daemons on loopback joined to one head (``Cluster``), a driver
on the head. Tasks go where the resources and the strategy say, talk straight to their owner
across nodes, and objects are pulled between the nodes' stores."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import quanta
from quanta import exceptions as qexc
from quanta.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(120)


@quanta.remote
def where(seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return quanta.get_runtime_context().get_node_id()


@quanta.remote
def total(x) -> int:
    return int(np.asarray(x).sum())


def _store_files(node) -> set[str]:
    try:
        return {f for f in os.listdir(node.object_store_dir) if not f.startswith("recycled")}
    except FileNotFoundError:
        return set()


def test_a_custom_resource_sends_the_task_to_the_node_that_has_it(nodes):
    c, a, _ = nodes
    assert quanta.get(where.options(resources={"special": 1}).remote()) == a.node_id
    assert quanta.get(where.remote()) == c.head_node.node_id  # DEFAULT: an idle local node


def test_large_arguments_and_returns_are_pulled_between_nodes(nodes, helpers):
    c, a, _ = nodes
    arr = np.arange(2_000_000, dtype=np.int64)  # 16 MB: in the head's store
    ref = quanta.put(arr)
    assert quanta.get(total.options(resources={"special": 1}).remote(ref)) == int(arr.sum())

    @quanta.remote(resources={"special": 1})
    def make(n):
        return np.full(n, 3, dtype=np.int64)

    out = make.remote(1_000_000)
    got = quanta.get(out)
    assert got.sum() == 3_000_000 and got.dtype == np.int64
    assert _store_files(a), "the return lives in node a's store"
    del got, out, ref
    # freeing an object drops its file and every copy pulled to another node
    assert helpers.wait_until(lambda: not _store_files(a) and not _store_files(c.head_node), 10)


def test_a_worker_on_another_node_borrows_a_ref_from_the_driver(nodes):
    _, a, _ = nodes
    inner = quanta.put(np.ones(300_000))  # shared memory, owned by the driver

    @quanta.remote(resources={"special": 1})
    def unwrap(box):
        return float(quanta.get(box[0]).sum()), quanta.get_runtime_context().get_node_id()

    assert quanta.get(unwrap.remote([inner])) == (300_000.0, a.node_id)


def test_nested_tasks_spill_from_a_member_node(nodes):
    c, a, b = nodes
    b_id = b.node_id

    @quanta.remote(resources={"special": 1})
    def parent():
        here = quanta.get_runtime_context().get_node_id()
        child = where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            b_id, soft=False)).remote()
        return here, quanta.get(child)

    assert quanta.get(parent.remote()) == (a.node_id, b.node_id)


def test_spread_uses_every_node(nodes):
    c, a, b = nodes
    refs = [where.options(scheduling_strategy="SPREAD").remote(0.3) for _ in range(6)]
    assert set(quanta.get(refs)) == {c.head_node.node_id, a.node_id, b.node_id}


def test_default_spills_once_the_local_node_is_busy(nodes):
    c, a, b = nodes
    refs = [where.remote(0.5) for _ in range(3)]
    assert set(quanta.get(refs)) == {c.head_node.node_id, a.node_id, b.node_id}


def test_node_affinity(nodes):
    c, a, b = nodes
    hard = NodeAffinitySchedulingStrategy(b.node_id, soft=False)
    assert quanta.get(where.options(scheduling_strategy=hard).remote()) == b.node_id
    nobody = "ab" * 16
    with pytest.raises(qexc.TaskUnschedulableError, match="no alive node .* has that id"):
        quanta.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nobody, soft=False)).remote())
    soft = NodeAffinitySchedulingStrategy(nobody, soft=True)
    assert quanta.get(where.options(scheduling_strategy=soft).remote()) in {
        c.head_node.node_id, a.node_id, b.node_id}
    with pytest.raises(ValueError, match="node's hex id"):
        where.options(scheduling_strategy=NodeAffinitySchedulingStrategy("node-1", soft=True))


def test_a_request_no_node_can_fit_fails_naming_the_largest_node(nodes):
    with pytest.raises(qexc.TaskUnschedulableError, match="largest node in the cluster"):
        quanta.get(where.options(resources={"special": 2}).remote())


def test_cluster_resources_follow_the_alive_nodes(nodes, helpers):
    c, a, b = nodes
    assert quanta.cluster_resources()["CPU"] == 3.0
    assert quanta.cluster_resources()["special"] == 1.0
    c.remove_node(b, allow_graceful=False)
    assert helpers.wait_until(lambda: quanta.cluster_resources()["CPU"] == 2.0, 10)


def test_a_task_on_a_node_that_dies_is_retried_on_another(nodes, helpers, tmp_path):
    c, a, b = nodes
    started = str(tmp_path / "started")

    @quanta.remote(max_retries=2)
    def slow() -> str:
        open(started, "a").close()
        time.sleep(2.0)
        return quanta.get_runtime_context().get_node_id()

    soft_b = NodeAffinitySchedulingStrategy(b.node_id, soft=True)
    ref = slow.options(scheduling_strategy=soft_b).remote()
    assert helpers.wait_until(lambda: os.path.exists(started), 10)  # running on b
    c.remove_node(b, allow_graceful=False)
    assert quanta.get(ref, timeout=30) in {c.head_node.node_id, a.node_id}


def test_an_object_whose_only_copy_was_on_a_dead_node_is_lost_with_the_reason(nodes):
    c, a, _ = nodes

    @quanta.remote(resources={"special": 1}, max_retries=0)
    def make():
        return np.zeros(500_000)

    ref = make.remote()
    quanta.wait([ref], fetch_local=False)
    c.remove_node(a, allow_graceful=False)
    with pytest.raises(qexc.ObjectLostError, match="node"):  # max_retries=0: no lineage
        quanta.get(ref, timeout=30)

    @quanta.remote
    def size(arr):
        return arr.size

    with pytest.raises(qexc.ObjectLostError, match="cannot be rebuilt"):  # for a borrower too
        quanta.get(size.remote(ref), timeout=30)
    put_ref = quanta.put(np.ones(10))  # a put object lives with its owner: never lost here
    assert quanta.get(put_ref).sum() == 10


def test_an_object_lost_with_its_node_is_rebuilt_from_its_lineage(nodes, tmp_path):
    c, a, b = nodes
    runs = tmp_path / "runs"

    @quanta.remote(max_retries=2)
    def make(scale, log):
        with open(log, "a") as f:
            f.write(quanta.get_runtime_context().get_node_id() + "\n")
        return np.arange(500_000) * scale

    arg = quanta.put(3)  # a ref argument: kept alive by the lineage to run the task again
    ref = make.options(scheduling_strategy=NodeAffinitySchedulingStrategy(a.node_id, soft=True)
                       ).remote(arg, str(runs))
    del arg
    quanta.wait([ref], fetch_local=False)
    c.remove_node(a, allow_graceful=False)
    got = quanta.get(ref, timeout=60)
    assert got[-1] == 499_999 * 3
    first, again = runs.read_text().split()
    assert first == a.node_id and again != a.node_id


@quanta.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n

    def node(self) -> str:
        return quanta.get_runtime_context().get_node_id()


def test_actors_run_where_their_resources_are_and_are_called_from_any_node(nodes):
    c, a, b = nodes
    counter = Counter.options(resources={"special": 1}).remote()
    assert quanta.get(counter.node.remote()) == a.node_id
    assert quanta.get([counter.inc.remote() for _ in range(50)])[-1] == 50
    named = Counter.options(name="on-b", scheduling_strategy=NodeAffinitySchedulingStrategy(
        b.node_id, soft=False)).remote()
    assert quanta.get(named.node.remote()) == b.node_id

    @quanta.remote
    def use(handle):  # runs on the head's node or b; the actors are on a and b
        return quanta.get(handle.inc.remote()), quanta.get(quanta.get_actor("on-b").inc.remote())

    on_b = NodeAffinitySchedulingStrategy(b.node_id, soft=False)
    assert quanta.get(use.options(scheduling_strategy=on_b).remote(counter)) == (51, 1)


def test_an_actor_on_a_node_that_dies_restarts_on_another(nodes, helpers):
    c, a, b = nodes
    soft_b = NodeAffinitySchedulingStrategy(b.node_id, soft=True)
    counter = Counter.options(scheduling_strategy=soft_b, max_restarts=1).remote()
    assert quanta.get(counter.node.remote()) == b.node_id
    c.remove_node(b, allow_graceful=False)
    assert quanta.get(counter.node.remote(), timeout=30) in {c.head_node.node_id, a.node_id}

    only_a = Counter.options(resources={"special": 1}, max_restarts=1).remote()
    assert quanta.get(only_a.node.remote()) == a.node_id
    c.remove_node(a, allow_graceful=False)
    with pytest.raises(qexc.ActorDiedError, match="cannot be scheduled"):
        quanta.get(only_a.node.remote(), timeout=30)


def test_a_task_given_an_object_lost_with_its_node_gets_it_rebuilt(nodes, tmp_path):
    c, a, b = nodes
    runs = tmp_path / "runs"

    @quanta.remote(max_retries=1)
    def make(log):
        with open(log, "a") as f:
            f.write(quanta.get_runtime_context().get_node_id() + "\n")
        return np.full(500_000, 2)

    @quanta.remote
    def consume(arr, box):  # a direct argument, and one the task gets itself
        return int(arr.sum()) + int(quanta.get(box[0]).sum()), \
            quanta.get_runtime_context().get_node_id()

    ref = make.options(scheduling_strategy=NodeAffinitySchedulingStrategy(a.node_id, soft=True)
                       ).remote(str(runs))
    quanta.wait([ref], fetch_local=False)
    c.remove_node(a, allow_graceful=False)
    on_b = NodeAffinitySchedulingStrategy(b.node_id, soft=False)
    total, node = quanta.get(consume.options(scheduling_strategy=on_b).remote(ref, [ref]),
                             timeout=60)
    assert (total, node) == (2_000_000, b.node_id)
    assert len(runs.read_text().split()) == 2  # made once more, for the borrower

    put_ref = quanta.put(np.ones(500_000))  # in the head's store: never lost with a member
    assert quanta.get(consume.options(scheduling_strategy=on_b).remote(put_ref, [put_ref]),
                      timeout=60)[0] == 1_000_000


def test_rebuilding_a_lost_object_counts_against_max_retries(make_cluster, tmp_path):
    c, members = make_cluster({"num_cpus": 0}, {"num_cpus": 1}, {"num_cpus": 1})
    c.connect()
    by_id = {n.node_id: n for n in members}
    log = tmp_path / "runs"

    @quanta.remote(num_cpus=1, max_retries=1, num_returns=2)
    def make():
        with open(log, "a") as f:
            f.write(quanta.get_runtime_context().get_node_id() + "\n")
        return np.ones(500_000), np.zeros(500_000)

    first, second = make.remote()
    quanta.wait([first, second], num_returns=2, fetch_local=False)
    c.remove_node(by_id[log.read_text().split()[-1]], allow_graceful=False)
    # rebuilt on the other member: both returns made again, the first one pulled here
    assert quanta.get(first, timeout=60).sum() == 500_000
    runs = log.read_text().split()
    assert len(runs) == 2 and runs[0] != runs[1]
    c.remove_node(by_id[runs[1]], allow_graceful=False)
    with pytest.raises(qexc.ObjectReconstructionFailedMaxAttemptsExceededError,
                       match="no retries left"):
        quanta.get(second, timeout=60)


def test_status_shows_the_clusters_waiting_tasks_and_actors(nodes, helpers, tmp_path):
    from quanta._private import cluster
    from quanta.cli import format_status

    c, a, b = nodes
    gate = tmp_path / "open"

    @quanta.remote(num_cpus=1)
    def hold() -> None:
        while not gate.exists():
            time.sleep(0.05)

    @quanta.remote(num_cpus=1)
    class Late:
        def ping(self) -> int:
            return 1

    busy = [hold.options(scheduling_strategy="SPREAD").remote() for _ in range(5)]
    late = Late.options(name="late").remote()

    def status() -> dict:
        return cluster.rpc(c.head_node.address, "status")

    def waiting() -> bool:  # 3 CPUs: 2 tasks (at any node) and the actor wait
        st = status()
        return (sum(d["count"] for d in st["pending_demands"]) == 2
                and [w["name"] for w in st["actors"]["waiting"]] == ["late"])

    assert helpers.wait_until(waiting, 15)
    text = format_status({"pid": 0, "address": c.head_node.address}, status())
    assert "2 lease request(s) waiting for resources" in text
    assert "2 x {'CPU': 1.0}" in text
    assert "PENDING_CREATION Late 'late' needs {'CPU': 1.0}" in text
    gate.touch()
    quanta.get(busy, timeout=30)
    assert quanta.get(late.ping.remote(), timeout=30) == 1
    assert helpers.wait_until(lambda: status()["pending_demands"] == [], 10)
    assert status()["actors"]["states"] == {"ALIVE": 1}
