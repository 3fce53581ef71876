"""Tests for quanta._private.resources: fixed-point ResourceSet, request validation, and
per-node accounting with GPU instance packing."""

from __future__ import annotations

import pickle
from fractions import Fraction

import pytest
from quanta._private.resources import (
    RESOURCE_UNIT,
    Allocation,
    NodeResources,
    ResourceSet,
    from_fixed,
    to_fixed,
    validate_request,
)

RS = ResourceSet


def req(**kw) -> ResourceSet:
    return validate_request(**kw, default_cpus=1)


# ---------------------------------------------------------------------------------- fixed point


def test_point_one_plus_point_two_is_exact():
    total = RS({"CPU": 0.1}) + RS({"CPU": 0.2})
    assert total == RS({"CPU": 0.3})
    assert total.to_dict() == {"CPU": 0.3}
    assert total["CPU"] == 0.3


def test_ten_tenths_make_one():
    acc = RS()
    for _ in range(10):
        acc = acc + RS({"CPU": 0.1})
    assert acc == RS({"CPU": 1})
    assert acc.to_dict() == {"CPU": 1.0}
    for _ in range(10):
        acc = acc - RS({"CPU": 0.1})
    assert acc.is_empty()


def test_float_noise_is_forgiven_but_fifth_decimal_is_not():
    assert RS({"CPU": 0.1 + 0.2}) == RS({"CPU": 0.3})
    with pytest.raises(ValueError, match=r"'CPU'.*0\.12345.*4 decimal"):
        RS({"CPU": 0.12345})
    assert RS({"CPU": 0.1234}).units("CPU") == 1234


def test_to_fixed_and_back():
    assert to_fixed("x", 2) == 2 * RESOURCE_UNIT
    assert to_fixed("x", 0.0001) == 1
    assert to_fixed("x", 1.5) == 15000
    assert to_fixed("x", -0.5) == -5000
    assert from_fixed(20000) == 2.0 and isinstance(from_fixed(20000), float)
    assert from_fixed(3000) == 0.3
    with pytest.raises(ValueError, match="finite"):
        to_fixed("x", float("nan"))
    with pytest.raises(ValueError, match="finite"):
        to_fixed("x", float("inf"))
    with pytest.raises(TypeError, match="bool"):
        to_fixed("x", True)
    assert to_fixed("x", Fraction(1, 4)) == 2500


def test_large_byte_amounts_are_exact():
    big = 3 * 1024**4 + 7
    rs = RS({"memory": big})
    assert rs.to_dict() == {"memory": float(big)}
    assert (rs + rs).units("memory") == 2 * big * RESOURCE_UNIT


# ---------------------------------------------------------------------------------- ResourceSet


def test_to_dict_whole_numbers_are_floats():
    d = RS({"CPU": 2, "GPU": 0.5}).to_dict()
    assert d == {"CPU": 2.0, "GPU": 0.5}
    assert all(type(v) is float for v in d.values())


def test_zero_amounts_dropped():
    rs = RS({"CPU": 0, "GPU": 0.0, "foo": 1})
    assert dict(rs) == {"foo": 1.0}
    assert "CPU" not in rs
    assert len(rs) == 1
    assert rs.amount("CPU") == 0.0
    with pytest.raises(KeyError):
        rs["CPU"]
    assert RS({"CPU": 0}).is_empty()
    assert RS().is_empty() and not RS({"x": 1}).is_empty()


def test_from_dict_equals_constructor():
    assert RS.from_dict({"CPU": 1}) == RS({"CPU": 1.0})


def test_negative_amount_rejected():
    with pytest.raises(ValueError, match=r"'CPU'.*-1.*negative"):
        RS({"CPU": -1})


def test_bad_names_and_types():
    with pytest.raises(TypeError, match="str"):
        RS({1: 1})
    with pytest.raises(ValueError, match="non-empty"):
        RS({"": 1})
    with pytest.raises(TypeError, match="str"):
        RS({"CPU": "1"})
    with pytest.raises(TypeError, match="mapping"):
        RS([("CPU", 1)])


def test_repr():
    assert repr(RS({"GPU": 0.5, "CPU": 1})) == "{CPU: 1, GPU: 0.5}"
    assert repr(RS()) == "{}"
    assert repr(RS({"CPU": 0.3})) == "{CPU: 0.3}"


