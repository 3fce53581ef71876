"""A driver whose node daemon dies (SIGKILL) fails fast with LocalRayletDiedError instead of
hanging: pending gets, waits, actor calls and queued tasks fail within seconds, later API calls
raise at once, and shutdown() + init() start over on a fresh node.

Covers a node started by ``init()`` and a ``quanta start --head`` node the driver connected to
(run as a separate driver process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import quanta
from quanta._private import api, cluster
from quanta.exceptions import LocalRayletDiedError
from test_cli import shell  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)


def test_init_node_killed(start_quanta, helpers):
    start_quanta(num_cpus=2)

    @quanta.remote
    def one(x):
        return x

    @quanta.remote
    def slow():
        time.sleep(120)

    @quanta.remote
    class Sleeper:
        def ping(self):
            return "pong"

        def nap(self):
            time.sleep(120)

    actor = Sleeper.remote()
    assert quanta.get(actor.ping.remote()) == "pong"
    assert quanta.get(one.remote(1)) == 1
    local = quanta.put(7)  # in the driver's own memory store: still readable afterwards
    running = slow.remote()
    queued = [slow.remote() for _ in range(3)]  # more than the CPUs: lease requests pending
    call = actor.nap.remote()
    time.sleep(0.5)

    session = api._session
    daemon_pid = session.proc.pid
    session_dir = session.node["SessionDir"]
    family = helpers.descendants(daemon_pid)
    assert family  # its zygote and workers

    errors: dict[str, BaseException] = {}

    def pending(name, fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors[name] = e

    threads = [
        threading.Thread(target=pending, args=("get_timeout",
                                               lambda: quanta.get(queued[0], timeout=60))),
        threading.Thread(target=pending, args=("get_list", lambda: quanta.get(queued[1:]))),
        threading.Thread(target=pending, args=("wait", lambda: quanta.wait([queued[2]]))),
        threading.Thread(target=pending, args=("actor_call", lambda: quanta.get(call))),
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)

    os.kill(daemon_pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(LocalRayletDiedError) as info:
        quanta.get(running)
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert f"pid {daemon_pid}" in message and "died" in message, message
    assert "init()" in message and session_dir in message, message
    for t in threads:
        t.join(15)
        assert not t.is_alive()
    assert {k: type(v) for k, v in errors.items()} == dict.fromkeys(
        ["get_timeout", "get_list", "wait", "actor_call"], LocalRayletDiedError)

    # Later calls raise at once.
    for fn in (lambda: one.remote(2), lambda: quanta.put(1), lambda: quanta.get(running),
               lambda: quanta.wait([running], timeout=5), lambda: Sleeper.remote(),
               lambda: actor.ping.remote(), quanta.cluster_resources):
        start = time.monotonic()
        with pytest.raises(LocalRayletDiedError):
            fn()
        assert time.monotonic() - start < 2
    assert quanta.get(local) == 7

    # The daemon's processes die with it.
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in family), 10)

    start = time.monotonic()
    quanta.shutdown()
    assert time.monotonic() - start < 10
    assert not os.path.exists(session_dir)

    start_quanta(num_cpus=1)  # a fresh node
    assert api._session.proc.pid != daemon_pid
    assert quanta.get(one.remote(3)) == 3


_HEAD_DRIVER = textwrap.dedent("""
    import json, sys, time
    import quanta
    from quanta.exceptions import LocalRayletDiedError

    quanta.init(address=sys.argv[1])

    @quanta.remote
    def one():
        return 1

    @quanta.remote
    def slow():
        time.sleep(120)

    assert quanta.get(one.remote()) == 1
    ref = slow.remote()
    print("ready", flush=True)
    out = {}
    start = time.monotonic()
    try:
        quanta.get(ref)
        out["get"] = "returned"
    except LocalRayletDiedError as e:
        out["get"] = str(e)
    out["get_s"] = time.monotonic() - start
    start = time.monotonic()
    try:
        one.remote()
        out["remote"] = "no error"
    except LocalRayletDiedError:
        out["remote"] = "raised"
    out["remote_s"] = time.monotonic() - start
    start = time.monotonic()
    quanta.shutdown()
    out["shutdown_s"] = time.monotonic() - start
    quanta.init(num_cpus=1)  # a fresh node of its own
    out["again"] = quanta.get(one.remote())
    quanta.shutdown()
    print(json.dumps(out), flush=True)
""")


def test_head_node_killed(shell, helpers):  # noqa: F811 - the fixture
    rec = shell.start()
    proc = subprocess.Popen([sys.executable, "-c", _HEAD_DRIVER, rec["address"]],
                            env=shell.env, cwd=shell.tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.poll())
        time.sleep(0.3)
        os.kill(rec["pid"], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["get_s"] < 15, out
    log = os.path.join(rec["session_dir"], "logs", "daemon.log")
    assert f"pid {rec['pid']}" in out["get"] and log in out["get"], out
    assert out["remote"] == "raised" and out["remote_s"] < 2, out
    assert out["shutdown_s"] < 10, out
    assert out["again"] == 1
    # The killed node's zygote and workers die with it (the fixture checks nothing is left).
    assert helpers.wait_until(lambda: not cluster.session_pids(rec["session_dir"]), 10)
