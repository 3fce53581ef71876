"""Actor lifetimes: an actor lives while its owner does and some handle to it exists (or until
killed when detached); what it held goes back to the node when it dies."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import quanta as ray
from quanta import exceptions as qexc

pytestmark = pytest.mark.timeout(60)


@ray.remote
class Worker:
    def __init__(self, value=0):
        self.value = value

    def pid(self):
        return os.getpid()

    def get(self):
        return self.value

    def set(self, v):
        self.value = v
        return v

    def slow(self, seconds, tag):
        time.sleep(seconds)
        return tag


@ray.remote
class Parent:
    """Creates a child actor and keeps it."""

    def __init__(self, depth=1):
        self.child = Parent.remote(depth - 1) if depth > 1 else Worker.remote()

    def pid(self):
        return os.getpid()

    def pids(self):
        below = ray.get(self.child.pids.remote()) if hasattr(self.child, "pids") else [
            ray.get(self.child.pid.remote())]
        return [os.getpid(), *below]

    def child_handle(self):
        return self.child


def _gone(helpers, pid, timeout=15):
    return helpers.wait_until(lambda: not helpers.pid_alive(pid), timeout)


def _full_cpus(helpers, n=2.0, timeout=15):
    return helpers.wait_until(lambda: ray.available_resources().get("CPU") == n, timeout)


# --------------------------------------------------------------------------------------
# handle-scoped lifetime
# --------------------------------------------------------------------------------------
def test_last_handle_gone_kills_actor(quanta_node, helpers):
    w = Worker.options(num_cpus=1).remote()
    pid = ray.get(w.pid.remote())
    assert ray.available_resources().get("CPU") == 1.0
    del w
    gc.collect()
    assert _gone(helpers, pid), "the actor's process outlived its last handle"
    assert _full_cpus(helpers)


def test_handle_gc_death_reason(quanta_node, helpers):
    # the death is seen by whoever still asks: here, an uncounted handle made from its id
    w = Worker.remote()
    pid = ray.get(w.pid.remote())
    from quanta.actor import ActorHandle

    ghost = ActorHandle(w._quanta_actor_id, w._meta, None)  # holds no reference
    del w
    gc.collect()
    assert _gone(helpers, pid)
    with pytest.raises(qexc.ActorDiedError) as info:
        ray.get(ghost.pid.remote(), timeout=20)
    msg = str(info.value)
    assert "reference" in msg or "scope" in msg, msg


def test_pending_calls_finish_before_handle_gc_kill(quanta_node, helpers):
    w = Worker.remote()
    pid = ray.get(w.pid.remote())
    refs = [w.slow.remote(0.2, i) for i in range(4)]
    del w
    gc.collect()
    assert ray.get(refs, timeout=30) == [0, 1, 2, 3]
    del refs
    gc.collect()
    assert _gone(helpers, pid)


def test_pending_call_result_ref_alone_keeps_actor_until_done(quanta_node, helpers):
    # the handle goes right after submitting; the call's ref is all that remains
    ref = Worker.remote(5).get.remote()
    assert ray.get(ref, timeout=20) == 5


def test_actor_lives_while_a_copy_of_the_handle_exists(quanta_node, helpers):
    w = Worker.remote(1)
    pid = ray.get(w.pid.remote())
    copy = w
    del w
    gc.collect()
    time.sleep(0.3)
    assert helpers.pid_alive(pid)
    assert ray.get(copy.get.remote()) == 1
    del copy
    gc.collect()
    assert _gone(helpers, pid)


def test_task_borrowing_handle_keeps_actor_alive(quanta_node, tmp_path, helpers):
    @ray.remote
    def call_later(handles, go):
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        return ray.get(handles[0].get.remote())

    go = tmp_path / "go"
    w = Worker.remote(7)
    pid = ray.get(w.pid.remote())
    ref = call_later.remote([w], str(go))  # nested in a list: the task borrows the handle
    time.sleep(0.5)  # let the task start and hold its copy
    del w
    gc.collect()
    time.sleep(0.3)
    assert helpers.pid_alive(pid)
    go.touch()
    assert ray.get(ref, timeout=30) == 7
    del ref
    gc.collect()
    assert _gone(helpers, pid)


@ray.remote
class HandleHolder:
    def __init__(self, handle=None):
        self.handle = handle

    def take(self, handles):
        self.handle = handles[0]

    def read(self):
        return ray.get(self.handle.get.remote())

    def drop(self):
        self.handle = None
        gc.collect()


@pytest.mark.parametrize("via", ["method", "constructor"])
def test_actor_holding_handle_keeps_actor_alive(quanta_node, helpers, via):
    w = Worker.remote(3)
    pid = ray.get(w.pid.remote())
    if via == "constructor":
        holder = HandleHolder.remote(w)
    else:
        holder = HandleHolder.remote()
        ray.get(holder.take.remote([w]))
    del w
    gc.collect()
    time.sleep(0.3)
    assert helpers.pid_alive(pid)
    assert ray.get(holder.read.remote()) == 3
    ray.get(holder.drop.remote())
    assert _gone(helpers, pid), "the last borrowed handle went but the actor lives on"


def test_handle_inside_stored_object_keeps_actor_alive(quanta_node, helpers):
    w = Worker.remote(2)
    pid = ray.get(w.pid.remote())
    ref = ray.put([w])
    del w
    gc.collect()
    time.sleep(0.3)
    assert helpers.pid_alive(pid)
    h = ray.get(ref)[0]
    del ref
    gc.collect()
    time.sleep(0.3)
    assert ray.get(h.get.remote()) == 2
    del h
    gc.collect()
    assert _gone(helpers, pid)


def test_handle_returned_by_task(quanta_node, helpers):
    @ray.remote
    def make():
        return Worker.remote(11)  # owned by the task's worker, borrowed by the driver

    h = ray.get(make.remote())
    assert ray.get(h.get.remote(), timeout=20) == 11
    pid = ray.get(h.pid.remote())
    del h
    gc.collect()
    assert _gone(helpers, pid)


def test_handle_from_current_actor_keeps_actor_alive(quanta_node, helpers):
    @ray.remote
    class Selfie:
        def me(self):
            return ray.get_runtime_context().current_actor

        def pid(self):
            return os.getpid()

    s = Selfie.remote()
    pid = ray.get(s.pid.remote())
    me = ray.get(s.me.remote())
    del s
    gc.collect()
    time.sleep(0.5)
    assert helpers.pid_alive(pid)
    assert ray.get(me.pid.remote(), timeout=20) == pid
    del me
    gc.collect()
    assert _gone(helpers, pid)


def test_get_actor_handle_keeps_named_actor_alive(quanta_node, helpers):
    @ray.remote
    class Holder:
        def __init__(self, name):
            self.handle = ray.get_actor(name)

        def read(self):
            return ray.get(self.handle.get.remote())

    w = Worker.options(name="held-by-name").remote(9)
    pid = ray.get(w.pid.remote())
    holder = Holder.remote("held-by-name")
    assert ray.get(holder.read.remote()) == 9
    del w
    gc.collect()
    time.sleep(0.3)
    assert helpers.pid_alive(pid)
    assert ray.get(holder.read.remote()) == 9
    del holder
    gc.collect()
    assert _gone(helpers, pid)


def test_restartable_actor_is_not_restarted_after_handle_gc(quanta_node, helpers):
    w = Worker.options(max_restarts=-1).remote()
    pid = ray.get(w.pid.remote())
    actor_id = w._quanta_actor_id
    del w
    gc.collect()
    assert _gone(helpers, pid)
    time.sleep(0.5)
    from quanta._private.worker_state import current_core_worker

    rec = [r for r in current_core_worker().call_daemon("list_actors")
           if r["actor_id"] == actor_id][0]
    assert rec["state"] == "DEAD" and rec["num_restarts"] == 0, rec


def test_restartable_child_dies_with_its_owner(quanta_node, helpers):
    @ray.remote
    class Owner:
        def __init__(self):
            self.child = Worker.options(max_restarts=-1).remote()

        def child_handle(self):
            return self.child

    owner = Owner.remote()
    child = ray.get(owner.child_handle.remote())
    pid = ray.get(child.pid.remote())
    ray.kill(owner)
    assert _gone(helpers, pid)
    with pytest.raises(qexc.ActorDiedError, match="owner"):
        ray.get(child.pid.options(max_task_retries=-1).remote(), timeout=20)


def test_named_actor_dies_with_last_handle_and_frees_name(quanta_node, helpers):
    w = Worker.options(name="short-lived").remote()
    pid = ray.get(w.pid.remote())
    del w
    gc.collect()
    assert _gone(helpers, pid)
    assert helpers.wait_until(lambda: _lookup_fails("short-lived"), 10)
    again = Worker.options(name="short-lived").remote(2)
    assert ray.get(again.get.remote()) == 2


def _lookup_fails(name, namespace=None):
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return True
    return False


def test_handle_dropped_while_waiting_for_resources(quanta_node, helpers):
    big = Worker.options(num_cpus=2).remote()
    pid = ray.get(big.pid.remote())
    waiting = Worker.options(num_cpus=2).remote()
    waiting.get.remote()  # its ref is dropped at once
    del waiting
    gc.collect()
    ray.kill(big)
    assert _gone(helpers, pid)
    assert _full_cpus(helpers)
    time.sleep(0.5)
    # the dropped actor never took the CPUs
    assert ray.available_resources().get("CPU") == 2.0


# --------------------------------------------------------------------------------------
# owner-scoped lifetime
# --------------------------------------------------------------------------------------
def test_actor_created_in_task_dies_when_task_ends(quanta_node, helpers):
    @ray.remote
    def make_actor():
        w = Worker.remote()
        return ray.get(w.pid.remote())  # the handle is stored nowhere

    pid = ray.get(make_actor.remote())
    assert _gone(helpers, pid)


def test_actor_created_by_child_actor_dies_with_it(quanta_node, helpers):
    p = Parent.remote()
    parent_pid = ray.get(p.pid.remote())
    child = ray.get(p.child_handle.remote())  # the driver borrows the child's handle
    child_pid = ray.get(child.pid.remote())
    ray.kill(p)
    assert _gone(helpers, parent_pid)
    assert _gone(helpers, child_pid), "the child outlived its owner"
    with pytest.raises(qexc.ActorDiedError, match="owner") as info:
        ray.get(child.get.remote(), timeout=20)
    assert isinstance(info.value, qexc.RayActorError)


def test_tree_of_actors_dies_with_its_root(quanta_node, helpers):
    root = Parent.options(num_cpus=0).remote(3)
    pids = ray.get(root.pids.remote(), timeout=30)
    assert len(set(pids)) == 4  # root, two parents below it, one worker
    ray.kill(root)
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in pids), 20), \
        [p for p in pids if helpers.pid_alive(p)]


def test_tree_dies_when_root_handle_is_dropped(quanta_node, helpers):
    root = Parent.remote(2)
    pids = ray.get(root.pids.remote(), timeout=30)
    del root
    gc.collect()
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in pids), 20)


_OWNER_DRIVER = textwrap.dedent("""
    import os, sys, time
    import quanta as ray

    ray.init(address=sys.argv[1], namespace=sys.argv[2])

    @ray.remote
    class Owned:
        def pid(self):
            return os.getpid()

    detached = sys.argv[3] == "detached"
    opts = {"name": "owned", "lifetime": "detached"} if detached else {"name": "owned"}
    a = Owned.options(**opts).remote()
    print(ray.get(a.pid.remote()), flush=True)
    if not detached:
        sys.stdin.readline()  # stay alive until the test says so