def test_eq_and_hash_scheduling_key():
    a = RS({"CPU": 1, "GPU": 0.5})
    b = RS({"GPU": 0.5, "CPU": 1.0})
    assert a == b and hash(a) == hash(b)
    queues = {a: ["t1"]}
    queues.setdefault(b, []).append("t2")
    assert queues == {a: ["t1", "t2"]}
    assert a != RS({"CPU": 1})
    assert a == {"CPU": 1, "GPU": 0.5}
    assert a != {"CPU": "x"}
    assert a != 3
    assert RS({"CPU": 0.1 + 0.2}) == RS({"CPU": 0.3})
    assert hash(RS({"CPU": 0.1 + 0.2})) == hash(RS({"CPU": 0.3}))


def test_fits_in_and_le():
    small = RS({"CPU": 1})
    big = RS({"CPU": 2, "GPU": 1})
    assert small.fits_in(big) and small <= big and big >= small
    assert not big.fits_in(small) and not big <= small
    assert RS() <= small
    assert not RS({"foo": 0.0001}) <= big
    assert RS({"CPU": 0.3}) <= RS({"CPU": 0.1}) + RS({"CPU": 0.2})


def test_add_sub():
    a = RS({"CPU": 1.5, "foo": 1})
    b = RS({"CPU": 0.5, "GPU": 1})
    assert a + b == RS({"CPU": 2, "GPU": 1, "foo": 1})
    assert (a + b) - b == a
    assert a - RS({"foo": 1}) == RS({"CPU": 1.5})
    with pytest.raises(ValueError, match=r"GPU.*negative"):
        a - b
    with pytest.raises(ValueError, match=r"CPU.*negative"):
        RS({"CPU": 0.1}) - RS({"CPU": 0.2})


def test_immutable_and_picklable():
    a = RS({"CPU": 1, "GPU": 0.25})
    with pytest.raises(TypeError):
        a["CPU"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        a.foo = 1  # type: ignore[attr-defined]
    b = pickle.loads(pickle.dumps(a))
    assert b == a and hash(b) == hash(a) and repr(b) == repr(a)


def test_iteration_sorted():
    assert list(RS({"b": 1, "CPU": 1, "a": 2})) == ["CPU", "a", "b"]


# ---------------------------------------------------------------------------------- validation


def test_default_cpus():
    assert req() == RS({"CPU": 1})
    assert validate_request(default_cpus=0) == RS()
    assert validate_request(num_cpus=2, default_cpus=0) == RS({"CPU": 2})
    assert req(num_cpus=0) == RS()


def test_full_request():
    r = req(num_cpus=0.5, num_gpus=2, memory=1024**3, resources={"foo": 0.25, "bar": 3})
    assert r.to_dict() == {"CPU": 0.5, "GPU": 2.0, "bar": 3.0, "foo": 0.25, "memory": 1024.0**3}


def test_fractional_gpu_rules():
    assert req(num_gpus=0.5)["GPU"] == 0.5
    assert req(num_gpus=1)["GPU"] == 1.0
    assert req(num_gpus=4.0)["GPU"] == 4.0
    with pytest.raises(ValueError, match=r"num_gpus=1\.5.*whole"):
        req(num_gpus=1.5)


def test_fractional_custom_rules():
    assert req(resources={"tpu": 0.5})["tpu"] == 0.5
    assert req(resources={"tpu": 3})["tpu"] == 3.0
    with pytest.raises(ValueError, match=r"tpu.*2\.5.*whole"):
        req(resources={"tpu": 2.5})


def test_fractional_cpus_above_one_allowed():
    assert req(num_cpus=1.5)["CPU"] == 1.5


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"num_cpus": True}, ["num_cpus", "bool"]),
        ({"num_gpus": "1"}, ["num_gpus", "str"]),
        ({"memory": [1]}, ["memory", "list"]),
        ({"resources": {"foo": None}}, ["foo", "NoneType"]),
        ({"resources": [("foo", 1)]}, ["resources", "list"]),
        ({"resources": {1: 1}}, ["resources", "int"]),
    ],
)
def test_type_errors(kwargs, words):
    with pytest.raises(TypeError) as e:
        req(**kwargs)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"num_cpus": -1}, ["num_cpus", "-1", "negative"]),
        ({"num_gpus": -0.5}, ["num_gpus", "-0.5", "negative"]),
        ({"memory": -10}, ["memory", "negative"]),
        ({"resources": {"foo": -2}}, ["foo", "-2", "negative"]),
        ({"num_cpus": 0.00001}, ["num_cpus", "1e-05", "4 decimal"]),
        ({"num_gpus": 0.33333}, ["num_gpus", "0.33333", "4 decimal"]),
        ({"resources": {"foo": 0.123456}}, ["foo", "0.123456", "4 decimal"]),
        ({"memory": 100.5}, ["memory", "100.5", "bytes"]),
        ({"resources": {"CPU": 1}}, ["num_cpus", "'CPU'"]),
        ({"resources": {"GPU": 1}}, ["num_gpus", "'GPU'"]),
        ({"resources": {"memory": 1}}, ["memory="]),
        ({"resources": {"": 1}}, ["non-empty"]),
        ({"num_cpus": float("nan")}, ["num_cpus", "finite"]),
    ],
)
def test_value_errors(kwargs, words):
    with pytest.raises(ValueError) as e:
        req(**kwargs)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_bad_default_cpus():
    with pytest.raises(ValueError, match="default_cpus"):
        validate_request(default_cpus=-1)


