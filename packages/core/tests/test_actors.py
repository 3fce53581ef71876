"""Actors: creation, method calls, options, handles passed around, trees of actors, call
order, ref arguments, names and namespaces, kill / exit_actor, resources."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------
# actor classes shared by the tests
# --------------------------------------------------------------------------------------
@ray.remote
class Counter:
    def __init__(self, start=0, *, step=1):
        self.value = start
        self.step = step

    def incr(self, by=None):
        self.value += self.step if by is None else by
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

    def fail(self, msg):
        raise ValueError(msg)


@ray.remote
class Recorder:
    """Appends what it is given; for checking the order calls run in."""

    def __init__(self):
        self.log = []

    def append(self, x):
        self.log.append(x)
        return len(self.log)

    def get_log(self):
        return list(self.log)

    def pid(self):
        return os.getpid()


@ray.remote
def wait_for_file_then(path, value):
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def _wait_file(helpers, path, what="the call never started"):
    assert helpers.wait_until(lambda: os.path.exists(path), 20), what


# --------------------------------------------------------------------------------------
# creation, methods, returns
# --------------------------------------------------------------------------------------
def test_basic_actor_keeps_state(quanta_node):
    c = Counter.remote()
    ref = c.incr.remote()
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == 1
    assert ray.get([c.incr.remote() for _ in range(10)]) == list(range(2, 12))
    assert ray.get(c.get.remote()) == 11


def test_constructor_args_and_kwargs(quanta_node):
    c = Counter.remote(10, step=5)
    assert ray.get(c.incr.remote()) == 15
    assert ray.get(c.incr.remote(by=100)) == 115
    assert ray.get(c.incr.remote(1)) == 116


def test_each_actor_has_its_own_state_and_process(quanta_node):
    a, b = Counter.remote(0), Counter.remote(100)
    ray.get([a.incr.remote(), a.incr.remote(), b.incr.remote()])
    assert ray.get([a.get.remote(), b.get.remote()]) == [2, 101]
    pa, pb = ray.get([a.pid.remote(), b.pid.remote()])
    assert pa != pb and pa != os.getpid()
    # an actor always runs in the same process
    assert ray.get([a.pid.remote() for _ in range(5)]) == [pa] * 5


def test_actor_class_and_methods_cannot_be_called_directly(quanta_node):
    with pytest.raises(TypeError, match=r"Counter\.remote"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match="remote"):
        c.incr()


def test_unknown_method_raises_attribute_error(quanta_node):
    c = Counter.remote()
    with pytest.raises(AttributeError, match="no_such_method"):
        c.no_such_method.remote()
    assert ray.get(c.incr.remote()) == 1


def test_method_exception_keeps_actor_alive(quanta_node):
    c = Counter.remote()
    ref = c.fail.remote("boom")
    with pytest.raises(qexc.RayTaskError) as info:
        ray.get(ref)
    assert isinstance(info.value, ValueError)
    assert "boom" in str(info.value)
    # the actor still works, with its state intact
    assert ray.get(c.incr.remote()) == 1


def test_options_on_actor_class(quanta_node):
    c = Counter.options(num_cpus=0, name="opt-counter").remote(7)
    assert ray.get(c.incr.remote()) == 8
    assert ray.get(ray.get_actor("opt-counter").get.remote()) == 8
    # options() does not change the class's defaults
    d = Counter.remote()
    assert ray.get(d.get.remote()) == 0


def test_remote_with_options_decorator(quanta_node):
    @ray.remote(num_cpus=0, max_concurrency=1)
    class Small:
        def ping(self):
            return "pong"

    s = Small.remote()
    assert ray.get(s.ping.remote()) == "pong"


class _PlainBase:
    def base_method(self):
        return "base"

    def overridden(self):
        return "base"


@ray.remote
class Featured(_PlainBase):
    def overridden(self):
        return "child"

    @staticmethod
    def static(x):
        return x + 1

    @classmethod
    def klass(cls):
        return cls.__name__

    def _underscore(self):
        return "underscore"

    def __call__(self, x):
        return x * 2


def test_inherited_static_underscore_and_call_methods(quanta_node):
    f = Featured.remote()
    assert ray.get(f.base_method.remote()) == "base"
    assert ray.get(f.overridden.remote()) == "child"
    assert ray.get(f.static.remote(1)) == 2
    assert ray.get(f._underscore.remote()) == "underscore"
    assert ray.get(f.__call__.remote(3)) == 6


def test_classmethod_as_actor_method(quanta_node):
    f = Featured.remote()
    assert ray.get(f.klass.remote()) == "Featured"


def test_ray_ready(quanta_node):
    c = Counter.remote(3)
    assert ray.get(c.__ray_ready__.remote(), timeout=30) is True


def test_method_num_returns(quanta_node):
    @ray.remote
    class Multi:
        @ray.method(num_returns=2)
        def two(self, x):
            return x, x + 1

        @ray.method(num_returns=3)
        def three(self):
            return "a", "b", "c"

        def pair(self):
            return 1, 2

        @ray.method(num_returns=0)
        def nothing(self):
            return None

    m = Multi.remote()
    r1, r2 = m.two.remote(10)
    assert isinstance(r1, ray.ObjectRef) and isinstance(r2, ray.ObjectRef)
    assert ray.get([r1, r2]) == [10, 11]
    assert ray.get(list(m.three.remote())) == ["a", "b", "c"]
    # num_returns on one call overrides the method's default
    a, b = m.pair.options(num_returns=2).remote()
    assert ray.get([a, b]) == [1, 2]
    assert ray.get(m.pair.remote()) == (1, 2)
    assert m.nothing.remote() is None
    # calls after a num_returns=0 call still run in order
    assert ray.get(m.pair.remote()) == (1, 2)


def test_wrong_number_of_returns_is_an_error(quanta_node):
    @ray.remote
    class Bad:
        @ray.method(num_returns=2)
        def one_value(self):
            return 1

        def ok(self):
            return "ok"

    b = Bad.remote()
    r1, r2 = b.one_value.remote()
    with pytest.raises(qexc.RayError):
        ray.get(r1)
    assert ray.get(b.ok.remote()) == "ok"


def test_handle_repr_eq_hash_and_actor_id(quanta_node):
    c = Counter.remote()
    assert "Counter" in repr(c)
    named = Counter.options(name="repr-me").remote()
    same = ray.get_actor("repr-me")
    assert same == named and hash(same) == hash(named)
    d = Counter.remote()
    assert c != d
    assert isinstance(c._actor_id.hex(), str) and c._actor_id != d._actor_id


def test_large_args_and_returns(quanta_node):
    @ray.remote
    class Echo:
        def echo(self, x):
            return x

    e = Echo.remote()
    big = b"x" * (5 << 20)
    assert ray.get(e.echo.remote(big)) == big
    ref = ray.put(big)
    assert ray.get(e.echo.remote(ref)) == big


# --------------------------------------------------------------------------------------
# ref arguments
# --------------------------------------------------------------------------------------
def test_top_level_ref_args_are_resolved(quanta_node):
    @ray.remote
    class Kinds:
        def __init__(self, x, y=None):
            self.init = (type(x).__name__, type(y).__name__, x + y)

        def init_kinds(self):
            return self.init

        def kinds(self, x, y=None):
            return type(x).__name__, type(y).__name__, x + y

    @ray.remote
    def add(a, b):
        return a + b

    k = Kinds.remote(ray.put(1), y=add.remote(2, 3))
    assert ray.get(k.init_kinds.remote()) == ("int", "int", 6)
    assert ray.get(k.kinds.remote(ray.put(10), y=add.remote(1, 1))) == ("int", "int", 12)


def test_nested_refs_stay_refs(quanta_node):
    @ray.remote
    class Nested:
        def __init__(self, lst):
            assert all(isinstance(r, ray.ObjectRef) for r in lst)
            self.init = ray.get(lst)

        def init_values(self):
            return self.init

        def inspect(self, lst, dct):
            assert all(isinstance(r, ray.ObjectRef) for r in lst)
            assert isinstance(dct["r"], ray.ObjectRef)
            return ray.get(lst), ray.get(dct["r"])

    n = Nested.remote([ray.put("a"), ray.put("b")])
    assert ray.get(n.init_values.remote()) == ["a", "b"]
    refs = [ray.put(i) for i in range(3)]
    assert ray.get(n.inspect.remote(refs, {"r": ray.put(5)})) == ([0, 1, 2], 5)


def test_method_can_return_refs(quanta_node):
    @ray.remote
    class Maker:
        def make(self, x):
            return ray.put(x * 2)

    m = Maker.remote()
    inner = ray.get(m.make.remote(21))
    assert isinstance(inner, ray.ObjectRef)
    assert ray.get(inner) == 42


def test_error_in_ref_argument_propagates(quanta_node):
    @ray.remote
    def boom():
        raise KeyError("bad input")

    c = Recorder.remote()
    with pytest.raises(KeyError):
        ray.get(c.append.remote(boom.remote()))
    # the failed call did not run, and later calls do
    assert ray.get(c.append.remote(1)) == 1
    assert ray.get(c.get_log.remote()) == [1]


def test_constructor_waits_for_ref_argument(quanta_node, tmp_path):
    go = tmp_path / "go"
    c = Counter.remote(wait_for_file_then.remote(str(go), 100))
    ref = c.incr.remote()
    ready, _ = ray.wait([ref], timeout=0.5)
    assert not ready  # the constructor's argument is not ready yet
    go.touch()
    assert ray.get(ref, timeout=30) == 101


# --------------------------------------------------------------------------------------
# call order
# --------------------------------------------------------------------------------------
def test_calls_run_in_submission_order(quanta_node):
    r = Recorder.remote()
    refs = [r.append.remote(i) for i in range(200)]
    assert ray.get(refs) == list(range(1, 201))
    assert ray.get(r.get_log.remote()) == list(range(200))


def test_order_kept_when_earlier_call_waits_for_its_argument(quanta_node, tmp_path):
    go = tmp_path / "go"
    r = Recorder.remote()
    ray.get(r.append.remote("start"))
    slow = wait_for_file_then.remote(str(go), "slow")
    refs = [r.append.remote(slow), r.append.remote("a"), r.append.remote(ray.put("b"))]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
    assert not ready  # "a" and "b" wait behind the call whose argument is not ready
    go.touch()
    assert ray.get(refs, timeout=30) == [2, 3, 4]
    assert ray.get(r.get_log.remote()) == ["start", "slow", "a", "b"]


def test_calls_from_a_task_run_in_its_submission_order(quanta_node):
    @ray.remote
    def caller(rec, tag, n):
        return ray.get([rec.append.remote((tag, i)) for i in range(n)])

    r = Recorder.remote()
    ray.get([caller.remote(r, "x", 50), caller.remote(r, "y", 50)])
    log = ray.get(r.get_log.remote())
    assert len(log) == 100
    for tag in ("x", "y"):
        assert [i for t, i in log if t == tag] == list(range(50))


def test_calls_from_driver_threads_keep_each_threads_order(quanta_node):
    import threading

    r = Recorder.remote()
    errors = []

    def caller(tag):
        try:
            ray.get([r.append.remote((tag, i)) for i in range(100)], timeout=40)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert not errors, errors
    log = ray.get(r.get_log.remote())
    assert len(log) == 400
    for tag in range(4):
        assert [i for t, i in log if t == tag] == list(range(100))


def test_actors_created_from_driver_threads(quanta_node):
    import threading

    handles = []
    lock = threading.Lock()

    def create():
        for i in range(10):
            h = Counter.options(num_cpus=0).remote(i)
            with lock:
                handles.append(h)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert len(handles) == 40
    assert len(set(ray.get([h.pid.remote() for h in handles], timeout=40))) == 40


# --------------------------------------------------------------------------------------
# handles passed around, trees of actors
# --------------------------------------------------------------------------------------
def test_handle_passed_to_task(quanta_node):
    @ray.remote
    def use(counter, n):
        return ray.get([counter.incr.remote() for _ in range(n)])[-1]

    c = Counter.remote()
    assert ray.get(use.remote(c, 5)) == 5
    ray.get([use.remote(c, 5) for _ in range(3)])
    assert ray.get(c.get.remote()) == 20


def test_handle_passed_to_another_actor(quanta_node):
    @ray.remote
    class User:
        def __init__(self, counter):
            self.counter = counter

        def bump(self, n):
            return ray.get([self.counter.incr.remote() for _ in range(n)])[-1]

        def bump_other(self, other):
            return ray.get(other.incr.remote(100))

    c = Counter.remote()
    u = User.remote(c)
    assert ray.get(u.bump.remote(3)) == 3
    assert ray.get(u.bump_other.remote(c)) == 103
    assert ray.get(c.get.remote()) == 103


def test_detached_handle_returned_from_task(quanta_node):
    @ray.remote
    def make_and_return():
        c = Counter.options(lifetime="detached", name="from-task").remote(5)
        return c

    c = ray.get(make_and_return.remote())
    assert ray.get(c.incr.remote()) == 6
    ray.kill(c)


def test_handle_through_object_store(quanta_node):
    c = Counter.remote(1)
    h = ray.get(ray.put(c))
    assert h == c
    assert ray.get(h.incr.remote()) == 2

    @ray.remote
    def from_store(refs):
        return ray.get(ray.get(refs[0]).incr.remote())

    assert ray.get(from_store.remote([ray.put(c)])) == 3


def test_handles_in_containers(quanta_node):
    cs = [Counter.remote(i) for i in range(3)]

    @ray.remote
    def total(handles):
        return sum(ray.get([h.get.remote() for h in handles["list"]]))

    assert ray.get(total.remote({"list": cs})) == 3


def test_actors_create_actors(quanta_node):
    @ray.remote(num_cpus=0)
    class Node:
        def __init__(self, depth, fanout):
            self.children = [Node.remote(depth - 1, fanout) for _ in range(fanout)] \
                if depth > 0 else []

        def count(self):
            return 1 + sum(ray.get([c.count.remote() for c in self.children]))

        def pids(self):
            mine = {os.getpid()}
            for s in ray.get([c.pids.remote() for c in self.children]):
                mine |= s
            return mine

    root = Node.remote(2, 3)
    assert ray.get(root.count.remote(), timeout=50) == 1 + 3 + 9
    assert len(ray.get(root.pids.remote())) == 13


def test_actor_calls_actor_it_created_and_returns_its_handle(quanta_node):
    @ray.remote
    class Parent:
        def __init__(self):
            self.child = Counter.remote(1000)

        def child_handle(self):
            return self.child

        def bump_child(self):
            return ray.get(self.child.incr.remote())

    p = Parent.remote()
    assert ray.get(p.bump_child.remote()) == 1001
    child = ray.get(p.child_handle.remote())
    assert ray.get(child.incr.remote()) == 1002


def test_actor_calls_itself_through_current_actor(quanta_node):
    @ray.remote
    class Selfish:
        def __init__(self):
            self.n = 0

        def schedule_bump(self):
            me = ray.get_runtime_context().current_actor
            me.bump.remote()  # runs after this call returns
            return "scheduled"

        def bump(self):
            self.n += 1

        def get(self):
            return self.n

    s = Selfish.remote()
    assert ray.get(s.schedule_bump.remote()) == "scheduled"
    # the self-call's return ref is dropped by the actor; poll its effect
    deadline = time.monotonic() + 20
    while ray.get(s.get.remote()) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.get(s.get.remote()) == 1


def test_runtime_context_inside_actor(quanta_node):
    @ray.remote
    class Ctx:
        def info(self):
            ctx = ray.get_runtime_context()
            return ctx.get_actor_id(), ctx.get_actor_name(), ctx.was_current_actor_reconstructed

    anon = Ctx.remote()
    actor_id, name, reconstructed = ray.get(anon.info.remote())
    assert actor_id == anon._actor_id.hex()
    assert name is None and reconstructed is False
    named = Ctx.options(name="ctx-actor").remote()
    assert ray.get(named.info.remote())[1] == "ctx-actor"
    assert ray.get_runtime_context().get_actor_id() is None  # the driver is no actor


# --------------------------------------------------------------------------------------
# names and namespaces
# --------------------------------------------------------------------------------------
def test_named_actor_get_actor(quanta_node):
    c = Counter.options(name="counter").remote()
    ray.get(c.incr.remote())
    same = ray.get_actor("counter")
    assert same == c
    assert ray.get(same.incr.remote()) == 2


def test_get_actor_from_task_and_actor(quanta_node):
    keep = Counter.options(name="shared").remote(0)  # noqa: F841 - named actors die with
    # their last handle, like any non-detached actor (Ray's documented behaviour)

    @ray.remote
    def bump_by_name():
        return ray.get(ray.get_actor("shared").incr.remote())

    @ray.remote
    class Bumper:
        def bump(self):
            return ray.get(ray.get_actor("shared").incr.remote())

    assert ray.get(bump_by_name.remote()) == 1
    assert ray.get(Bumper.remote().bump.remote()) == 2


def test_duplicate_name_raises(quanta_node):
    keep = Counter.options(name="dup").remote()  # noqa: F841
    with pytest.raises(ValueError, match="dup") as info:
        Counter.options(name="dup").remote()
    assert isinstance(info.value, qexc.ActorAlreadyExistsError)
    # a name is per namespace: the same name in another namespace is fine
    other = Counter.options(name="dup", namespace="elsewhere").remote(5)
    assert ray.get(other.get.remote()) == 5


def test_unknown_name_raises(quanta_node):
    with pytest.raises(ValueError, match="no-such-actor"):
        ray.get_actor("no-such-actor")
    with pytest.raises(ValueError, match="ns-x"):
        ray.get_actor("no-such-actor", namespace="ns-x")


def test_get_if_exists(quanta_node):
    a = Counter.options(name="gie", get_if_exists=True).remote(10)
    b = Counter.options(name="gie", get_if_exists=True).remote(99)
    assert a == b
    ray.get(a.incr.remote())
    assert ray.get(b.get.remote()) == 11  # b's constructor args were not used


def test_name_can_be_reused_after_kill(quanta_node):
    a = Counter.options(name="reuse").remote(1)
    assert ray.get(a.get.remote()) == 1
    ray.kill(a)
    with pytest.raises(ValueError, match="reuse"):
        ray.get_actor("reuse")
    b = Counter.options(name="reuse").remote(2)
    assert ray.get(ray.get_actor("reuse").get.remote()) == 2
    assert b != a


def test_namespace_option_and_get_actor_namespace(quanta_node):
    keep = Counter.options(name="n1", namespace="team-a").remote(1)  # noqa: F841
    with pytest.raises(ValueError, match="n1"):
        ray.get_actor("n1")  # not in this job's namespace
    h = ray.get_actor("n1", namespace="team-a")
    assert ray.get(h.get.remote()) == 1


def test_list_named_actors(quanta_node):
    from quanta.util import list_named_actors

    keep = [Counter.options(name="l1").remote(),  # noqa: F841
            Counter.options(name="l2", namespace="other-ns").remote()]
    assert set(list_named_actors()) >= {"l1"}
    assert "l2" not in list_named_actors()
    everywhere = list_named_actors(all_namespaces=True)
    assert {"name": "l2", "namespace": "other-ns"} in everywhere


@pytest.mark.parametrize("quanta_node", [{"namespace": "my-ns"}], indirect=True)
def test_init_namespace(quanta_node):
    assert ray.get_runtime_context().namespace == "my-ns"
    keep = Counter.options(name="in-my-ns").remote(3)  # noqa: F841
    assert ray.get(ray.get_actor("in-my-ns", namespace="my-ns").get.remote()) == 3

    @ray.remote
    def lookup():
        return ray.get(ray.get_actor("in-my-ns").get.remote())

    @ray.remote
    class Looker:
        def look(self):
            return ray.get(ray.get_actor("in-my-ns").get.remote())

    assert ray.get(lookup.remote()) == 3  # tasks and actors run in the job's namespace
    assert ray.get(Looker.remote().look.remote()) == 3


@pytest.mark.parametrize("quanta_node", [{"namespace": "my-ns"}], indirect=True)
def test_runtime_context_namespace_in_task(quanta_node):
    @ray.remote
    def namespace():
        return ray.get_runtime_context().namespace

    assert ray.get(namespace.remote()) == "my-ns"


def test_anonymous_namespace(quanta_node):
    ns = ray.get_runtime_context().namespace
    assert ns  # a generated, job-private namespace
    keep = Counter.options(name="anon").remote()  # noqa: F841
    assert ray.get_actor("anon", namespace=ns) is not None


_SECOND_DRIVER = textwrap.dedent("""
    import json, sys
    import quanta as ray

    address, namespace, name = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    ray.init(address=address, namespace=namespace)
    try:
        h = ray.get_actor(name)
        print(json.dumps({"found": True, "value": ray.get(h.get.remote(), timeout=20)}))
    except ValueError as e:
        print(json.dumps({"found": False, "error": str(e)}))
    ray.shutdown()
