"""The placement strategies as pure functions over nodes' free resources."""

from __future__ import annotations

import pytest
from quanta._private.node.bundle_placement import NodeSlot, infeasible_reason, place_bundles
from quanta._private.resources import ResourceSet as R


def slots(**cpus: float) -> list[NodeSlot]:
    return [NodeSlot(n, R({"CPU": c}), R({"CPU": c})) for n, c in cpus.items()]


def bundles(*cpus: float) -> dict[int, R]:
    return {i: R({"CPU": c}) for i, c in enumerate(cpus)}


def test_strict_pack_needs_one_node_and_prefers_the_first_listed_on_a_tie():
    assert place_bundles(bundles(1, 1), "STRICT_PACK", slots(a=2, b=2)) == {0: "a", 1: "a"}
    assert place_bundles(bundles(1, 1), "STRICT_PACK", slots(a=1, b=4)) == {0: "b", 1: "b"}
    assert place_bundles(bundles(2, 2), "STRICT_PACK", slots(a=3, b=3)) is None


def test_pack_falls_back_to_as_few_nodes_as_it_finds():
    out = place_bundles(bundles(2, 2, 1), "PACK", slots(a=3, b=3))
    assert out is not None and len(set(out.values())) == 2
    assert place_bundles(bundles(4), "PACK", slots(a=3, b=3)) is None


def test_spread_prefers_unused_nodes_but_reuses_when_it_must():
    assert len(set(place_bundles(bundles(1, 1), "SPREAD", slots(a=2, b=2)).values())) == 2
    assert place_bundles(bundles(1, 1), "SPREAD", slots(a=2)) == {0: "a", 1: "a"}


def test_strict_spread_needs_a_node_per_bundle_and_avoids_the_groups_other_nodes():
    assert place_bundles(bundles(1, 1), "STRICT_SPREAD", slots(a=2)) is None
    # bundle 1 was lost with its node; bundle 0 still lives on a: 1 must not go to a
    out = place_bundles({1: R({"CPU": 1})}, "STRICT_SPREAD", slots(a=4, c=1), {0: "a"})
    assert out == {1: "c"}
    assert place_bundles({1: R({"CPU": 1})}, "STRICT_SPREAD", slots(a=4), {0: "a"}) is None


def test_lost_bundles_of_a_strict_pack_group_go_back_to_its_node():
    out = place_bundles({1: R({"CPU": 1})}, "STRICT_PACK", slots(a=1, b=4), {0: "a"})
    assert out == {1: "a"}


def test_the_least_used_node_wins():
    nodes = [NodeSlot("a", R({"CPU": 1}), R({"CPU": 4})), NodeSlot("b", R({"CPU": 3}),
                                                                    R({"CPU": 4}))]
    assert place_bundles(bundles(1), "PACK", nodes) == {0: "b"}


@pytest.mark.parametrize("strategy,group,expect", [
    ("STRICT_PACK", bundles(2, 2), "need {CPU: 4} together but the largest node has"),
    ("PACK", bundles(5), "need {CPU: 5} together but the largest node has {CPU: 3}"),
    ("SPREAD", bundles(1, 5), "Bundle 1 needs {CPU: 5}"),
    ("STRICT_SPREAD", bundles(1, 1, 1), "STRICT_SPREAD needs 3 nodes"),
    ("PACK", bundles(3, 3, 3), "more than the cluster's 2 node(s) can hold with PACK"),
])
def test_infeasible_reasons_name_what_is_missing(strategy, group, expect):
    assert expect in infeasible_reason(group, strategy, slots(a=3, b=3))


def test_a_group_that_fits_an_idle_cluster_is_not_infeasible():
    busy = [NodeSlot("a", R(), R({"CPU": 2}))]
    assert place_bundles(bundles(1), "PACK", busy) is None
    assert infeasible_reason(bundles(1), "PACK", busy) == ""