def test_numpy_like_integers_accepted():
    class Idx:
        def __index__(self):
            return 3

    assert req(num_cpus=Idx())["CPU"] == 3.0


def test_memory_float_whole_bytes():
    assert req(memory=1.5e9)["memory"] == 1.5e9


# ---------------------------------------------------------------------------------- NodeResources


def node(cpus=4, gpus=2, gpu_ids=None, **extra) -> NodeResources:
    return NodeResources(RS({"CPU": cpus, "GPU": gpus, **extra}), gpu_ids=gpu_ids)


def test_allocate_and_release_scalar():
    n = node(cpus=2, gpus=0, memory=1000)
    a = n.allocate(req(num_cpus=1.5, memory=600))
    assert isinstance(a, Allocation)
    assert a.gpu_ids == [] and a.gpu_fractions == {}
    assert n.available == RS({"CPU": 0.5, "memory": 400})
    assert n.allocate(req(num_cpus=1)) is None  # does not fit; nothing changed
    assert n.available == RS({"CPU": 0.5, "memory": 400})
    n.release(a)
    assert a.released
    assert n.available == n.total == RS({"CPU": 2, "memory": 1000})


def test_fractional_gpu_packing():
    n = node(cpus=8, gpus=2)
    half = req(num_cpus=0, num_gpus=0.5)
    a1 = n.allocate(half)
    a2 = n.allocate(half)
    assert a1.gpu_ids == [0] and a2.gpu_ids == [0]  # two halves share GPU 0
    assert a1.gpu_fractions == {0: 0.5}
    assert n.gpu_free() == {0: 0.0, 1: 1.0}
    a3 = n.allocate(half)
    assert a3.gpu_ids == [1]  # the third half goes to GPU 1
    assert n.gpu_free() == {0: 0.0, 1: 0.5}
    assert n.available_amount("GPU") == 0.5
    assert not n.can_fit(req(num_cpus=0, num_gpus=1))
    assert n.allocate(req(num_gpus=1)) is None


def test_whole_gpu_fails_when_both_half_used():
    n = node(cpus=8, gpus=2)
    half = req(num_cpus=0, num_gpus=0.5)
    a1, a2, a3 = n.allocate(half), n.allocate(half), n.allocate(half)
    assert [a1.gpu_ids, a2.gpu_ids, a3.gpu_ids] == [[0], [0], [1]]
    n.release(a1)
    assert n.gpu_free() == {0: 0.5, 1: 0.5}
    assert n.available_amount("GPU") == 1.0  # a whole GPU's worth is free in total ...
    one = req(num_gpus=1)
    assert not n.can_fit(one)  # ... but not on one GPU
    assert n.allocate(one) is None
    assert n.feasible(one)
    # another half fills one of them (best fit, lowest index on a tie)
    assert n.allocate(half).gpu_ids == [0]


