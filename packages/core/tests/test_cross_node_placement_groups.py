"""Placement groups on a cluster: bundles reserved across nodes by each strategy (two-phase,
on real node daemons joined to one head), tasks and actors sent to the node that holds their
bundle from any node, removal freeing every node, and bundles placed again when their node
dies."""

from __future__ import annotations

import pytest
import quanta
from quanta import exceptions as qexc
from quanta.util.placement_group import (
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from quanta.util.scheduling_strategies import PlacementGroupSchedulingStrategy

pytestmark = pytest.mark.timeout(120)


@quanta.remote(num_cpus=1)
def where() -> str:
    return quanta.get_runtime_context().get_node_id()


@quanta.remote(num_cpus=1)
class Probe:
    def node(self) -> str:
        return quanta.get_runtime_context().get_node_id()


def in_bundle(pg, index: int = -1) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)


def _nodes_of(pg) -> dict[int, str]:
    return placement_group_table(pg)["bundles_to_node_id"]


def test_strict_spread_puts_each_bundle_on_its_own_node_and_tasks_follow(nodes):
    c, a, b = nodes
    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert pg.wait(20)
    placed = _nodes_of(pg)
    assert set(placed.values()) == {c.head_node.node_id, a.node_id, b.node_id}
    for i in range(3):
        assert quanta.get(where.options(scheduling_strategy=in_bundle(pg, i)).remote(),
                          timeout=30) == placed[i]
    # any-bundle requests run in one of the group's bundles: three at once need all three
    refs = [where.options(scheduling_strategy=in_bundle(pg)).remote() for _ in range(3)]
    assert set(quanta.get(refs, timeout=30)) <= set(placed.values())


def test_strict_pack_lands_on_the_one_node_that_fits_and_actors_run_there(nodes, helpers):
    c, a, _ = nodes
    pg = placement_group([{"special": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert quanta.get(pg.ready(), timeout=20) == pg
    assert _nodes_of(pg) == {0: a.node_id, 1: a.node_id}
    probe = Probe.options(num_cpus=1, scheduling_strategy=in_bundle(pg, 1)).remote()
    assert quanta.get(probe.node.remote(), timeout=30) == a.node_id
    # node a's special resource is the group's now
    assert helpers.wait_until(lambda: quanta.available_resources().get("special", 0) == 0, 10)


def test_pack_spans_nodes_when_no_single_node_fits_and_spread_uses_distinct_nodes(nodes):
    c, a, b = nodes
    packed = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert packed.wait(20)
    assert len(set(_nodes_of(packed).values())) == 2
    remove_placement_group(packed)
    spread = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="SPREAD")
    assert spread.wait(20)
    assert len(set(_nodes_of(spread).values())) == 2


def test_a_group_no_node_can_hold_stays_pending_with_the_reason(nodes):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(1) is False
    table = placement_group_table(pg)
    assert table["state"] == "PENDING" and table["stats"]["infeasible"] is True
    assert "largest node" in table["reason"]
    four = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    assert four.wait(0.5) is False
    assert "STRICT_SPREAD needs 4 nodes" in placement_group_table(four)["reason"]


def test_a_task_on_a_member_node_reaches_a_bundle_on_a_third_node(nodes):
    c, a, b = nodes
    pg = placement_group([{"CPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(20)
    target = _nodes_of(pg)[0]

    @quanta.remote(num_cpus=0, resources={"special": 1})
    def submit(group):  # runs on node a, asks that node's daemon for a bundle elsewhere
        node = quanta.get_runtime_context().get_node_id()
        inner = where.options(scheduling_strategy=in_bundle(group, 0)).remote()
        return node, quanta.get(inner, timeout=30)

    assert quanta.get(submit.remote(pg), timeout=40) == (a.node_id, target)


def test_removal_kills_the_groups_actors_and_frees_every_node(nodes, helpers):
    c, a, b = nodes
    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert pg.wait(20)
    remote_bundle = next(i for i, n in _nodes_of(pg).items() if n == a.node_id)
    probe = Probe.options(scheduling_strategy=in_bundle(pg, remote_bundle)).remote()
    assert quanta.get(probe.node.remote(), timeout=30) == a.node_id
    assert helpers.wait_until(lambda: quanta.available_resources().get("CPU", 0) == 0, 10)
    remove_placement_group(pg)  # asynchronous, as in Ray: a call may still slip in

    def probe_died() -> bool:
        try:
            quanta.get(probe.node.remote(), timeout=30)
        except qexc.RayActorError as e:
            assert "placement group" in str(e)
            return True
        return False

    assert helpers.wait_until(probe_died, 20)
    assert helpers.wait_until(lambda: quanta.available_resources().get("CPU", 0) == 3, 10)
    with pytest.raises(qexc.TaskUnschedulableError, match="removed"):
        quanta.get(where.options(scheduling_strategy=in_bundle(pg, 0)).remote(), timeout=30)


def test_a_bundle_on_a_dead_node_is_placed_again(nodes, helpers):
    c, a, b = nodes
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(20)
    before = _nodes_of(pg)
    victim = a if a.node_id in before.values() else b
    lost = next(i for i, n in before.items() if n == victim.node_id)
    kept = 1 - lost
    c.remove_node(victim, allow_graceful=False)
    others = {c.head_node.node_id, a.node_id, b.node_id} - {victim.node_id}
    assert helpers.wait_until(
        lambda: placement_group_table(pg)["state"] == "CREATED"
        and set(_nodes_of(pg).values()) == others, 20)
    after = _nodes_of(pg)
    assert after[kept] == before[kept]  # the surviving bundle stayed where it was
    assert quanta.get(where.options(scheduling_strategy=in_bundle(pg, lost)).remote(),
                      timeout=30) == after[lost]


def test_a_task_waits_for_a_group_that_becomes_placeable_when_a_node_joins(make_cluster):
    c, _ = make_cluster({"num_cpus": 1})
    c.connect(namespace="x")
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    ref = where.options(scheduling_strategy=in_bundle(pg, 1)).remote()
    assert pg.wait(0.3) is False
    assert placement_group_table(pg)["state"] == "PENDING"
    joined = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    assert quanta.get(ref, timeout=30) in {joined.node_id, c.head_node.node_id}
    assert placement_group_table(pg)["state"] == "CREATED"