""")


def _owner_driver(address, namespace, mode):
    return subprocess.Popen(
        [sys.executable, "-c", _OWNER_DRIVER, address, namespace, mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_actor_dies_when_its_driver_exits(quanta_node, helpers):
    address = ray.get_runtime_context().gcs_address
    proc = _owner_driver(address, "owner-ns", "owned")
    try:
        line = proc.stdout.readline()
        assert line.strip(), proc.stderr.read()
        pid = int(line)
        handle = ray.get_actor("owned", namespace="owner-ns")
        assert ray.get(handle.pid.remote()) == pid
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _gone(helpers, pid), "the actor outlived the driver that owned it"
    with pytest.raises(qexc.ActorDiedError, match="owner"):
        ray.get(handle.pid.remote(), timeout=20)
    assert helpers.wait_until(lambda: _lookup_fails("owned", "owner-ns"), 10)


# --------------------------------------------------------------------------------------
# detached actors
# --------------------------------------------------------------------------------------
def test_detached_actor_outlives_its_handle(quanta_node, helpers):
    w = Worker.options(name="det", lifetime="detached").remote(4)
    pid = ray.get(w.pid.remote())
    del w
    gc.collect()
    time.sleep(0.5)
    assert helpers.pid_alive(pid)
    h = ray.get_actor("det")
    assert ray.get(h.get.remote()) == 4
    ray.kill(h)
    assert _gone(helpers, pid)
    assert _lookup_fails("det")


def test_detached_actor_outlives_creating_task(quanta_node, helpers):
    @ray.remote
    def create():
        w = Worker.options(name="made-in-task", lifetime="detached").remote(8)
        return ray.get(w.pid.remote())

    pid = ray.get(create.remote())
    time.sleep(0.5)
    assert helpers.pid_alive(pid)
    h = ray.get_actor("made-in-task")
    assert ray.get(h.get.remote()) == 8
    ray.kill(h)
    assert _gone(helpers, pid)


def test_detached_actor_outlives_creating_actor(quanta_node, helpers):
    @ray.remote
    class Creator:
        def create(self):
            w = Worker.options(name="made-in-actor", lifetime="detached").remote(6)
            return ray.get(w.pid.remote())

    c = Creator.remote()
    pid = ray.get(c.create.remote())
    ray.kill(c)
    time.sleep(0.5)
    assert helpers.pid_alive(pid)
    h = ray.get_actor("made-in-actor")
    assert ray.get(h.get.remote()) == 6
    ray.kill(h)
    assert _gone(helpers, pid)


def test_detached_actor_outlives_its_driver(quanta_node, helpers):
    address = ray.get_runtime_context().gcs_address
    proc = _owner_driver(address, "det-ns", "detached")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    pid = int(out.strip().splitlines()[-1])
    time.sleep(0.3)
    assert helpers.pid_alive(pid)
    assert _lookup_fails("owned")  # another namespace
    h = ray.get_actor("owned", namespace="det-ns")
    assert ray.get(h.pid.remote()) == pid
    ray.kill(h)
    assert _gone(helpers, pid)
    with pytest.raises(qexc.ActorDiedError, match="kill"):
        ray.get(h.pid.remote(), timeout=20)


# A detached actor made by one driver of a `quanta start --head` cluster, used and killed by
# another driver after the first exited.
_HEAD_DRIVER = textwrap.dedent("""
    import json, os, sys
    import quanta as ray

    ray.init(address="auto", namespace="shared")

    @ray.remote
    class Store:
        def __init__(self):
            self.items = []

        def add(self, x):
            self.items.append(x)
            return list(self.items)

        def pid(self):
            return os.getpid()

    if sys.argv[1] == "create":
        s = Store.options(name="store", lifetime="detached").remote()
        print(json.dumps({"items": ray.get(s.add.remote("first")),
                          "pid": ray.get(s.pid.remote())}))
    else:
        s = ray.get_actor("store")
        out = {"items": ray.get(s.add.remote("second")), "pid": ray.get(s.pid.remote())}
        ray.kill(s)
        print(json.dumps(out))