""")


def _second_driver(code, *args):
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    import json

    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("quanta_node", [{"namespace": "job-one"}], indirect=True)
def test_namespaces_isolate_drivers(quanta_node):
    keep = Counter.options(name="iso").remote(42)
    address = ray.get_runtime_context().gcs_address
    same = _second_driver(_SECOND_DRIVER, address, "job-one", "iso")
    assert same == {"found": True, "value": 42}
    other = _second_driver(_SECOND_DRIVER, address, "job-two", "iso")
    assert other["found"] is False and "iso" in other["error"]
    anonymous = _second_driver(_SECOND_DRIVER, address, "", "iso")
    assert anonymous["found"] is False
    # the actor is still alive and in use by this driver
    assert ray.get(ray.get_actor("iso").incr.remote()) == 43
    assert ray.get(keep.get.remote()) == 43


def test_anonymous_namespace_reachable_by_explicit_namespace(quanta_node):
    keep = Counter.options(name="visible").remote(7)  # noqa: F841
    ns = ray.get_runtime_context().namespace
    out = _second_driver(_SECOND_DRIVER, ray.get_runtime_context().gcs_address, ns, "visible")
    assert out == {"found": True, "value": 7}


# --------------------------------------------------------------------------------------
# kill, exit_actor, constructor errors
# --------------------------------------------------------------------------------------
def test_kill_fails_pending_and_later_calls(quanta_node, tmp_path, helpers):
    @ray.remote
    class Blocker:
        def block(self, started, go):
            open(started, "w").close()
            while not os.path.exists(go):
                time.sleep(0.01)
            return "done"

        def quick(self):
            return "quick"

        def pid(self):
            return os.getpid()

    b = Blocker.remote()
    pid = ray.get(b.pid.remote())
    started = str(tmp_path / "started")
    running = b.block.remote(started, str(tmp_path / "never"))
    queued = [b.quick.remote() for _ in range(3)]
    _wait_file(helpers, started)
    ray.kill(b)
    for ref in [running, *queued, b.quick.remote()]:
        with pytest.raises(qexc.ActorDiedError, match="kill") as info:
            ray.get(ref, timeout=20)
        assert isinstance(info.value, qexc.RayActorError)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)


def test_kill_twice_and_kill_non_actor(quanta_node):
    c = Counter.remote()
    ray.get(c.get.remote())
    ray.kill(c)
    ray.kill(c)  # killing a dead actor is fine
    with pytest.raises(ValueError, match="actor"):
        ray.kill(ray.put(1))
    with pytest.raises(qexc.ActorDiedError):
        ray.get(c.get.remote(), timeout=20)


def test_kill_from_another_task(quanta_node):
    @ray.remote
    def killer(handle):
        ray.kill(handle)
        return "killed"

    c = Counter.remote()
    ray.get(c.get.remote())
    assert ray.get(killer.remote(c)) == "killed"
    with pytest.raises(qexc.ActorDiedError, match="kill"):
        ray.get(c.get.remote(), timeout=20)


@ray.remote
class Quitter:
    def pid(self):
        return os.getpid()

    def quit(self):
        ray.actor.exit_actor()
        return "not reached"

    def ping(self):
        return "pong"


@ray.remote
class AsyncQuitter:
    async def pid(self):
        return os.getpid()

    async def quit(self):
        ray.actor.exit_actor()
        return "not reached"

    async def ping(self):
        return "pong"


@pytest.mark.parametrize("kind", ["sync", "threaded", "async"])
def test_exit_actor(quanta_node, helpers, kind):
    if kind == "async":
        q = AsyncQuitter.remote()
    else:
        q = Quitter.options(max_concurrency=3 if kind == "threaded" else None).remote()
    pid = ray.get(q.pid.remote())
    quit_ref = q.quit.remote()
    after = [q.ping.remote() for _ in range(3)]
    # the exiting call itself raises too, as in Ray
    with pytest.raises(qexc.ActorDiedError, match="exit_actor"):
        ray.get(quit_ref, timeout=20)
    for ref in after:
        if kind == "threaded":  # may have run beside quit(), before the actor ended
            try:
                assert ray.get(ref, timeout=20) == "pong"
            except qexc.ActorDiedError as e:
                assert "exit_actor" in str(e)
        else:  # one at a time (sync), or started after quit() raised (async)
            with pytest.raises(qexc.ActorDiedError, match="exit_actor"):
                ray.get(ref, timeout=20)
    with pytest.raises(qexc.ActorDiedError, match="exit_actor"):
        ray.get(q.ping.remote(), timeout=20)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)


def test_actor_kills_itself(quanta_node, helpers):
    @ray.remote
    class Suicidal:
        def pid(self):
            return os.getpid()

        def die(self):
            ray.kill(ray.get_runtime_context().current_actor)
            time.sleep(10)
            return "not reached"

    s = Suicidal.remote()
    pid = ray.get(s.pid.remote())
    with pytest.raises(qexc.ActorDiedError, match="kill"):
        ray.get(s.die.remote(), timeout=20)
    assert helpers.wait_until(lambda: not helpers.pid_alive(pid), 10)


def test_exit_actor_outside_actor_raises(quanta_node):
    with pytest.raises(TypeError, match="actor"):
        ray.actor.exit_actor()

    @ray.remote
    def in_task():
        try:
            ray.actor.exit_actor()
        except TypeError as e:
            return str(e)
        return "no error"

    assert "actor" in ray.get(in_task.remote())


def test_constructor_error(quanta_node):
    @ray.remote
    class BadInit:
        def __init__(self, x):
            raise RuntimeError(f"constructor failed with {x}")

        def ping(self):
            return "pong"

    b = BadInit.remote(17)
    refs = [b.ping.remote() for _ in range(2)]
    for ref in refs:
        with pytest.raises(qexc.ActorDiedError, match="constructor failed with 17") as info:
            ray.get(ref, timeout=20)
        assert "creation" in str(info.value) or "constructor" in str(info.value)
    # a constructor error is no reason to keep retrying creation, even with max_restarts
    b2 = BadInit.options(max_restarts=3).remote(1)
    with pytest.raises(qexc.ActorDiedError):
        ray.get(b2.ping.remote(), timeout=20)


def test_constructor_ref_argument_error(quanta_node):
    @ray.remote
    def bad_input():
        raise KeyError("bad constructor input")

    c = Counter.remote(bad_input.remote())
    with pytest.raises(qexc.ActorDiedError, match="bad constructor input"):
        ray.get(c.get.remote(), timeout=20)


def test_constructor_error_on_named_actor_frees_name(quanta_node):
    @ray.remote
    class BadInit:
        def __init__(self):
            raise RuntimeError("no")

        def ping(self):
            return "pong"

    b = BadInit.options(name="bad").remote()
    with pytest.raises(qexc.ActorDiedError):
        ray.get(b.ping.remote(), timeout=20)
    good = Counter.options(name="bad").remote(1)
    assert ray.get(good.get.remote()) == 1


# --------------------------------------------------------------------------------------
# resources
# --------------------------------------------------------------------------------------
def test_default_actors_hold_no_cpu(quanta_node):
    actors = [Counter.remote(i) for i in range(10)]  # 2 CPUs, 10 default actors
    assert ray.get([a.incr.remote() for a in actors], timeout=40) == list(range(1, 11))
    assert ray.available_resources().get("CPU") == 2.0
    # tasks still get both CPUs while the actors live
    assert ray.get([wait_for_file_then.remote("/", i) for i in range(4)], timeout=20) == [0, 1, 2, 3]


def test_actor_with_num_cpus_holds_it(quanta_node, helpers):
    c = Counter.options(num_cpus=1).remote()
    ray.get(c.get.remote())
    assert ray.available_resources().get("CPU") == 1.0
    d = Counter.options(num_cpus=1).remote()
    ray.get(d.get.remote())
    assert ray.available_resources().get("CPU", 0.0) == 0.0
    ray.kill(c)
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 1.0, 10)
    ray.kill(d)
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 10)


def test_actor_waits_for_resources_held_by_another(quanta_node):
    big = Counter.options(num_cpus=2).remote(1)
    assert ray.get(big.get.remote()) == 1
    waiting = Counter.options(num_cpus=2).remote(2)
    ref = waiting.get.remote()
    ready, _ = ray.wait([ref], timeout=1.0)
    assert not ready  # no CPU left for it yet
    ray.kill(big)
    assert ray.get(ref, timeout=30) == 2


def test_num_cpus_in_class_decorator(quanta_node):
    @ray.remote(num_cpus=1)
    class OneCpu:
        def resources(self):
            return ray.get_runtime_context().get_assigned_resources()

    a = OneCpu.remote()
    ray.get(a.resources.remote())
    assert ray.available_resources().get("CPU") == 1.0


def test_default_actor_needs_a_free_cpu_to_start(quanta_node, tmp_path, helpers):
    go = tmp_path / "go"
    busy = [wait_for_file_then.remote(str(go), i) for i in range(2)]  # both CPUs
    time.sleep(0.3)
    default = Counter.remote(1)
    ref = default.get.remote()
    # an actor with num_cpus=0 needs no CPU at all, even to start
    free = Counter.options(num_cpus=0).remote(2)
    assert ray.get(free.get.remote(), timeout=20) == 2
    assert not ray.wait([ref], timeout=0.5)[0]
    go.touch()
    assert ray.get(ref, timeout=20) == 1
    assert ray.get(busy) == [0, 1]
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 10)


def test_kill_actor_waiting_for_resources(quanta_node, helpers):
    big = Counter.options(num_cpus=2).remote()
    ray.get(big.get.remote())
    waiting = Counter.options(num_cpus=2).remote()
    ref = waiting.get.remote()
    ray.kill(waiting)
    with pytest.raises(qexc.ActorDiedError, match="kill"):
        ray.get(ref, timeout=20)
    ray.kill(big)
    assert helpers.wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 10)
    time.sleep(0.3)
    assert ray.available_resources().get("CPU") == 2.0  # the killed one never took them


def test_get_actor_while_waiting_for_resources(quanta_node):
    big = Counter.options(num_cpus=2).remote()
    ray.get(big.get.remote())
    pending = Counter.options(num_cpus=2, name="pending").remote(5)  # noqa: F841
    h = ray.get_actor("pending")
    ref = h.get.remote()
    assert not ray.wait([ref], timeout=0.5)[0]
    ray.kill(big)
    assert ray.get(ref, timeout=20) == 5


@pytest.mark.parametrize("quanta_node", [{"num_gpus": 2}], indirect=True)
def test_gpu_actors(quanta_node, helpers):
    @ray.remote(num_gpus=1)
    class GpuActor:
        def ids(self):
            return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    a, b = GpuActor.remote(), GpuActor.remote()
    (ia, ea), (ib, eb) = ray.get([a.ids.remote(), b.ids.remote()])
    assert len(ia) == 1 and len(ib) == 1 and set(ia) | set(ib) == {0, 1}
    assert ea == str(ia[0]) and eb == str(ib[0])
    assert ray.available_resources().get("GPU", 0.0) == 0.0
    c = GpuActor.remote()
    ref = c.ids.remote()
    assert not ray.wait([ref], timeout=1.0)[0]  # no GPU free
    ray.kill(a)
    ic, _ = ray.get(ref, timeout=30)
    assert ic == ia  # it got the GPU a gave back
    ray.kill(b)
    ray.kill(c)
    assert helpers.wait_until(lambda: ray.available_resources().get("GPU") == 2.0, 10)


@pytest.mark.parametrize("quanta_node", [{"resources": {"slot": 2}}], indirect=True)
def test_custom_resource_actors(quanta_node, helpers):
    a = Counter.options(resources={"slot": 1}).remote(1)
    b = Counter.options(resources={"slot": 1}).remote(2)
    assert ray.get([a.get.remote(), b.get.remote()]) == [1, 2]
    assert ray.available_resources().get("slot", 0.0) == 0.0
    c = Counter.options(resources={"slot": 1}).remote(3)
    ref = c.get.remote()
    assert not ray.wait([ref], timeout=1.0)[0]
    ray.kill(b)
    assert ray.get(ref, timeout=30) == 3
    ray.kill(a)
    ray.kill(c)
    assert helpers.wait_until(lambda: ray.available_resources().get("slot") == 2.0, 10)


@pytest.mark.parametrize("request_", [
    {"num_cpus": 3},
    {"num_gpus": 1},
    {"resources": {"nonexistent": 1}},
])
def test_infeasible_actor_fails_fast(quanta_node, request_):
    a = Counter.options(**request_).remote()
    t0 = time.monotonic()
    with pytest.raises(qexc.RayError) as info:
        ray.get(a.get.remote(), timeout=20)
    assert time.monotonic() - t0 < 10
    key = next(iter(request_["resources"])) if "resources" in request_ else (
        "CPU" if "num_cpus" in request_ else "GPU")
    assert key in str(info.value)
    # the node is still fine
    assert ray.get(Counter.remote(1).get.remote()) == 1


def test_max_pending_calls(quanta_node, tmp_path):
    go = tmp_path / "go"

    @ray.remote(max_pending_calls=2)
    class Limited:
        def wait(self, go):
            deadline = time.monotonic() + 30
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.01)
            return "done"

    lim = Limited.remote()
    refs = [lim.wait.remote(str(go)) for _ in range(2)]
    with pytest.raises(qexc.PendingCallsLimitExceeded, match="max_pending_calls"):
        lim.wait.remote(str(go))
    go.touch()
    assert ray.get(refs, timeout=20) == ["done", "done"]
    # the limit counts pending calls only: more can be made now
    assert ray.get([lim.wait.remote(str(go)) for _ in range(2)]) == ["done", "done"]


# --------------------------------------------------------------------------------------
# loose sanity bounds
# --------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_many_zero_cpu_actors(quanta_node, helpers):
    t0 = time.monotonic()
    actors = [Counter.options(num_cpus=0).remote(i) for i in range(100)]
    assert ray.get([a.get.remote() for a in actors], timeout=40) == list(range(100))
    assert time.monotonic() - t0 < 20
    pids = ray.get([a.pid.remote() for a in actors])
    assert len(set(pids)) == 100
    del actors
    import gc

    gc.collect()
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in pids), 20)


def test_many_calls_on_one_actor(quanta_node):
    c = Counter.remote()
    refs = [c.incr.remote() for _ in range(2000)]
    assert ray.get(refs, timeout=40)[-1] == 2000
