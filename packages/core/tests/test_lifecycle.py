"""Lifecycle: init, shutdown, and cleanup when the driver dies or just exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import quanta as ray
from quanta._private import api

pytestmark = pytest.mark.timeout(60)

# A driver that inits, runs tasks on both CPUs, prints what it started, then waits.
_DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import quanta as ray

    ray.init(num_cpus=2)

    @ray.remote
    def pid(delay):
        time.sleep(delay)
        return os.getpid()

    workers = sorted(set(ray.get([pid.remote(0.3) for _ in range(4)])))
    s = ray._private.api._session
    print(json.dumps({
        "daemon": s.proc.pid,
        "workers": workers,
        "store_dir": s.node["ObjectStoreDir"],
        "session_dir": s.node["SessionDir"],
        "put": ray.get(ray.put("ok")),
    }), flush=True)
    if sys.argv[1] == "wait":
        time.sleep(1000)
""")


def _run_driver(mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, mode], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert line, f"driver printed nothing (exit code {proc.poll()})"
    return proc, json.loads(line)


def _assert_all_gone(helpers, info, extra_pids=()):
    pids = [info["daemon"], *info["workers"], *extra_pids]
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in pids), 10), (
        f"still alive: {[p for p in pids if helpers.pid_alive(p)]}"
    )
    assert helpers.wait_until(lambda: not os.path.exists(info["store_dir"]), 10), (
        f"{info['store_dir']} remains"
    )
    assert helpers.wait_until(lambda: not os.path.exists(info["session_dir"]), 10), (
        f"{info['session_dir']} remains"
    )


def test_shutdown_stops_everything(start_quanta, helpers):
    info = start_quanta()

    @ray.remote
    def pid(delay):
        time.sleep(delay)
        return os.getpid()

    workers = set(ray.get([pid.remote(0.3) for _ in range(4)]))
    assert len(workers) == 2
    big = ray.put(b"x" * (2 * 1024 * 1024))  # something in /dev/shm
    assert len(ray.get(big)) == 2 * 1024 * 1024
    daemon = api._session.proc.pid
    family = helpers.descendants(daemon)
    store_dir, session_dir = info["ObjectStoreDir"], info["SessionDir"]
    assert store_dir.startswith("/dev/shm/") and os.listdir(store_dir)
    assert os.path.isdir(session_dir)
    assert workers <= family

    ray.shutdown()
    assert not ray.is_initialized()
    pids = {daemon, *workers, *family}
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in pids), 5), (
        f"still alive: {[p for p in pids if helpers.pid_alive(p)]}"
    )
    assert not os.path.exists(store_dir)
    assert not os.path.exists(session_dir)


def test_killed_driver_cleans_up(helpers):
    proc, info = _run_driver("wait")
    try:
        assert info["put"] == "ok"
        assert len(info["workers"]) == 2
        assert helpers.pid_alive(info["daemon"])
        assert os.path.isdir(info["store_dir"])
        family = helpers.descendants(info["daemon"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _assert_all_gone(helpers, info, family)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_exiting_driver_without_shutdown_cleans_up(helpers):
    proc, info = _run_driver("exit")
    family = helpers.descendants(info["daemon"])
    assert proc.wait(30) == 0
    _assert_all_gone(helpers, info, family)


def test_auto_init_on_first_remote(helpers):
    code = textwrap.dedent("""
        import json, quanta as ray
        assert not ray.is_initialized()

        @ray.remote
        def f():
            return 7

        value = ray.get(f.remote())
        s = ray._private.api._session
        print(json.dumps({"value": value, "init": ray.is_initialized(),
                          "daemon": s.proc.pid, "workers": [],
                          "store_dir": s.node["ObjectStoreDir"],
                          "session_dir": s.node["SessionDir"]}), flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["value"] == 7 and info["init"] is True
    _assert_all_gone(helpers, info)


def test_init_to_first_result(start_quanta):
    t0 = time.monotonic()
    start_quanta()

    @ray.remote
    def hello():
        return "hello"

    assert ray.get(hello.remote()) == "hello"
    assert time.monotonic() - t0 < 15


def test_default_num_cpus_is_affinity(start_quanta):
    start_quanta(num_cpus=None)
    expected = float(len(os.sched_getaffinity(0)))
    assert ray.cluster_resources()["CPU"] == expected
    assert ray.nodes()[0]["Resources"]["CPU"] == expected


def test_is_initialized(start_quanta):
    assert not ray.is_initialized()
    start_quanta()
    assert ray.is_initialized()
    ray.shutdown()
    assert not ray.is_initialized()


def test_store_dir_in_dev_shm_named_after_session(start_quanta):
    info = start_quanta()
    store = info["ObjectStoreDir"]
    assert os.path.dirname(store) == "/dev/shm"
    assert os.path.basename(store).startswith("quanta-")
    assert os.path.basename(info["SessionDir"]) in os.path.basename(store)