""")


@pytest.fixture
def head_cluster():
    tmp = tempfile.mkdtemp(prefix="qact-", dir="/tmp")
    env = dict(os.environ, TMPDIR=tmp, PYTHONUNBUFFERED="1")
    env.pop("QUANTA_ADDRESS", None)
    env.pop("RAY_ADDRESS", None)

    def run(*args, timeout=60):
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=tmp)

    res = run(sys.executable, "-m", "quanta.cli", "start", "--head", "--num-cpus", "2", "--port", "0")
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"quanta start --head failed: {res.stdout}{res.stderr}")
    with open(os.path.join(tmp, "quanta", "current_cluster")) as f:
        record = json.load(f)
    try:
        yield run, record
    finally:
        from quanta._private import cluster

        run(sys.executable, "-m", "quanta.cli", "stop", "--force", timeout=30)
        for pid in cluster.session_pids(record["session_dir"]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(record.get("object_store_dir") or "/nonexistent", ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(90)
def test_detached_actor_across_drivers_of_head_node(head_cluster, helpers):
    run, record = head_cluster
    first = run(sys.executable, "-c", _HEAD_DRIVER, "create")
    assert first.returncode == 0, first.stdout + first.stderr
    one = json.loads(first.stdout.strip().splitlines()[-1])
    assert one["items"] == ["first"]
    assert helpers.pid_alive(one["pid"])
    second = run(sys.executable, "-c", _HEAD_DRIVER, "use")
    assert second.returncode == 0, second.stdout + second.stderr
    two = json.loads(second.stdout.strip().splitlines()[-1])
    assert two == {"items": ["first", "second"], "pid": one["pid"]}
    assert _gone(helpers, one["pid"])


# --------------------------------------------------------------------------------------
# resources come back when an actor dies, however it dies
# --------------------------------------------------------------------------------------
@ray.remote
class Holder:
    def __init__(self, fail=False):
        if fail:
            raise RuntimeError("constructor failed on purpose")

    def pid(self):
        return os.getpid()

    def gpus(self):
        return ray.get_gpu_ids()

    def quit(self):
        ray.actor.exit_actor()


_FULL = {"CPU": 2.0, "GPU": 2.0, "custom": 1.0}


def _available():
    av = ray.available_resources()
    return {k: av.get(k, 0.0) for k in _FULL}


@pytest.mark.parametrize("quanta_node", [{"num_gpus": 2, "resources": {"custom": 1}}],
                         indirect=True)
@pytest.mark.parametrize("death", ["kill", "exit_actor", "constructor", "handle_gc", "crash"])
def test_resources_released_on_death(quanta_node, helpers, death):
    opts = {"num_cpus": 1, "num_gpus": 1, "resources": {"custom": 1}}
    if death == "constructor":
        h = Holder.options(**opts).remote(fail=True)
        with pytest.raises(qexc.ActorDiedError, match="constructor failed on purpose"):
            ray.get(h.pid.remote(), timeout=20)
        assert helpers.wait_until(lambda: _available() == _FULL, 15), _available()
        return
    h = Holder.options(**opts).remote()
    pid = ray.get(h.pid.remote())
    assert len(ray.get(h.gpus.remote())) == 1
    assert _available() == {"CPU": 1.0, "GPU": 1.0, "custom": 0.0}
    if death == "kill":
        ray.kill(h)
    elif death == "exit_actor":
        with pytest.raises(qexc.ActorDiedError, match="exit_actor"):
            ray.get(h.quit.remote(), timeout=20)
    elif death == "handle_gc":
        del h
        gc.collect()
    elif death == "crash":
        os.kill(pid, signal.SIGKILL)
    assert _gone(helpers, pid)
    assert helpers.wait_until(lambda: _available() == _FULL, 15), _available()
    # and they can be used again
    again = Holder.options(**opts).remote()
    assert len(ray.get(again.gpus.remote(), timeout=20)) == 1


def test_kill_during_slow_constructor(quanta_node, helpers, tmp_path):
    @ray.remote(num_cpus=1)
    class SlowInit:
        def __init__(self, started):
            open(started, "w").close()
            time.sleep(30)

        def ping(self):
            return "pong"

    started = tmp_path / "started"
    s = SlowInit.remote(str(started))
    ref = s.ping.remote()
    assert helpers.wait_until(started.exists, 20)
    ray.kill(s)
    with pytest.raises(qexc.ActorDiedError, match="kill"):
        ray.get(ref, timeout=20)
    assert _full_cpus(helpers)


def test_constructor_ref_args_freed_after_construction(quanta_node, helpers):
    @ray.remote
    class Sized:
        def __init__(self, data):
            self.n = len(data)

        def size(self):
            return self.n

    ref = ray.put(b"x" * (4 << 20))
    s = Sized.remote(ref)
    assert ray.get(s.size.remote()) == 4 << 20
    del ref
    gc.collect()
    assert helpers.wait_until(lambda: helpers.store_stats()["num_objects"] == 0, 10), \
        helpers.store_stats()