def test_best_fit_keeps_whole_gpus_free():
    n = node(cpus=8, gpus=2)
    quarter = n.allocate(req(num_cpus=0, num_gpus=0.25))
    assert quarter.gpu_ids == [0]
    a = n.allocate(req(num_cpus=0, num_gpus=0.5))
    assert a.gpu_ids == [0]  # not GPU 1, which stays whole
    assert n.allocate(req(num_cpus=0, num_gpus=1)).gpu_ids == [1]
    b = n.allocate(req(num_cpus=0, num_gpus=0.25))
    assert b.gpu_ids == [0]
    assert n.gpu_free() == {0: 0.0, 1: 0.0}
    assert n.allocate(req(num_cpus=0, num_gpus=0.0001)) is None


def test_gpu_fractions_sum_exactly():
    n = node(cpus=0, gpus=1)
    tenth = req(num_cpus=0, num_gpus=0.1)
    allocs = [n.allocate(tenth) for _ in range(10)]
    assert all(a is not None and a.gpu_ids == [0] for a in allocs)
    assert n.allocate(tenth) is None
    for a in allocs:
        n.release(a)
    assert n.gpu_free() == {0: 1.0}
    assert n.available == n.total


def test_whole_gpus_take_whole_instances():
    n = node(cpus=8, gpus=4, gpu_ids=[3, 5, 6, 7])
    assert n.gpu_ids == [3, 5, 6, 7]
    h = n.allocate(req(num_cpus=0, num_gpus=0.5))
    assert h.gpu_ids == [3] and h.gpu_fractions == {3: 0.5}
    two = n.allocate(req(num_gpus=2))
    assert two.gpu_ids == [5, 6] and two.gpu_fractions == {5: 1.0, 6: 1.0}
    assert n.allocate(req(num_gpus=2)) is None  # only GPU 7 is whole
    n.release(h)
    assert n.allocate(req(num_gpus=2)).gpu_ids == [3, 7]


def test_non_whole_gpu_above_one_spans_instances():
    # validate_request forbids 1.5 GPUs, but a ResourceSet may carry it; it then needs one
    # whole free GPU plus half of another.
    n = node(cpus=0, gpus=2)
    a = n.allocate(RS({"GPU": 1.5}))
    assert a.gpu_ids == [0, 1] and a.gpu_fractions == {0: 1.0, 1: 0.5}
    assert not n.feasible(RS({"GPU": 2.5}))
    assert n.feasible(RS({"GPU": 2}))


def test_feasible():
    n = node(cpus=4, gpus=2, foo=1)
    assert n.feasible(req(num_cpus=4, num_gpus=2, resources={"foo": 1}))
    assert not n.feasible(req(num_cpus=5))
    assert not n.feasible(req(num_gpus=3))
    assert not n.feasible(req(resources={"bar": 1}))
    assert not n.feasible(req(resources={"foo": 2}))
    assert NodeResources(RS({"CPU": 1})).feasible(req()) is True
    assert not NodeResources(RS({"CPU": 1})).feasible(req(num_gpus=0.5))
    # feasibility does not depend on what is allocated
    n.allocate(req(num_cpus=4))
    assert n.feasible(req(num_cpus=4)) and not n.can_fit(req(num_cpus=4))


def test_missing_resource_does_not_fit():
    n = node(cpus=4, gpus=0)
    assert not n.can_fit(req(resources={"foo": 1}))
    assert n.allocate(req(num_gpus=0.5)) is None


def test_release_cpus_and_reacquire_oversubscribe():
    n = node(cpus=2, gpus=1)
    blocked = n.allocate(req(num_cpus=2, num_gpus=1))
    assert n.available.is_empty()
    assert n.release_cpus(blocked) is True
    assert blocked.cpus_released
    assert n.release_cpus(blocked) is False  # idempotent
    assert n.available == RS({"CPU": 2})  # GPUs stay held
    assert not n.can_fit(req(num_cpus=0, num_gpus=0.5))
    child = n.allocate(req(num_cpus=1))
    assert child is not None
    # the blocked task resumes before the child finishes: CPU goes negative
    assert n.reacquire_cpus(blocked) is True
    assert n.reacquire_cpus(blocked) is False
    assert n.available_amount("CPU") == -1.0
    assert "CPU" not in n.available
    assert not n.can_fit(req(num_cpus=0.0001))
    assert n.can_fit(RS())  # needs no CPU
    n.release(child)
    assert n.available_amount("CPU") == 0.0
    assert not n.can_fit(req(num_cpus=1))
    n.release(blocked)
    assert n.available == n.total


