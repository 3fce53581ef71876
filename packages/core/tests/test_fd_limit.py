"""At the open-file limit a node stalls nothing: the daemon stops accepting while it has no
descriptor to spare (instead of spinning on a listener that stays readable), says so once,
serves the connections it has, and still cleans up when it stops."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

_DRIVER = textwrap.dedent("""
    import os, resource, sys, time
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    import quanta as ray
    from quanta._private import api

    info = ray.init(num_cpus=1)
    pid = api._session.proc.pid

    @ray.remote(num_cpus=0)
    class Actor:
        def ping(self):
            return os.getpid()

    actors = [Actor.remote() for _ in range(300)]   # more than the daemon has descriptors
    first = ray.get(actors[0].ping.remote(), timeout=60)
    deadline = time.monotonic() + 90
    while len(os.listdir(f"/proc/{pid}/fd")) < 250 and time.monotonic() < deadline:
        time.sleep(0.2)
    print("FDS", len(os.listdir(f"/proc/{pid}/fd")), flush=True)
    time.sleep(1)

    def cpu_seconds():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu_seconds()
    time.sleep(3)
    print("CPU", cpu_seconds() - before, flush=True)
    # the connections it has are served: actors made before the limit answer
    print("PING", ray.get([a.ping.remote() for a in actors[:20]], timeout=60) != [], flush=True)
    ray.shutdown()
    deadline = time.monotonic() + 15
    while (os.path.exists(info["SessionDir"]) or os.path.exists(info["ObjectStoreDir"])) \\
            and time.monotonic() < deadline:
        time.sleep(0.1)
    print("LEFT", os.path.exists(info["SessionDir"]), os.path.exists(info["ObjectStoreDir"]),
          flush=True)
""")


@pytest.mark.timeout(240)
def test_a_daemon_at_the_descriptor_limit_backs_off_serves_and_cleans_up():
    res = subprocess.run([sys.executable, "-c", _DRIVER], capture_output=True, text=True,
                         timeout=220, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert int(out["FDS"]) >= 250  # it did reach the limit
    assert float(out["CPU"]) < 0.5, "the daemon spins at the descriptor limit"
    assert out["PING"] == "True"
    assert out["LEFT"] == "False False", "shutdown at the limit left the session or the store"
    errors = [line for line in res.stderr.splitlines() if "cannot accept connections" in line]
    assert len(errors) == 1, res.stderr[-3000:]  # said once, not once per retry
    assert "RLIMIT_NOFILE" in errors[0] and "256" in errors[0]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]


def test_init_raises_the_soft_limit_to_the_hard_one_for_the_driver_and_its_daemon():
    script = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))
        import quanta as ray
        from quanta._private import api
        ray.init(num_cpus=1)
        with open(f"/proc/{api._session.proc.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        print("DRIVER", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print("DAEMON", line.split()[3])
        ray.shutdown()
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
    assert out == {"DRIVER": "4096", "DAEMON": "4096"}, res.stdout