def test_a_blocked_task_lends_back_its_bundles_cpus_too():
    n = node(cpus=2, gpus=0)
    group = {"CPU_group_0_" + "ab" * 14: 1.0, "CPU_group_" + "ab" * 14: 1.0}
    n.add_resources(RS(dict(group, disk=1)))
    task = n.allocate(RS(dict(group, disk=1)))
    assert task is not None and not n.can_fit(RS(group))
    assert n.release_cpus(task)
    assert n.can_fit(RS(group))  # a child can run in the same bundle
    assert n.available_amount("disk") == 0  # other resources stay held
    assert n.reacquire_cpus(task)
    assert not n.can_fit(RS(group))
    n.release_cpus(task)
    n.remove_resources(list(group))  # the group is removed while the task is blocked
    n.reacquire_cpus(task)
    assert not any(name.startswith("CPU_group_") for name in n.available)
    assert all(n.available_amount(name) == 0 for name in group)
    n.release(task)
    assert n.available == n.total == RS({"CPU": 2, "disk": 1})


def test_release_while_cpus_lent_does_not_double_count():
    n = node(cpus=2, gpus=0)
    a = n.allocate(req(num_cpus=2))
    n.release_cpus(a)
    n.release(a)
    assert n.available == RS({"CPU": 2})
    assert not a.cpus_released


def test_release_cpus_without_cpus():
    n = node(cpus=2, gpus=1)
    a = n.allocate(req(num_cpus=0, num_gpus=1))
    assert n.release_cpus(a) is True
    assert n.available == RS({"CPU": 2})
    assert n.reacquire_cpus(a) is True
    assert n.available == RS({"CPU": 2})


def test_bad_release():
    n1, n2 = node(), node()
    a = n1.allocate(req())
    with pytest.raises(ValueError, match="not allocated by this node"):
        n2.release(a)
    with pytest.raises(ValueError, match="not allocated by this node"):
        n2.release_cpus(a)
    n1.release(a)
    with pytest.raises(ValueError, match="already released"):
        n1.release(a)
    with pytest.raises(ValueError, match="already released"):
        n1.release_cpus(a)
    with pytest.raises(ValueError, match="already released"):
        n1.reacquire_cpus(a)
    assert n1.available == n1.total


def test_node_construction_errors():
    with pytest.raises(ValueError, match="whole"):
        NodeResources(RS({"GPU": 1.5}))
    with pytest.raises(ValueError, match="2 GPUs"):
        NodeResources(RS({"GPU": 2}), gpu_ids=[0])
    with pytest.raises(ValueError, match="duplicates"):
        NodeResources(RS({"GPU": 2}), gpu_ids=[1, 1])
    n = NodeResources({"CPU": 1})  # a plain mapping is accepted
    assert n.total == RS({"CPU": 1}) and n.gpu_ids == []


def test_reprs():
    n = node(cpus=1, gpus=1)
    a = n.allocate(req(num_gpus=0.5))
    assert repr(a) == "Allocation({CPU: 1, GPU: 0.5}, gpu_ids=[0])"
    n.release_cpus(a)
    assert "cpus-released" in repr(a)
    n.reacquire_cpus(a)
    n.allocate(RS())
    assert repr(n) == "NodeResources(total={CPU: 1, GPU: 1}, available={GPU: 0.5})"
    b = n.allocate(RS())
    n.release_cpus(a)
    n.allocate(req())
    n.reacquire_cpus(a)
    assert "CPU: -1" in repr(n)
    n.release(b)
    assert "released" in repr(b)


def test_many_allocations_return_to_total():
    n = node(cpus=3, gpus=2, foo=2)
    shapes = [
        req(num_cpus=0.1),
        req(num_cpus=0.2, num_gpus=0.3),
        req(num_cpus=0.3, num_gpus=0.7, resources={"foo": 0.1}),
        req(num_cpus=0.25, resources={"foo": 0.7}),
    ]
    allocs = []
    while True:
        progressed = False
        for s in shapes:
            a = n.allocate(s)
            if a is not None:
                allocs.append(a)
                progressed = True
        if not progressed:
            break
    assert n.available_amount("CPU") >= 0
    for a in reversed(allocs):
        n.release(a)
    assert n.available == n.total
    assert n.gpu_free() == {0: 1.0, 1: 1.0}
